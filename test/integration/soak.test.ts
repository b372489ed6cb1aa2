/**
 * scripts/soak at a small scale: pgbench (a client we did not write) changes a PostgreSQL source
 * while extract → copy → load loop and one transaction is held open through the middle third;
 * the TPC-B sums must hold on the replica after every load, and verify must then report the
 * replica equal.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';
import { pgServer } from '../helpers/databases.js';

const pg = await pgServer();
afterAll(() => pg.cleanup());
const pgbench = spawnSync('pgbench', ['--version']).status === 0;
if (!pgbench)
  console.warn('soak SKIPPED: pgbench is not installed (Debian package postgresql-client)');

describe.skipIf(!pg.available || !pgbench)('soak', () => {
  it('pgbench while the steps loop and one transaction is held open: TPC-B sums hold after every load, verify reports the replica equal', () => {
    const r = spawnSync(join(ROOT, 'scripts/soak'), ['--seconds', '8', '--clients', '2'], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/soak: \d+ loops during pgbench \([\d.]+ tps\), \d+ changes captured/);
    expect(r.stdout).toMatch(
      /soak: one transaction held open \d+ s; TPC-B sums checked on the replica after \d+ loads, 0 broken/,
    );
    expect(r.stdout).toContain('the replica matches the source');
    const changes = Number(/(\d+) changes captured/.exec(r.stdout)![1]);
    expect(changes).toBeGreaterThan(100);
  });
});
