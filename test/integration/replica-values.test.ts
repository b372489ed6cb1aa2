/**
 * Issue 9 item 1: never quietly different. A value the replica column would round, truncate or
 * refuse stops the load with exit 65 and one line naming the table, the key of the first
 * offending row, the column, the value and the replica column's type; nothing of the delta is
 * applied; once the replica column is fixed the next run goes on. A replica table whose key is
 * not a primary key or unique index is refused (78). A swap of unique values between two rows
 * of one delta applies where the constraint is deferrable, or where PostgreSQL's load replaces
 * the rows (deletes them, then COPYs them in), and is refused (65) otherwise.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogicalType, WireValue } from '../../src/db/types.js';
import { runBin } from '../helpers/cli.js';
import { cols, loadJob } from '../helpers/deltas.js';
import { openDb, servers, type Db, type Engine, type Servers } from '../helpers/engines.js';

let s: Servers;
beforeAll(async () => {
  s = await servers();
});
afterAll(async () => s?.cleanup());

interface Misfit {
  /** What the case is, for the test name. */
  what: string;
  /** The replica column's type. */
  column: string;
  type: LogicalType;
  good: WireValue;
  bad: WireValue;
  /** How the message shows the value (defaults to the value itself). */
  shown?: string;
  /** What the replica column's type looks like in the message. */
  typeShown: RegExp;
  /** A column type that takes the bad value: the fix. */
  fixed: string;
}

const CASES: Record<Engine, Misfit[]> = {
  pg: [
    {
      what: 'numeric(10,4) into numeric(10,2)',
      column: 'numeric(10,2)',
      type: 'decimal',
      good: '0.5000',
      bad: '0.9949',
      typeShown: /numeric\(10,2\)/,
      fixed: 'numeric(10,4)',
    },
    {
      what: 'fractional seconds into timestamp(0) (the next day)',
      column: 'timestamp(0)',
      type: 'timestamp',
      good: '2024-01-31 10:00:00',
      bad: '2024-01-31 23:59:59.987654',
      typeShown: /timestamp\(0\)/,
      fixed: 'timestamp(6)',
    },
    {
      what: 'a string too long',
      column: 'varchar(5)',
      type: 'text',
      good: 'short',
      bad: 'too long',
      typeShown: /character varying\(5\)/,
      fixed: 'varchar(20)',
    },
    {
      what: 'an int needing bigint',
      column: 'integer',
      type: 'int',
      good: 7,
      bad: 3000000000,
      typeShown: /integer/,
      fixed: 'bigint',
    },
    {
      what: 'out of range for numeric(4,2)',
      column: 'numeric(4,2)',
      type: 'decimal',
      good: '1.50',
      bad: '123.45',
      typeShown: /numeric\(4,2\)/,
      fixed: 'numeric(10,2)',
    },
    {
      what: 'NULL into NOT NULL',
      column: 'text NOT NULL',
      type: 'text',
      good: 'x',
      bad: null,
      shown: 'NULL',
      typeShown: /NOT NULL/,
      fixed: 'text',
    },
  ],
  mysql: [
    {
      what: 'fractional seconds into DATETIME(0)',
      column: 'DATETIME',
      type: 'timestamp',
      good: '2024-01-31 10:00:00',
      bad: '2024-01-31 23:59:59.123456',
      typeShown: /datetime/,
      fixed: 'DATETIME(6)',
    },
    {
      what: 'decimal(10,4) into DECIMAL(10,2)',
      column: 'DECIMAL(10,2)',
      type: 'decimal',
      good: '0.5000',
      bad: '0.9949',
      typeShown: /decimal\(10,2\)/,
      fixed: 'DECIMAL(10,4)',
    },
    {
      what: 'a string too long',
      column: 'VARCHAR(5)',
      type: 'text',
      good: 'short',
      bad: 'too long',
      typeShown: /varchar\(5\)/,
      fixed: 'VARCHAR(20)',
    },
    {
      what: 'an int needing bigint',
      column: 'INT',
      type: 'int',
      good: 7,
      bad: 3000000000,
      typeShown: /int/,
      fixed: 'BIGINT',
    },
    {
      what: 'out of range for DECIMAL(4,2)',
      column: 'DECIMAL(4,2)',
      type: 'decimal',
      good: '1.50',
      bad: '123.45',
      typeShown: /decimal\(4,2\)/,
      fixed: 'DECIMAL(10,2)',
    },
    {
      what: 'NULL into NOT NULL',
      column: 'VARCHAR(10) NOT NULL',
      type: 'text',
      good: 'x',
      bad: null,
      shown: 'NULL',
      typeShown: /NOT NULL/,
      fixed: 'VARCHAR(10) NULL',
    },
  ],
  sqlite: [
    {
      what: 'NULL into NOT NULL',
      column: 'TEXT NOT NULL',
      type: 'text',
      good: 'x',
      bad: null,
      shown: 'NULL',
      typeShown: /NOT NULL/,
      fixed: '',
    },
    {
      what: 'a value its CHECK refuses',
      column: 'INTEGER CHECK (c < 100)',
      type: 'int',
      good: 7,
      bad: 1000,
      typeShown: /CHECK/,
      fixed: '',
    },
  ],
};

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function alterColumn(db: Db, table: string, type: string): Promise<void> {
  if (db.engine === 'pg') {
    await db.exec(`ALTER TABLE ${table} ALTER COLUMN c DROP NOT NULL`);
    await db.exec(`ALTER TABLE ${table} ALTER COLUMN c TYPE ${type}`);
  } else if (db.engine === 'mysql') {
    await db.exec(`ALTER TABLE ${table} MODIFY c ${type}`);
  } else {
    // SQLite cannot change a column: rebuild the table without the constraint.
    await db.exec(`CREATE TABLE ${table}_new (id INT PRIMARY KEY, c ${type || 'ANY'})`);
    await db.exec(`INSERT INTO ${table}_new SELECT * FROM ${table}`);
    await db.exec(`DROP TABLE ${table}`);
    await db.exec(`ALTER TABLE ${table}_new RENAME TO ${table}`);
  }
}

