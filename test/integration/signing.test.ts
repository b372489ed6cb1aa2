/**
 * Signed manifests through the bins: with a shared key, extract signs and load verifies; an
 * unsigned or altered delta is refused (65) and nothing moves; during a key rotation the loader
 * accepts the previous key too. Without a key nothing changes.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import xxhash from 'xxhash-wasm';
import { afterEach, describe, expect, it } from 'vitest';
import { runBin, sqliteJob, type SqliteJob } from '../helpers/cli.js';

const KEY = 'a'.repeat(64);
const OLD = 'b'.repeat(64);
let job: SqliteJob;
afterEach(() => job.cleanup());

function manifestPath(j: SqliteJob, dir = j.inbox): string {
  return join(
    dir,
    readdirSync(dir).find((f) => f.endsWith('.MANIFEST.json'))!,
  );
}

function extractAndCopy(j: SqliteJob): void {
  j.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
  j.sourceExec("INSERT INTO items VALUES (2, 'b', 2, 6)");
  for (const bin of ['deltasync-extract', 'deltasync-copy']) {
    const r = runBin(bin, ['-c', j.config]);
    expect(r.code, r.stderr).toBe(0);
  }
}

function expectRefused(j: SqliteJob, message: RegExp): void {
  const r = runBin('deltasync-load', ['-c', j.config]);
  expect(r.code, r.stderr).toBe(65);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(message);
  expect(j.targetRows()).toEqual([]);
}

describe('signed manifests', () => {
  it('extract signs, and parts carry a SHA-256; load verifies and applies', () => {
    job = sqliteJob({ signingKey: KEY });
    extractAndCopy(job);
    const m = JSON.parse(readFileSync(manifestPath(job), 'utf8'));
    expect(m.signature.alg).toBe('HMAC-SHA256');
    expect(m.tables[0].parts[0].sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
    expect(job.targetRows()).toHaveLength(2);
  });

  it('refuses an unsigned delta when the loader has a key', () => {
    job = sqliteJob();
    extractAndCopy(job);
    writeFileSync(
      job.config,
      readFileSync(job.config, 'utf8').replace(
        '"name": "t"',
        `"name": "t", "signingKey": "${KEY}"`,
      ),
    );
    expectRefused(job, /is not signed/);
  });

  it('refuses a part replaced along with its checksum, size and rows in the manifest', async () => {
    job = sqliteJob({ signingKey: KEY, delta: { maxRowsPerPart: 100, compression: 'gzip' } });
    extractAndCopy(job);
    const path = manifestPath(job);
    const m = JSON.parse(readFileSync(path, 'utf8'));
    const part = m.tables[0].parts[0];
    const forged = gzipSync('1\tevil\t1\t5\n');
    writeFileSync(join(job.inbox, part.file), forged);
    const { h64Raw } = await xxhash();
    Object.assign(part, {
      bytes: forged.length,
      rows: 1,
      xxhash64: h64Raw(forged).toString(16).padStart(16, '0'),
    });
    m.tables[0].rows = 1;
    writeFileSync(path, JSON.stringify(m, null, 2));
    expectRefused(job, /signature does not match/);
  });

  it('refuses a manifest whose part SHA-256 was edited (the signature covers it)', () => {
    job = sqliteJob({ signingKey: KEY });
    extractAndCopy(job);
    const m = JSON.parse(readFileSync(manifestPath(job), 'utf8'));
    const partFile = join(job.inbox, m.tables[0].parts[0].file);
    const original = readFileSync(partFile);
    m.tables[0].parts[0].sha256 = '0'.repeat(64);
    writeFileSync(manifestPath(job), JSON.stringify(m, null, 2));
    expect(readFileSync(partFile)).toEqual(original);
    expectRefused(job, /signature does not match/);
  });

  it('accepts deltas signed with a previous key during a rotation, and refuses them after', () => {
    job = sqliteJob({ signingKey: OLD });
    extractAndCopy(job);
    const config = readFileSync(job.config, 'utf8');
    writeFileSync(job.config, config.replace(`"signingKey": "${OLD}"`, `"signingKey": "${KEY}"`));
    expectRefused(job, /signed with key [0-9a-f]{16}, which this loader does not have/);
    writeFileSync(
      job.config,
      config.replace(
        `"signingKey": "${OLD}"`,
        `"signingKey": "${KEY}", "previousSigningKeys": ["${OLD}"]`,
      ),
    );
    const r = runBin('deltasync-load', ['-c', job.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(job.targetRows()).toHaveLength(2);
  });

  it('a short key is a configuration error', () => {
    job = sqliteJob({ signingKey: 'short' });
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('signingKey: must be at least 32 characters');
  });
});
