/** The SQL the PostgreSQL adapter builds, and its COPY stream framing, as pure functions. */
import { describe, expect, it } from 'vitest';
import { tableRef } from '../../src/db/pg/catalog.js';
import {
  copyRowBatches,
  readChangelogSql,
  readChangesSql,
  readKeysetSql,
  wireLiteral,
} from '../../src/db/pg/read.js';
import { captureDdl } from '../../src/db/pg/capture.js';
import { copyBatches, upsertSql, type UpsertPlan } from '../../src/db/pg/load.js';
import { copyDecoder, copyEncoder } from '../../src/db/pg/types.js';
import type { WireRow } from '../../src/db/types.js';
import { DeltaError } from '../../src/errors.js';

async function* chunksOf(...chunks: Buffer[]): AsyncGenerator<Buffer> {
  yield* chunks;
}

async function* rowsOf(rows: WireRow[]): AsyncGenerator<WireRow> {
  yield* rows;
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

describe('tableRef', () => {
  it('quotes names literally and applies the schema', () => {
    expect(tableRef('Users').sql).toBe('"Users"');
    expect(tableRef('users', 'sync').sql).toBe('"sync"."users"');
    expect(tableRef('app.users').sql).toBe('"app"."users"');
  });
});

describe('readChangesSql', () => {
  it('reads the columns in order between quoted bounds, ordered by logId', () => {
    const sql = readChangesSql(
      {
        table: 'users',
        columns: [
          { name: 'id', type: 'bigint' },
          { name: 'na"me', type: 'text' },
        ],
        logIdColumn: 'log_id',
        after: '10',
        upTo: "20'",
      },
      tableRef('users'),
    );
    expect(sql).toBe(
      `COPY (SELECT "id", "na""me" FROM "users" WHERE "log_id" > '10' AND "log_id" <= '20''' ORDER BY "log_id") TO STDOUT`,
    );
  });
});

describe('copyRowBatches', () => {
  it('joins rows and UTF-8 characters split across chunks', async () => {
    const bytes = Buffer.from('1\tünï 😀\n2\t\\N\n3\t\n');
    const cut = bytes.indexOf(Buffer.from('😀')) + 2; // inside the emoji
    const decoders = [copyDecoder('int'), copyDecoder('text')];
    const batches = await collect(
      copyRowBatches(
        chunksOf(bytes.subarray(0, cut), bytes.subarray(cut, cut + 1), bytes.subarray(cut + 1)),
        decoders,
      ),
    );
    expect(batches.flat()).toEqual([
      [1, 'ünï 😀'],
      [2, null],
      [3, ''],
    ]);
  });

  it('refuses output that stops in the middle of a row', async () => {
    await expect(
      collect(copyRowBatches(chunksOf(Buffer.from('1\n2')), [copyDecoder('int')])),
    ).rejects.toThrow(/middle of a row/);
  });
});

describe('copyBatches', () => {
  const encoders = [copyEncoder('bigint'), copyEncoder('text')];

  it('writes one tab-separated line per row', async () => {
    const batches = await collect(
      copyBatches(
        rowsOf([
          ['1', 'a\tb'],
          ['2', null],
        ]),
        encoders,
        't',
        { stopped: false },
      ),
    );
    expect(batches.map((b) => b.rows)).toEqual([2]);
    expect(Buffer.concat(batches[0]!.chunks).toString()).toBe('1\ta\\tb\n2\t\\N\n');
  });

  it('refuses a row of the wrong width with a DeltaError', async () => {
    const err = await collect(
      copyBatches(rowsOf([['1']]), encoders, 't', { stopped: false }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as Error).message).toMatch(/row 1 for table 't' has 1 values, expected 2/);
  });

  it('cuts large inputs into several batches holding every row', async () => {
    const big = 'z'.repeat(1 << 20);
    const rows: WireRow[] = Array.from({ length: 20 }, (_, i) => [String(i), big]);
    const batches = await collect(copyBatches(rowsOf(rows), encoders, 't', { stopped: false }));
    expect(batches.length).toBeGreaterThan(1);
    expect(batches.reduce((n, b) => n + b.rows, 0)).toBe(20);
  });
});

describe('upsertSql', () => {
  const plan: UpsertPlan = {
    target: '"users"',
    stage: 'pg_temp."s"',
    columns: ['id', 'name', 'doc'],
    key: ['id'],
    compareAsText: new Set(['doc']),
  };

  it('updates only the non-key delta columns, and only rows that differ', () => {
    expect(upsertSql(plan, false)).toBe(
      'INSERT INTO "users" AS t ("id", "name", "doc") SELECT "id", "name", "doc" FROM pg_temp."s" ' +
        'ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "doc" = EXCLUDED."doc" ' +
        'WHERE (t."name", t."doc"::text) IS DISTINCT FROM (EXCLUDED."name", EXCLUDED."doc"::text)',
    );
  });

  it('keeps the last staged row of each key when deduplicating', () => {
    expect(upsertSql(plan, true)).toContain(
      'SELECT DISTINCT ON ("id") "id", "name", "doc" FROM pg_temp."s" ORDER BY "id", "__deltasync_seq" DESC',
    );
  });

  it('does nothing on conflict when every column is a key column', () => {
    expect(upsertSql({ ...plan, columns: ['id'], compareAsText: new Set() }, false)).toMatch(
      /ON CONFLICT \("id"\) DO NOTHING$/,
    );
  });
});

describe('readKeysetSql', () => {
  const columns = [
    { name: 'at', type: 'timestamptz' as const },
    { name: 'id', type: 'bigint' as const },
  ];
  const base = { table: 't', columns, tsColumn: 'at', key: ['id'], upTo: '2024-01-01T10:30:00Z' };

  it('continues after a (ts, key) cursor with a row comparison, up to the horizon', () => {
    const sql = readKeysetSql(
      { ...base, after: { ts: '2024-01-01T10:00:00Z', key: ['7'] }, limit: 100 },
      tableRef('t'),
    );
    expect(sql).toContain(
      `WHERE "at" <= '2024-01-01T10:30:00Z' AND ("at", "id") > ('2024-01-01T10:00:00Z', '7')`,
    );
    expect(sql).toContain('ORDER BY "at", "id" LIMIT 100');
  });

  it('starts at a configured time when the cursor has no key, and from the start without one', () => {
    expect(
      readKeysetSql({ ...base, after: { ts: '2024-01-01T00:00:00Z', key: [] } }, tableRef('t')),
    ).toContain(`AND "at" >= '2024-01-01T00:00:00Z'`);
    expect(readKeysetSql({ ...base, after: null }, tableRef('t'))).not.toContain(' > (');
  });

  it('writes binary key values as decoded base64', () => {
    expect(wireLiteral('AP8=', { name: 'b', type: 'binary' })).toBe(`decode('AP8=', 'base64')`);
    expect(wireLiteral(null, { name: 'b', type: 'text' })).toBe('NULL');
  });
});

describe('readChangelogSql', () => {
  it('casts the logged key texts to the key types and joins the current rows', () => {
    const sql = readChangelogSql(
      {
        changelog: 'ds_log',
        table: 'orders',
        columns: [
          { name: 'id', type: 'bigint', nativeType: 'bigint' },
          { name: 'name', type: 'text', nativeType: 'text' },
        ],
        key: ['id'],
        after: '10',
        upTo: '20',
      },
      tableRef('ds_log'),
      tableRef('orders'),
      `log_id > '10'`,
    );
    expect(sql).toContain(`WHERE table_name = 'orders'`);
    expect(sql).toContain(`AND log_id > '10'`);
    expect(sql).toContain(`(key_values::json ->> 0)::bigint AS k0`);
    expect(sql).toContain(`LEFT JOIN "orders" t ON t."id" = k.k0`);
    expect(sql).toContain('ORDER BY k.last');
  });
});

describe('captureDdl', () => {
  it('creates the log, and per table a trigger logging old keys of deletes and key changes', () => {
    const ddl = captureDdl({
      changelog: 'ds_log',
      tables: [{ table: 'orders', key: [{ name: 'id', type: 'bigint' }] }],
    });
    expect(ddl.install[0]).toMatch(
      /CREATE TABLE IF NOT EXISTS "ds_log" \(\s+log_id bigserial PRIMARY KEY/,
    );
    const fn = ddl.install.find((s) => s.startsWith('CREATE OR REPLACE FUNCTION'))!;
    expect(fn).toContain('IF (OLD."id") IS DISTINCT FROM (NEW."id")');
    expect(fn).toContain(`json_build_array(OLD."id"::text)::text`);
    expect(ddl.install.at(-1)).toContain('AFTER INSERT OR UPDATE OR DELETE ON "orders"');
    expect(ddl.remove).toEqual([
      'DROP TRIGGER IF EXISTS "ds_log_orders" ON "orders"',
      'DROP FUNCTION IF EXISTS "ds_log_orders"()',
      'DROP TABLE IF EXISTS "ds_log"',
    ]);
  });

  it("keeps long object names within PostgreSQL's 63 bytes, distinct by a hash", () => {
    const long = 'x'.repeat(70);
    const ddl = captureDdl({
      changelog: 'ds_log',
      tables: [{ table: long, key: [{ name: 'id', type: 'int' }] }],
    });
    const name = /DROP TRIGGER IF EXISTS "([^"]+)"/.exec(ddl.remove[0]!)![1]!;
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).toMatch(/_[0-9a-f]{8}$/);
  });
});
