/**
 * `deltasync verify` through the bin: equal after a sync (exit 0); a replica row changed, deleted
 * or added shows up by key (exit 1); partial and incremental modes; across engines where servers
 * answer.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob, type Engine } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const PAIRS: [Engine, Engine][] = [
  ['sqlite', 'sqlite'],
  ['pg', 'pg'],
  ['mysql', 'mysql'],
  ['pg', 'mysql'],
];

const DDL: Record<Engine, string> = {
  sqlite:
    'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC, log_id INTEGER NOT NULL)',
  pg: 'CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,3), log_id bigint NOT NULL)',
  mysql:
    'CREATE TABLE items (id bigint PRIMARY KEY, name varchar(100), price decimal(12,2), log_id bigint NOT NULL) ENGINE=InnoDB',
};

describe.each(PAIRS)('%s -> %s', (from, to) => {
  it.skipIf(!dbs.available(from) || !dbs.available(to))(
    'finds exactly the rows that differ',
    async () => {
      const source = await openDb(dbs, from, 'vsrc');
      const target = await openDb(dbs, to, 'vdst');
      const job = writeJob(
        source,
        target,
        `tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`,
      );
      const verify = (...args: string[]) =>
        runBin('deltasync', ['verify', '-c', job.config, ...args]);
      try {
        await source.exec(DDL[from]);
        await target.exec(DDL[to]);
        const values = Array.from(
          { length: 300 },
          (_, i) => `(${i + 1}, 'n${i + 1}', ${i}.5, ${i + 1})`,
        );
        await source.exec(`INSERT INTO items VALUES ${values.join(', ')}`);
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          const r = runBin(bin, ['-c', job.config]);
          expect(r.code, r.stderr).toBe(0);
        }
        const same = verify();
        expect(same.code, same.stderr).toBe(0);
        expect(same.stdout).toContain('items: equal (300 rows on the source, 300 on the replica)');

        await target.exec(`UPDATE items SET name = 'tampered' WHERE id = 7`);
        await target.exec(`DELETE FROM items WHERE id = 42`);
        await target.exec(`INSERT INTO items VALUES (1000, 'extra', 1, 1000)`);
        const diff = verify('--json');
        expect(diff.code).toBe(1);
        const report = JSON.parse(diff.stdout);
        expect(report.equal).toBe(false);
        expect(report.tables[0]).toMatchObject({
          missing: 1,
          extra: 1,
          different: 1,
          sourceRows: 300,
          replicaRows: 300,
        });
        expect(
          report.tables[0].first.map((d: { key: unknown[]; kind: string }) => [
            String(d.key[0]),
            d.kind,
          ]),
        ).toEqual([
          ['7', 'different'],
          ['42', 'missing on the replica'],
          ['1000', 'extra on the replica'],
        ]);

        // partial compares only key and logId column: the tampered name goes unseen there.
        const partial = verify('--mode', 'partial', '--json');
        expect(JSON.parse(partial.stdout).tables[0]).toMatchObject({
          missing: 1,
          extra: 1,
          different: 0,
        });

        // incremental looks only at rows changed since a logId: 7 and 42 changed before it.
        await source.exec(`UPDATE items SET name = 'new', log_id = 500 WHERE id = 100`);
        const incremental = verify('--mode', 'incremental', '--since', '300', '--json');
        expect(incremental.code).toBe(1);
        expect(JSON.parse(incremental.stdout).tables[0]).toMatchObject({
          sourceRows: 1,
          different: 1,
          missing: 0,
          extra: 0,
        });
        expect(verify('--mode', 'incremental').code).toBe(78);
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});
