/**
 * verify compares values in their normalised form across column types that hold the same value
 * (issue 9, finding 5): CHAR padding (PostgreSQL char(n) pads, MariaDB CHAR strips), TIMESTAMP vs
 * DATETIME(6), timestamptz vs timestamp, decimal scales, booleans vs tinyint, timestamps with and
 * without a fraction. Among rows that are equal in that sense, the real differences are found,
 * exactly, with the differing columns named. Keys whose order the databases' collations disagree
 * on are compared in an order verify controls instead of ending in "internal error".
 */
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob, type Engine } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const SOURCE_DDL = `CREATE TABLE people (
  id bigint PRIMARY KEY,
  code char(12),
  born timestamp(6),
  seen timestamptz,
  price numeric(10,4),
  active boolean,
  stamp timestamp(0),
  log_id bigint NOT NULL)`;

const REPLICA_DDL: Record<'pg' | 'mysql', string> = {
  pg: `CREATE TABLE people (
    id bigint PRIMARY KEY,
    code varchar(12),
    born timestamptz,
    seen timestamp(3),
    price numeric(12,6),
    active boolean,
    stamp timestamp(6),
    log_id bigint NOT NULL)`,
  mysql: `CREATE TABLE people (
    id bigint PRIMARY KEY,
    code char(12),
    born datetime(6),
    seen timestamp(6) NULL,
    price decimal(12,6),
    active tinyint(1),
    stamp datetime(6),
    log_id bigint NOT NULL) ENGINE=InnoDB`,
};

describe.each(['mysql', 'pg'] as const)('pg -> %s', (to: Engine & ('pg' | 'mysql')) => {
  it.skipIf(!dbs.available('pg') || !dbs.available(to))(
    'equal values in other column types are equal; the real lost updates are found exactly, by column',
    async () => {
      const source = await openDb(dbs, 'pg', 'vnsrc');
      const target = await openDb(dbs, to, 'vndst');
      const job = writeJob(
        source,
        target,
        `tables: [{ name: 'people', key: ['id'], logIdColumn: 'log_id' }]`,
      );
      const verify = (...args: string[]) =>
        runBin('deltasync', ['verify', '-c', job.config, ...args]);
      try {
        await source.exec(SOURCE_DDL);
        await target.exec(REPLICA_DDL[to]);
        const rows = Array.from({ length: 40 }, (_, i) => {
          const n = i + 1;
          return `(${n}, 'C${n}', '2024-03-0${(n % 9) + 1} 10:00:0${n % 10}.${n % 2 ? '5' : '0'}',
            '2024-03-01 10:00:00.25+00', ${n}.9900, ${n % 2 === 0}, '2024-03-01 23:59:59', ${n})`;
        });
        await source.exec(`INSERT INTO people VALUES ${rows.join(', ')}`);
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          const r = runBin(bin, ['-c', job.config]);
          expect(r.code, r.stderr).toBe(0);
        }
        const same = verify();
        expect(same.stderr).toBe('');
        expect(same.stdout).toContain('people: equal (40 rows on the source, 40 on the replica)');
        expect(same.code).toBe(0);
        expect(verify('--table', 'people').code).toBe(0);

        // Four real lost updates among the normalised-equal rows, in different columns.
        await source.exec(`UPDATE people SET code = 'LOST7' WHERE id = 7`);
        await source.exec(`UPDATE people SET price = 13.9901 WHERE id = 13`);
        await source.exec(`UPDATE people SET active = NOT active, code = 'X21' WHERE id = 21`);
        await source.exec(`UPDATE people SET born = born + interval '1 microsecond' WHERE id = 33`);
        const diff = verify('--json');
        expect(diff.code, diff.stderr).toBe(1);
        const table = JSON.parse(diff.stdout).tables[0];
        expect(table).toMatchObject({ different: 4, missing: 0, extra: 0 });
        expect(
          table.first.map((d: { key: unknown[]; columns?: string[] }) => [
            String(d.key[0]),
            d.columns,
          ]),
        ).toEqual([
          ['7', ['code']],
          ['13', ['price']],
          ['21', ['code', 'active']],
          ['33', ['born']],
        ]);
        const text = verify();
        expect(text.stdout).toContain('key ["21"]: different (code, active)');
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});

describe('collation-ordered text keys', () => {
  it.skipIf(!dbs.available('pg') || !dbs.available('mysql'))(
    'keys the two databases sort differently are still compared, with the differences found',
    async () => {
      const source = await openDb(dbs, 'pg', 'vcsrc');
      const target = await openDb(dbs, 'mysql', 'vcdst');
      const job = writeJob(
        source,
        target,
        `tables: [{ name: 'tags', key: ['tag'], logIdColumn: 'log_id' }]`,
      );
      try {
        await source.exec(
          'CREATE TABLE tags (tag varchar(20) COLLATE "C" PRIMARY KEY, n int, log_id bigint NOT NULL)',
        );
        await target.exec(
          'CREATE TABLE tags (tag varchar(20) COLLATE utf8mb4_unicode_ci PRIMARY KEY, n int, log_id bigint NOT NULL)',
        );
        // Binary order: 'B' < '_x' < 'a' < 'é'; the unicode_ci collation puts '_x' first.
        await source.exec(
          `INSERT INTO tags VALUES ('a', 1, 1), ('B', 2, 2), ('_x', 3, 3), ('é', 4, 4), ('c', 5, 5)`,
        );
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          const r = runBin(bin, ['-c', job.config]);
          expect(r.code, r.stderr).toBe(0);
        }
        const same = runBin('deltasync', ['verify', '-c', job.config]);
        expect(same.stderr).toBe('');
        expect(same.code).toBe(0);
        await target.exec(`UPDATE tags SET n = 50 WHERE tag = 'c'`);
        await target.exec(`DELETE FROM tags WHERE tag = '_x'`);
        const diff = runBin('deltasync', ['verify', '-c', job.config, '--json']);
        expect(diff.code, diff.stderr).toBe(1);
        const table = JSON.parse(diff.stdout).tables[0];
        expect(table).toMatchObject({ different: 1, missing: 1, extra: 0 });
        expect(table.first).toEqual([
          { key: ['_x'], kind: 'missing on the replica' },
          { key: ['c'], kind: 'different', columns: ['n'] },
        ]);
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});
