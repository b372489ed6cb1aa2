/**
 * `deltasync prune` through the bin on a SQLite job (a directory outbox, its destination being
 * the inbox): --dry-run lists and removes nothing, the summary line, copy's automatic prune,
 * and the configuration mistakes a user can make.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runBin, sqliteJob, summaryOf, type SqliteJob } from '../helpers/cli.js';
import { runStep } from '../helpers/invariants.js';

let job: SqliteJob | undefined;
afterEach(() => job?.cleanup());

function withConfig(j: SqliteJob, changes: Record<string, unknown>, name: string): string {
  const base = readFileSync(j.config, 'utf8')
    .replace(/^export default /, '')
    .replace(/;\s*$/, '');
  const file = join(j.dir, `${name}.js`);
  const config = { ...(JSON.parse(base) as Record<string, unknown>), ...changes };
  writeFileSync(file, `export default ${JSON.stringify(config, null, 2)};\n`);
  return file;
}

const manifests = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.MANIFEST.json'));

/** Five deltas of one row each; load applies the first `loaded`. */
function fiveDeltas(j: SqliteJob, loaded: number): void {
  for (let id = 1; id <= 5; id++) {
    j.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', id, `row ${id}`, 1, id);
    for (const step of ['extract', 'copy'] as const) expect(runStep(step, j.config).code).toBe(0);
    if (id <= loaded) expect(runStep('load', j.config).code).toBe(0);
  }
}

describe('deltasync prune', () => {
  it('--dry-run says what would go and why the rest stays, and removes nothing', () => {
    job = sqliteJob();
    fiveDeltas(job, 2);
    const config = withConfig(job, { retention: { keepDeltas: 1, keepHours: 0 } }, 'r');
    const before = [...readdirSync(job.outbox), ...readdirSync(job.inbox)].sort();
    const r = runBin('deltasync', ['prune', '-c', config, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    // Load acknowledges what it applied (logId 2), so the outbox, like the inbox, keeps the
    // three deltas that replica still needs.
    expect(r.stdout).toContain(`outbox (${job.outbox}): 5 deltas`);
    expect(r.stdout).toContain(`destination main (inbox) (${job.inbox}): 5 deltas`);
    const holding =
      /holding 3 deltas \(\d+ bytes\) for replica 'default', which has applied nothing since logId 2, (just now|\d+ minutes? ago)/g;
    expect(r.stdout.match(holding)).toHaveLength(2);
    expect(r.stdout.match(/would remove 2 deltas/g)).toHaveLength(2);
    expect(summaryOf(r.stdout)).toMatchObject({ step: 'prune --dry-run', deltas: 4 });
    expect([...readdirSync(job.outbox), ...readdirSync(job.inbox)].sort()).toEqual(before);

    const done = runBin('deltasync', ['prune', '-c', config]);
    expect(done.code, done.stderr).toBe(0);
    expect(summaryOf(done.stdout)).toMatchObject({ step: 'prune', deltas: 4 });
    expect(manifests(job.outbox)).toHaveLength(3);
    expect(manifests(job.inbox)).toHaveLength(3);
    // Load goes on from where it stood: nothing it needed was removed.
    expect(runStep('load', job.config).code).toBe(0);
    expect(job.targetRows()).toHaveLength(5);
  });

  it('keepHours defaults to 24: fresh deltas stay, and the dry run says so', () => {
    job = sqliteJob();
    fiveDeltas(job, 5);
    const config = withConfig(job, { retention: { keepDeltas: 0 } }, 'hours');
    const r = runBin('deltasync', ['prune', '-c', config, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('younger than 24 hours (retention.keepHours)');
    const done = runBin('deltasync', ['prune', '-c', config]);
    expect(summaryOf(done.stdout)).toMatchObject({ step: 'prune', deltas: 0 });
    expect(manifests(job.outbox)).toHaveLength(5);
  });

  it('extract, copy and load prune after each run with a retention section; status says what is held and why', () => {
    job = sqliteJob({ retention: { keepDeltas: 2, keepHours: 0 } });
    fiveDeltas(job, 5);
    // The replica acknowledged logId 5: the outbox keeps the newest two; the inbox is pruned by
    // load, after its own position.
    expect(manifests(job.outbox)).toHaveLength(2);
    expect(manifests(job.inbox)).toHaveLength(2);
    const copied = runStep('copy', job.config);
    expect(copied.stdout).toContain('"step":"prune"');

    // Load stops: two more deltas reach the inbox and stay there; copy prunes the ones before
    // them there, which the replica's acknowledgement says it has applied.
    for (const id of [6, 7]) {
      job.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', id, `row ${id}`, 1, id);
      for (const step of ['extract', 'copy'] as const)
        expect(runStep(step, job.config).code).toBe(0);
    }
    expect(manifests(job.inbox)).toHaveLength(2);
    const status = runBin('deltasync', ['status', '-c', job.config]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain('retention (keepDeltas 2, keepHours 0):');
    expect(status.stdout).toMatch(
      /holding 2 deltas \(\d+ bytes\) for replica 'default', which has applied nothing since logId 5, /,
    );
    const json = runBin('deltasync', ['status', '-c', job.config, '--json']);
    const parsed = JSON.parse(json.stdout) as {
      retention: { locations: { name: string; deltas: number; removed: string[] }[] };
    };
    expect(parsed.retention.locations.map((l) => [l.name, l.deltas, l.removed.length])).toEqual([
      ['outbox', 2, 0],
      ['destination main (inbox)', 2, 0],
    ]);
    // Load runs again: it catches up and prunes its inbox.
    expect(runStep('load', job.config).code).toBe(0);
    expect(manifests(job.inbox)).toHaveLength(2);
    expect(job.targetRows()).toHaveLength(7);
  });

  it('configuration mistakes exit 78 with the key named, removing nothing', () => {
    job = sqliteJob();
    const bad = withConfig(job, { retention: { keepDeltas: -1, keep: 3 } }, 'bad');
    const r = runBin('deltasync', ['prune', '-c', bad]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('retention.keepDeltas');
    expect(r.stderr).toContain('retention.keep: unknown key');
    const nothing = withConfig(
      job,
      { outbox: undefined, inbox: undefined, destinations: undefined },
      'nothing',
    );
    const n = runBin('deltasync', ['prune', '-c', nothing]);
    expect(n.code).toBe(78);
    expect(n.stderr).toContain('nothing to prune: give outbox (source side) or inbox and target');
  });
});
