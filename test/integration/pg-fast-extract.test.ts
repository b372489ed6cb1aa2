/**
 * Extract's format 2 fast path from PostgreSQL with shaping the query can do (exclude, rename,
 * another target name): rows go from COPY into the parts as bytes, the excluded columns never
 * leave the source, the cursors still move (logid: the window's bound; timestamp: the last
 * line), and the replica ends equal to the shaped source, its own columns untouched.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const cycle = (config: string) => {
  for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
    const r = runBin(bin, ['-c', config]);
    expect(r.code, r.stderr).toBe(0);
  }
};

describe.skipIf(!dbs.available('pg'))('PostgreSQL extract fast path with shaping', () => {
  it('ships renamed and kept columns only, in logid and timestamp mode, cycle after cycle', async () => {
    const source = await openDb(dbs, 'pg', 'fastsrc');
    const target = await openDb(dbs, 'pg', 'fastdst');
    const job = writeJob(
      source,
      target,
      `capture: { timestampLagSeconds: 0 },
       delta: { maxRowsPerPart: 2 },
       tables: [
         { name: 'people', key: ['id'], mode: 'logid', logIdColumn: 'log_id', target: 'persons',
           rename: { first: 'given_name' }, exclude: ['secret', 'log_id'] },
         { name: 'notes', key: ['id'], mode: 'timestamp', timestampColumn: 'changed',
           exclude: ['secret'] },
       ]`,
    );
    try {
      await source.exec(`CREATE TABLE people (id int PRIMARY KEY, first text, secret text,
        log_id bigint NOT NULL)`);
      await source.exec(`CREATE TABLE notes (id int PRIMARY KEY, body text, secret text,
        changed timestamptz NOT NULL)`);
      await target.exec(`CREATE TABLE persons (id int PRIMARY KEY, given_name text, note text)`);
      await target.exec(`CREATE TABLE notes (id int PRIMARY KEY, body text, changed timestamptz)`);
      await source.exec(`INSERT INTO people VALUES (1, E'Ada\\tL', 's', 1), (2, 'Bo', 's', 2),
        (3, '\\N', 's', 3)`);
      await source.exec(`INSERT INTO notes VALUES
        (1, E'a\\nb', 's', '2024-01-01 00:00:00.5+00'), (2, 'c', 's', '2024-01-01 00:00:00.5+00'),
        (3, NULL, 's', '2024-01-02 00:00:00+00')`);
      cycle(job.config);
      const parts = readdirSync(join(job.dir, 'inbox')).filter((f) => f.endsWith('.copy.gz'));
      expect(parts.length).toBeGreaterThan(2); // two rows per part: split on line boundaries
      await target.exec(`UPDATE persons SET note = 'mine' WHERE id = 1`);
      await source.exec(`UPDATE people SET first = 'Ada', log_id = 4 WHERE id = 1`);
      await source.exec(`INSERT INTO notes VALUES (4, 'd', 's', '2024-01-02 00:00:00+00')`);
      await source.exec(`UPDATE notes SET body = 'z', changed = '2024-01-03 00:00:00+00'
        WHERE id = 1`);
      cycle(job.config);
      expect(await target.rows(`SELECT id, given_name, note FROM persons ORDER BY id`)).toEqual([
        [1, 'Ada', 'mine'],
        [2, 'Bo', null],
        [3, '\\N', null],
      ]);
      expect(await target.rows(`SELECT id, body, changed::text FROM notes ORDER BY id`)).toEqual([
        [1, 'z', '2024-01-03 00:00:00+00'],
        [2, 'c', '2024-01-01 00:00:00.5+00'],
        [3, null, '2024-01-02 00:00:00+00'],
        [4, 'd', '2024-01-02 00:00:00+00'],
      ]);
      // A third run has nothing new: the cursors moved past every row.
      const r = runBin('deltasync-extract', ['-c', job.config]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/"rows":0/);
    } finally {
      await source.close();
      await target.close();
      job.cleanup();
    }
  });
});
