/**
 * copy's summary line against the manifests it copied: a delta of several tables and parts, with
 * deletes, sent to two destinations, counts each delta, table, row and byte once (it printed
 * `tables: 0` and every row and byte once per destination before).
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DeltaWriter } from '../../src/format/delta-writer.js';
import type { Manifest } from '../../src/format/manifest.js';
import { runBin, summaryOf } from '../helpers/cli.js';
import { cols } from '../helpers/deltas.js';

const dir = mkdtempSync(join(tmpdir(), 'deltasync-copy-summary-'));
const outbox = join(dir, 'outbox');
const config = join(dir, 'job.js');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function writeDelta(from: number, to: number, rows: Record<string, number>, deletes = 0) {
  const writer = new DeltaWriter({
    dir: outbox,
    job: 'cs',
    fromLogId: String(from),
    toLogId: String(to),
    maxRowsPerPart: 3,
    compression: 'gzip',
  });
  for (const [name, n] of Object.entries(rows)) {
    const t = writer.beginTable(name, ['id'], cols('id:bigint', 'note:text'));
    for (let i = 1; i <= n; i++) await t.upsert([String(from + i), `row ${i}`]);
    if (name === 'b') for (let i = 1; i <= deletes; i++) await t.delete([String(900 + i)]);
    await t.finish();
  }
  await writer.finish();
}

/** The figures the summary must show, read from the manifests in the outbox. */
function fromManifests(): { deltas: number; tables: number; rows: number; bytes: number } {
  const manifests = readdirSync(outbox)
    .filter((f) => f.endsWith('.MANIFEST.json'))
    .map((f) => JSON.parse(readFileSync(join(outbox, f), 'utf8')) as Manifest);
  const tables = new Set<string>();
  let rows = 0;
  let bytes = 0;
  for (const m of manifests) {
    for (const t of m.tables) {
      const n = t.rows + (t.deletes?.rows ?? 0);
      if (n > 0) tables.add(t.name);
      rows += n;
      for (const p of [...t.parts, ...(t.deletes?.parts ?? [])]) bytes += p.bytes;
    }
  }
  return { deltas: manifests.length, tables: tables.size, rows, bytes };
}

describe('copy summary', () => {
  it('counts the deltas, tables, rows (deletes included) and bytes of the manifests once, for two destinations', async () => {
    mkdirSync(outbox);
    for (const d of ['one', 'two']) mkdirSync(join(dir, d));
    writeFileSync(
      config,
      `export default ${JSON.stringify({
        name: 'cs',
        stateDir: join(dir, 'state'),
        outbox,
        destinations: [
          { name: 'one', dir: join(dir, 'one') },
          { name: 'two', dir: join(dir, 'two') },
        ],
      })};\n`,
    );
    // Table a spans three parts, b has rows and deletes in several parts, c is empty.
    await writeDelta(0, 100, { a: 7, b: 2, c: 0 }, 4);
    await writeDelta(100, 200, { a: 1, b: 0 }, 0);
    const want = fromManifests();
    expect(want).toEqual({ deltas: 2, tables: 2, rows: 14, bytes: expect.any(Number) });

    const r = runBin('deltasync-copy', ['-c', config]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(summaryOf(r.stdout)).toMatchObject({ step: 'copy', ...want });
    for (const d of ['one', 'two'])
      expect(readdirSync(join(dir, d)).sort()).toEqual(readdirSync(outbox).sort());

    // Nothing left to copy: zeros, not the previous run's figures.
    const again = runBin('deltasync-copy', ['-c', config]);
    expect(again.code).toBe(0);
    expect(summaryOf(again.stdout)).toMatchObject({ deltas: 0, tables: 0, rows: 0, bytes: 0 });
  });
});
