/**
 * Retention through every kind of store (a directory, SFTP, S3): cycles of simulate → copy with a
 * `retention` section, copy pruning at its end, while two replicas acknowledge at their
 * destinations. Files and bytes stay bounded; a replica that stops loading holds the outbox and its
 * destination, and pruning resumes once it catches up.
 *
 * Acknowledgements are written here as load publishes them (src/format/ack.ts): the test plays
 * each replica's load, so that it can stop one at will. Cycles run in-process through the library
 * (the bins are exercised in prune-cli.test.ts): DELTASYNC_PRUNE_CYCLES sets how many (300).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { LoadedConfig } from '../../src/config/load.js';
import { jobSchema } from '../../src/config/schema.js';
import { ackFileName, makeAck, serializeAck } from '../../src/format/ack.js';
import { silentLogger } from '../../src/log.js';
import { copy } from '../../src/steps/copy.js';
import { prune } from '../../src/steps/prune/index.js';
import { simulate } from '../../src/steps/simulate.js';
import { openStore, type DeltaStore } from '../../src/store/index.js';
import { expectNothingNeededRemoved } from '../helpers/invariants.js';
import { storeKinds } from '../helpers/stores.js';

const CYCLES = Number(process.env.DELTASYNC_PRUNE_CYCLES ?? 300);
const KEEP = 3;
const kinds = storeKinds();
const dirs: string[] = [];
afterAll(() => {
  kinds.forEach((k) => k.cleanup());
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

interface Rig {
  ctx: { config: LoadedConfig; log: ReturnType<typeof silentLogger> };
  outbox: DeltaStore;
  dests: Record<'a' | 'b', DeltaStore>;
  close(): Promise<void>;
}

async function rig(kind: (typeof kinds)[number], label: string): Promise<Rig> {
  const stateDir = mkdtempSync(join(tmpdir(), 'deltasync-prune-state-'));
  dirs.push(stateDir);
  const outboxSpec = await kind.fresh(`${label}-outbox`);
  const a = await kind.fresh(`${label}-a`);
  const b = await kind.fresh(`${label}-b`);
  const config = {
    ...jobSchema.parse({
      name: 't',
      stateDir,
      destinations: [
        { name: 'a', ...a },
        { name: 'b', ...b },
      ],
      tables: [{ name: 'items', key: ['id'], mode: 'logid', logIdColumn: 'log_id' }],
      retention: { keepDeltas: KEEP, keepHours: 0 },
    }),
    // The outbox key takes store specs once the config is wired onto stores; the steps already do.
    outbox: outboxSpec as unknown as string,
    configFile: join(stateDir, 'job.js'),
  } as unknown as LoadedConfig;
  const stores = await Promise.all([outboxSpec, a, b].map((s) => openStore(s as never)));
  return {
    ctx: { config, log: silentLogger() },
    outbox: stores[0]!,
    dests: { a: stores[1]!, b: stores[2]! },
    close: async () => void (await Promise.all(stores.map((s) => s.close()))),
  };
}

/** What a replica's load publishes after applying up to `logId`. */
async function acknowledge(store: DeltaStore, replica: string, logId: string): Promise<void> {
  await store.replace(ackFileName('t', replica), serializeAck(makeAck('t', replica, logId)));
}

async function footprint(store: DeltaStore): Promise<{ files: number; bytes: number }> {
  const names = await store.list('');
  const sizes = await Promise.all(names.map((n) => store.stat(n)));
  return { files: names.length, bytes: sizes.reduce((n, s) => n + (s?.bytes ?? 0), 0) };
}

const logIdOf = (cycle: number) => String(cycle * 1000);

