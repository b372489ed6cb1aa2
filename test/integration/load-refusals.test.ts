/**
 * Load refuses any delta it cannot trust with exit 65 and one line naming the file, and leaves
 * the replica and the state file exactly as they were. Each case starts from the same two
 * deltas in the inbox, the first already loaded, the second damaged in one way.
 */
import {
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
  statSync,
  renameSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runBin, sqliteJob, type SqliteJob } from '../helpers/cli.js';

let job: SqliteJob;
let second: { manifest: string; parts: string[] };

function state(j: SqliteJob, step: string): string {
  return readFileSync(join(j.stateDir, `t.${step}.state.json`), 'utf8');
}

beforeEach(() => {
  job = sqliteJob();
  for (let i = 1; i <= 4; i++)
    job.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', i, `item ${i}`, i, i);
  for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load'])
    expect(runBin(bin, ['-c', job.config]).code).toBe(0);
  for (let i = 5; i <= 9; i++)
    job.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', i, `item ${i}`, i, i);
  job.sourceExec("UPDATE items SET name = 'changed', log_id = 10 WHERE id = 1");
  for (const bin of ['deltasync-extract', 'deltasync-copy'])
    expect(runBin(bin, ['-c', job.config]).code).toBe(0);
  const files = readdirSync(job.inbox).filter((f) => f.startsWith('logId00000000000000000010.'));
  second = {
    manifest: files.find((f) => f.endsWith('.MANIFEST.json'))!,
    parts: files.filter((f) => f.endsWith('.copy.gz')).sort(),
  };
  expect(second.parts.length).toBeGreaterThan(1);
});
afterEach(() => job.cleanup());

function expectRefused(mentions: string | RegExp): void {
  const rowsBefore = job.targetRows();
  const stateBefore = state(job, 'load');
  const r = runBin('deltasync-load', ['-c', job.config, '-v']);
  expect(r.code, r.stderr).toBe(65);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(mentions);
  expect(job.targetRows()).toEqual(rowsBefore);
  expect(state(job, 'load')).toBe(stateBefore);
  expect(JSON.parse(stateBefore).logId).toBe('4');
}

describe('load refuses a damaged delta and changes nothing', () => {
  it('a flipped byte in the last part (after earlier parts were applied in the transaction)', () => {
    const last = second.parts.at(-1)!;
    const bytes = readFileSync(join(job.inbox, last));
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    writeFileSync(join(job.inbox, last), bytes);
    expectRefused(last);
  });

  it('a missing part', () => {
    rmSync(join(job.inbox, second.parts[0]!));
    expectRefused(new RegExp(`${second.parts[0]!.replace(/\./g, '\\.')} is missing`));
  });

  it('a truncated part', () => {
    const p = join(job.inbox, second.parts[1]!);
    truncateSync(p, statSync(p).size - 4);
    expectRefused(second.parts[1]!);
  });

  it('a truncated manifest', () => {
    const p = join(job.inbox, second.manifest);
    truncateSync(p, Math.floor(statSync(p).size / 2));
    expectRefused(`${second.manifest}: manifest is not valid JSON`);
  });

  it('a manifest whose row count was altered', () => {
    const p = join(job.inbox, second.manifest);
    const m = JSON.parse(readFileSync(p, 'utf8'));
    m.tables[0].parts[0].rows += 1;
    m.tables[0].rows += 1;
    writeFileSync(p, JSON.stringify(m));
    expectRefused(/holds \d+ rows, the manifest says \d+/);
  });

  it('a gap: the next delta is missing', () => {
    // A third delta arrives but the second never did.
    job.sourceExec("INSERT INTO items VALUES (20, 'late', 1, 20)");
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    for (const f of [second.manifest, ...second.parts]) rmSync(join(job.inbox, f));
    expectRefused(/gap: the delta after logId 4 is missing/);
  });

  it('a delta of another job', () => {
    const p = join(job.inbox, second.manifest);
    writeFileSync(p, readFileSync(p, 'utf8').replace('"job": "t"', '"job": "other"'));
    expectRefused("belongs to job 'other'");
  });

  it('then, once the good files are back, loads normally', () => {
    const p = join(job.inbox, second.parts[0]!);
    renameSync(p, `${p}.aside`);
    const refused = runBin('deltasync-load', ['-c', job.config, '-v']);
    expect(refused.code, refused.stderr).toBe(65);
    renameSync(`${p}.aside`, p);
    const r = runBin('deltasync-load', ['-c', job.config]);
    expect(r.code).toBe(0);
    expect(job.targetRows()).toHaveLength(9);
    expect(JSON.parse(state(job, 'load')).logId).toBe('10');
  });
});

describe('the target database is the truth', () => {
  it('a state file behind the target does not make load apply a delta twice', () => {
    expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
    // As if the process died after the commit but before writing the state file.
    writeFileSync(join(job.stateDir, 't.load.state.json'), JSON.stringify({ logId: '4' }));
    job.sourceExec('UPDATE items SET qty = 1000, log_id = 11 WHERE id = 3');
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    const r = runBin('deltasync-load', ['-c', job.config]);
    expect(r.code).toBe(0);
    expect(JSON.parse(state(job, 'load')).logId).toBe('11');
    expect(r.stdout).toContain('the target wins');
  });
});

describe('extract after a crash', () => {
  it('removes parts of a delta that never got its manifest, and extracts again', () => {
    job.sourceExec("INSERT INTO items VALUES (30, 'x', 1, 30)");
    // A crashed extract left a part and a temp file of delta 30 but no manifest.
    writeFileSync(join(job.outbox, 'logId00000000000000000030.items.0001.copy.gz'), 'partial');
    writeFileSync(
      join(job.outbox, '.logId00000000000000000030.items.0002.copy.gz.tmp-1-abcd'),
      'partial',
    );
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.code).toBe(0);
    expect(readdirSync(job.outbox).filter((f) => f.includes('tmp-'))).toEqual([]);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
    expect(job.targetRows()).toHaveLength(10);
  });

  it('adopts a complete delta whose state write was lost instead of extracting it twice', () => {
    writeFileSync(join(job.stateDir, 't.extract.state.json'), JSON.stringify({ logId: '4' }));
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('adopting a delta');
    expect(JSON.parse(state(job, 'extract')).logId).toBe('10');
    expect(readdirSync(job.outbox).filter((f) => f.endsWith('.MANIFEST.json'))).toHaveLength(2);
  });
});