for (const engine of ['pg', 'mysql', 'sqlite'] as Engine[]) {
  describe(`${engine} replica: a value the replica column cannot take unchanged`, () => {
    let db: Db;
    beforeAll(async () => {
      if (s.available(engine)) db = await openDb(s, engine, `values_${engine}`);
    });
    afterAll(async () => db?.close());

    it.each(CASES[engine].map((c, i) => [c.what, c, i] as const))(
      '%s: exit 65 naming table, key, column, value and type; nothing applied; fixed, it goes on',
      async (_what, c, i) => {
        if (!s.available(engine)) return;
        const table = `v${i}`;
        await db.exec(`CREATE TABLE ${table} (id INT PRIMARY KEY, c ${c.column})`);
        const job = loadJob(db, '', `values${i}`);
        try {
          await job.delta(0, 1, [
            {
              name: table,
              key: ['id'],
              columns: cols('id:int', `c:${c.type}`),
              rows: [
                [1, c.good],
                [2, c.bad],
                [3, c.good],
              ],
            },
          ]);
          const r = runBin('deltasync-load', ['-c', job.config]);
          expect(r.code, r.stderr).toBe(65);
          const lines = r.stderr.trim().split('\n');
          expect(lines).toHaveLength(1);
          const line = lines[0]!;
          expect(line).toMatch(new RegExp(`'${table}'`));
          expect(line).toMatch(/\(id\)=\(2\)/);
          expect(line).toMatch(/column c\b/);
          expect(line).toMatch(new RegExp(escape(c.shown ?? String(c.bad))));
          expect(line).toMatch(c.typeShown);
          expect(await db.rows(`SELECT id FROM ${table}`)).toEqual([]);

          await alterColumn(db, table, c.fixed);
          const again = runBin('deltasync-load', ['-c', job.config]);
          expect(again.code, again.stderr).toBe(0);
          expect(await db.rows(`SELECT id FROM ${table} ORDER BY id`)).toEqual([[1], [2], [3]]);
        } finally {
          job.cleanup();
        }
      },
    );

    it('values that fit are never refused: blank and space-padded text into a CHAR column', async () => {
      if (!s.available(engine)) return;
      // pgbench_accounts.filler is character(84) of blanks: a PostgreSQL replica's check once
      // refused it, as character(n) drops trailing blanks when read back as text.
      const charType = engine === 'sqlite' ? 'TEXT' : 'CHAR(84)';
      await db.exec(`CREATE TABLE padded (id INT PRIMARY KEY, c ${charType})`);
      const job = loadJob(db, '', 'padded');
      try {
        const values = [' '.repeat(84), 'abc', 'abc   ', ''];
        await job.delta(0, 1, [
          {
            name: 'padded',
            key: ['id'],
            columns: cols('id:int', 'c:text'),
            rows: values.map((v, i) => [i + 1, v]),
          },
        ]);
        const r = runBin('deltasync-load', ['-c', job.config]);
        expect(r.code, r.stderr).toBe(0);
        expect(await db.rows('SELECT id FROM padded ORDER BY id')).toEqual([[1], [2], [3], [4]]);
      } finally {
        job.cleanup();
      }
    });

    it('a key that is not a primary key or unique index is refused (78)', async () => {
      if (!s.available(engine)) return;
      await db.exec('CREATE TABLE nokey (id INT, c VARCHAR(10))');
      const job = loadJob(db, '', 'nokey');
      try {
        const delta = [
          { name: 'nokey', key: ['id'], columns: cols('id:int', 'c:text'), rows: [[1, 'a']] },
        ];
        await job.delta(0, 1, delta);
        await job.delta(1, 2, delta);
        const r = runBin('deltasync-load', ['-c', job.config]);
        expect(r.code, r.stderr).toBe(78);
        expect(r.stderr).toMatch(/nokey.*primary key or unique index/);
        expect(await db.rows('SELECT id FROM nokey')).toEqual([]);
      } finally {
        job.cleanup();
      }
    });
  });
}