for (const kind of kinds) {
  describe.skipIf(!kind.available)(`retention through ${kind.kind} stores`, () => {
    it(`${CYCLES} cycles with retention on: files and bytes stay bounded`, async () => {
      const r = await rig(kind, 'cycles');
      try {
        const peak = { outbox: 0, a: 0, b: 0 };
        for (let cycle = 1; cycle <= CYCLES; cycle++) {
          await simulate(r.ctx, { count: 1, empty: false, rows: 3 });
          await copy(r.ctx);
          // Each replica loads what copy brought, and acknowledges it.
          await acknowledge(r.dests.a, 'ra', logIdOf(cycle));
          await acknowledge(r.dests.b, 'rb', logIdOf(cycle));
          if (cycle % 50 === 0 || cycle === CYCLES) {
            for (const [name, store] of Object.entries({ outbox: r.outbox, ...r.dests })) {
              const { files } = await footprint(store);
              peak[name as keyof typeof peak] = Math.max(peak[name as keyof typeof peak], files);
            }
          }
        }
        const final = {
          outbox: await footprint(r.outbox),
          a: await footprint(r.dests.a),
          b: await footprint(r.dests.b),
        };
        console.log(`${kind.kind}: after ${CYCLES} cycles ${JSON.stringify(final)}`);
        // A simulated delta is a manifest and one part. The last copy pruned with the acks of
        // the cycle before: KEEP deltas, plus one acknowledgement at each destination.
        expect(final.outbox.files).toBe(2 * KEEP);
        expect(final.a.files).toBe(2 * KEEP + 1);
        expect(final.b.files).toBe(2 * KEEP + 1);
        expect(peak).toEqual({ outbox: 2 * KEEP, a: 2 * KEEP + 1, b: 2 * KEEP + 1 });
        const newest = logIdOf(CYCLES);
        const kept = (await r.outbox.listManifests()).map((m) => m.logId);
        expect(kept).toEqual([CYCLES - 2, CYCLES - 1, CYCLES].map(logIdOf));
        await expectNothingNeededRemoved(r.dests.a, [{ name: 'ra', logId: newest }], newest);
        expect(await r.outbox.leftovers()).toEqual([]);
      } finally {
        await r.close();
      }
    }, 1_200_000);

    it('a replica that stops loading holds what it has not applied; pruning resumes when it catches up', async () => {
      const r = await rig(kind, 'stopped');
      try {
        for (let cycle = 1; cycle <= 20; cycle++) {
          await simulate(r.ctx, { count: 1, empty: false, rows: 3 });
          await copy(r.ctx);
          await acknowledge(r.dests.a, 'ra', logIdOf(cycle));
          // rb's load stops after cycle 5.
          if (cycle <= 5) await acknowledge(r.dests.b, 'rb', logIdOf(cycle));
        }
        const newest = logIdOf(20);
        const readers = [{ name: 'rb', logId: logIdOf(5) }];
        const outboxKept = await expectNothingNeededRemoved(r.outbox, readers, newest, 'outbox');
        const bKept = await expectNothingNeededRemoved(r.dests.b, readers, newest, 'b');
        expect(outboxKept).toHaveLength(15);
        expect(bKept).toHaveLength(15);
        // Destination a has only its own replica, which is up to date.
        expect(await r.dests.a.listManifests()).toHaveLength(KEEP);

        const dry = await prune(r.ctx, { dryRun: true });
        const byName = Object.fromEntries(dry.locations.map((l) => [l.name, l]));
        expect(byName.outbox!.removed).toEqual([]);
        expect(byName.outbox!.reasons).toEqual([
          expect.stringMatching(
            /^holding 15 deltas \(\d+ bytes\) for replica 'rb', which has applied nothing since logId 5000, (just now|\d+ minutes? ago)$/,
          ),
        ]);
        expect(byName['destination b']!.reasons[0]).toContain("for replica 'rb'");
        expect(byName['destination a']!.reasons).toEqual([
          expect.stringContaining('the newest 3 are always kept (retention.keepDeltas)'),
        ]);

        // rb's load runs again and catches up: the next copy (with nothing new) prunes.
        await acknowledge(r.dests.b, 'rb', newest);
        const result = await copy(r.ctx);
        expect(result.deltas).toBe(0);
        expect(await r.outbox.listManifests()).toHaveLength(KEEP);
        expect(await r.dests.b.listManifests()).toHaveLength(KEEP);
        expect((await footprint(r.outbox)).files).toBe(2 * KEEP);
      } finally {
        await r.close();
      }
    }, 300_000);
  });
}