/** Sakila's store managers: two stores swap managers in one delta; manager_id is unique. */
describe.each(['pg', 'mysql', 'sqlite'] as Engine[])(
  '%s replica: a swap of unique values',
  (engine) => {
    it('applies where the constraint is deferrable or the rows are replaced, and is refused with what to change otherwise', async (ctx) => {
      if (!s.available(engine)) return ctx.skip();
      const db = await openDb(s, engine, `swap_${engine}`);
      try {
        const deferrable = engine === 'pg' ? ' DEFERRABLE INITIALLY IMMEDIATE' : '';
        await db.exec(
          `CREATE TABLE store (id INT PRIMARY KEY, manager_id INT, CONSTRAINT store_manager UNIQUE (manager_id))`,
        );
        await db.exec(
          `CREATE TABLE store2 (id INT PRIMARY KEY, manager_id INT, CONSTRAINT store2_manager UNIQUE (manager_id)${deferrable})`,
        );
        // A column of the replica's own: PostgreSQL cannot replace these rows, it upserts them.
        await db.exec(
          `CREATE TABLE store3 (id INT PRIMARY KEY, manager_id INT, note TEXT, CONSTRAINT store3_manager UNIQUE (manager_id))`,
        );
        const columns = cols('id:int', 'manager_id:int');
        for (const [name, table] of [
          ['plain', 'store'],
          ['deferrable', 'store2'],
          ['own', 'store3'],
        ] as const) {
          const job = loadJob(db, '', `swap_${name}`);
          try {
            await job.delta(0, 1, [
              {
                name: table,
                key: ['id'],
                columns,
                rows: [
                  [1, 1],
                  [2, 2],
                ],
              },
            ]);
            await job.delta(1, 2, [
              {
                name: table,
                key: ['id'],
                columns,
                rows: [
                  [1, 2],
                  [2, 1],
                ],
              },
            ]);
            const r = runBin('deltasync-load', ['-c', job.config]);
            if (engine === 'pg' && name !== 'own') {
              expect(r.code, r.stderr).toBe(0);
              expect(await db.rows(`SELECT id, manager_id FROM ${table} ORDER BY id`)).toEqual([
                [1, 2],
                [2, 1],
              ]);
            } else if (name !== 'deferrable' || engine === 'mysql') {
              // The upsert writes row by row; SQLite checks unique constraints row by row and
              // cannot defer them; nor can InnoDB.
              expect(r.code, r.stderr).toBe(65);
              expect(r.stderr.trim().split('\n')).toHaveLength(1);
              expect(r.stderr).toMatch(new RegExp(`${table}.*manager`));
              expect(r.stderr).toMatch(engine === 'pg' ? /DEFERRABLE/ : /unique/i);
              expect(await db.rows(`SELECT id, manager_id FROM ${table} ORDER BY id`)).toEqual([
                [1, 1],
                [2, 2],
              ]);
            }
          } finally {
            job.cleanup();
          }
        }
      } finally {
        await db.close();
      }
    });
  },
);
