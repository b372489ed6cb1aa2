/**
 * The cross-engine type matrix: for each source -> target pair, a table covering every hard value
 * is read with openSource(…).readChanges, passed through the COPY text codec as the part files
 * do (docs/format.md), applied with
 * openTarget(…).transaction(tx => tx.applyRows(…)), and read back with the target engine's own
 * text rendering, value by value.
 *
 * How time zones are carried:
 * - `timestamptz` is an instant and travels in UTC (`…T…Z`); the offset it was written with
 *   (+05:30 below) is not kept. PostgreSQL sessions run with TimeZone=UTC (this test even gives
 *   the database a default of Asia/Kolkata to prove it), MariaDB TIMESTAMP columns are stored in
 *   UTC with the session pinned to +00:00, SQLite text with an offset is converted to UTC by the
 *   adapter (text without one is taken as UTC).
 * - `timestamp` is wall-clock time without zone and travels unchanged.
 * - The Node process runs with TZ=America/St_Johns (UTC-03:30) so that any accidental use of
 *   local time shows up as a wrong value.
 * Fractions of a second: engines differ in trailing zeros ('.5' vs '.500000'), so times are
 * compared with trailing fraction zeros trimmed; every other value is compared exactly.
 */
process.env.TZ = 'America/St_Johns';

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, openTarget } from '../../src/db/index.js';
import { decodeLine, encodeRow } from '../../src/format/copy-text.js';
import type { DbConfig, WireRow, WireValue } from '../../src/db/types.js';
import { mysqlServer, pgServer } from '../helpers/databases.js';

type Engine = 'pg' | 'sqlite' | 'mysql';
// prettier-ignore
type Kind =
  | 'bigint' | 'decimal' | 'date' | 'time' | 'timestamp' | 'timestamptz' | 'binary' | 'json'
  | 'bool' | 'text' | 'float' | 'uuid';

/** A matrix column: its kind, its DDL per engine, and the engines that have it. */
interface Column {
  name: string;
  kind: Kind;
  ddl: Record<Engine, string>;
  only?: Engine[];
}

/** Canonical values: bigint/decimal/text as text, binary as hex, bool 'true'/'false'. */
type Value = string | number | null;

const LONG_TEXT = 'Lorem ipsum ü 😀 中文 '.repeat(40_000); // ~1 MB of UTF-8

// prettier-ignore
const COLUMNS: Column[] = [
  { name: 'id', kind: 'bigint', ddl: { pg: 'bigint PRIMARY KEY', sqlite: 'INTEGER PRIMARY KEY', mysql: 'BIGINT PRIMARY KEY' } },
  { name: 'log_id', kind: 'bigint', ddl: { pg: 'bigint', sqlite: 'BIGINT', mysql: 'BIGINT' } },
  { name: 'big', kind: 'bigint', ddl: { pg: 'bigint', sqlite: 'BIGINT', mysql: 'BIGINT' } },
  // SQLite stores DECIMAL with NUMERIC affinity, as a double: exact decimals need TEXT there.
  { name: 'dec', kind: 'decimal', ddl: { pg: 'numeric(38,10)', sqlite: 'TEXT', mysql: 'DECIMAL(38,10)' } },
  { name: 'd', kind: 'date', ddl: { pg: 'date', sqlite: 'DATE', mysql: 'DATE' } },
  { name: 't', kind: 'time', ddl: { pg: 'time(6)', sqlite: 'TIME', mysql: 'TIME(6)' } },
  { name: 'ts', kind: 'timestamp', ddl: { pg: 'timestamp(6)', sqlite: 'TIMESTAMP', mysql: 'DATETIME(6)' } },
  { name: 'tstz', kind: 'timestamptz', ddl: { pg: 'timestamptz', sqlite: 'TIMESTAMPTZ', mysql: 'TIMESTAMP(6) NULL' } },
  { name: 'bin', kind: 'binary', ddl: { pg: 'bytea', sqlite: 'BLOB', mysql: 'LONGBLOB' } },
  { name: 'j', kind: 'json', ddl: { pg: 'json', sqlite: 'JSON', mysql: 'JSON' } },
  { name: 'flag', kind: 'bool', ddl: { pg: 'boolean', sqlite: 'BOOLEAN', mysql: 'BOOLEAN' } },
  { name: 'uni', kind: 'text', ddl: { pg: 'text', sqlite: 'TEXT', mysql: 'TEXT' } },
  { name: 'maybe', kind: 'text', ddl: { pg: 'text', sqlite: 'TEXT', mysql: 'TEXT' } },
  { name: 'long', kind: 'text', ddl: { pg: 'text', sqlite: 'TEXT', mysql: 'LONGTEXT' } },
  { name: 'f', kind: 'float', ddl: { pg: 'double precision', sqlite: 'REAL', mysql: 'DOUBLE' } },
  { name: 'u', kind: 'uuid', ddl: { pg: 'uuid', sqlite: '', mysql: '' }, only: ['pg'] },
  { name: 'fspecial', kind: 'float', ddl: { pg: 'double precision', sqlite: '', mysql: '' }, only: ['pg'] },
];

/** Rows by column name; `tstz` is given with the offset it is written with. */
// prettier-ignore
const ROWS: Record<string, Value>[] = [
  {
    id: '1', log_id: '1', big: '9007199254740993', dec: '12345678901234567890123456.1234567890',
    d: '2024-02-29', t: '23:59:59.999999', ts: '2024-02-29 12:34:56.123456',
    tstz: '2024-02-29 12:34:56.654321+05:30', bin: '00ff00108000ff',
    j: '{"big": 12345678901234567890123, "nested": {"a": [1, 2.5, {"b": null}], "s": "é😀\\n"}}',
    flag: 'true', uni: 'héllo wörld 😀 中文 \t tab \n newline \r cr \\ backslash \\N "quote"',
    maybe: '', long: LONG_TEXT, f: 0.1, u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', fspecial: 'NaN',
  },
  {
    id: '2', log_id: '2', big: '-9223372036854775808', dec: '-0.0000000001', d: '1970-01-01',
    t: '00:00:00', ts: '1999-12-31 23:59:59', tstz: '2000-01-01 00:00:00+00:00', bin: '',
    j: '[]', flag: 'false', uni: '', maybe: null, long: '', f: -2.5e-300, u: null,
    fspecial: 'Infinity',
  },
  {
    id: '3', log_id: '3', big: '9223372036854775807', dec: null, d: null, t: null, ts: null,
    tstz: null, bin: null, j: null, flag: null, uni: null, maybe: null, long: null, f: null,
    u: null, fspecial: '-Infinity',
  },
];

/** '12:00:00.500000' -> '12:00:00.5', '…:00.000000Z' -> '…:00Z'. */
function trimFraction(s: string): string {
  return s.replace(/\.(\d*?)0*(Z?)$/, (_, digits: string, z: string) =>
    digits ? `.${digits}${z}` : z,
  );
}

/** '2024-02-29 12:34:56.654321+05:30' -> '2024-02-29T07:04:56.654321Z'. */
function utcInstant(s: string): string {
  const m = /^(.{19})(\.\d+)?([+-]\d\d):(\d\d)$/.exec(s)!;
  const [, local, fraction = '', hours, minutes] = m;
  const sign = hours!.startsWith('-') ? -1 : 1;
  const offsetMs = sign * (Math.abs(Number(hours)) * 60 + Number(minutes)) * 60_000;
  const utc = new Date(Date.parse(`${local!.replace(' ', 'T')}Z`) - offsetMs);
  return `${utc.toISOString().slice(0, 19)}${fraction}Z`;
}

/** The value a reader must put on the wire, in comparable form. */
function expectedWire(kind: Kind, v: Value): WireValue {
  if (v === null) return null;
  switch (kind) {
    case 'binary':
      return Buffer.from(v as string, 'hex').toString('base64');
    case 'bool':
      return v === 'true';
    case 'float':
      return v;
    case 'time':
    case 'timestamp':
      return trimFraction(v as string);
    case 'timestamptz':
      return trimFraction(utcInstant(v as string));
    default:
      return v;
  }
}

/** A value as read back through the target's own text rendering, in comparable form. */
function expectedText(kind: Kind, v: Value): string | number | null {
  if (v === null) return null;
  if (kind === 'float') return typeof v === 'number' ? v : String(v);
  if (kind === 'timestamptz') return trimFraction(utcInstant(v as string));
  if (kind === 'time' || kind === 'timestamp') return trimFraction(v as string);
  return v as string;
}

function comparableWire(kind: Kind, v: WireValue): WireValue {
  return typeof v === 'string' &&
    (kind === 'time' || kind === 'timestamp' || kind === 'timestamptz')
    ? trimFraction(v)
    : v;
}

/** How to create, fill and read back the matrix table on one engine. */
interface Side {
  engine: Engine;
  config: DbConfig;
  create(table: string, columns: Column[]): Promise<void>;
  insert(table: string, columns: Column[], rows: Record<string, Value>[]): Promise<void>;
  /** Every column as the engine renders it, normalised to expectedText's form, ordered by id. */
  readBack(table: string, columns: Column[]): Promise<(string | number | null)[][]>;
}

function normaliseText(kind: Kind, v: unknown): string | number | null {
  if (v === null || v === undefined) return null;
  const s = String(v);
  if (kind === 'float')
    return Number.isNaN(Number(s)) || !Number.isFinite(Number(s)) ? s : Number(s);
  if (kind === 'bool') return s === '1' || s === 'true' ? 'true' : 'false';
  if (kind === 'time' || kind === 'timestamp' || kind === 'timestamptz') return trimFraction(s);
  return s;
}

async function pgSide(url: string): Promise<Side & { end(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`SET TimeZone = 'UTC'; SET extra_float_digits = 3`);
  const render = (c: Column) => {
    const col = `"${c.name}"`;
    if (c.kind === 'binary') return `encode(${col}, 'hex')`;
    if (c.kind === 'timestamptz') return `to_char(${col}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
    return `${col}::text`;
  };
  return {
    engine: 'pg',
    config: { client: 'pg', connection: url },
    async create(table, columns) {
      await client.query(
        `CREATE TABLE ${table} (${columns.map((c) => `"${c.name}" ${c.ddl.pg}`).join(', ')})`,
      );
    },
    async insert(table, columns, rows) {
      const sql = `INSERT INTO ${table} (${columns.map((c) => `"${c.name}"`).join(', ')})
                   VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`;
      for (const row of rows) {
        await client.query(
          sql,
          columns.map((c) => {
            const v = row[c.name] ?? null;
            if (v === null) return null;
            return c.kind === 'binary' ? Buffer.from(v as string, 'hex') : String(v);
          }),
        );
      }
    },
    async readBack(table, columns) {
      const { rows } = await client.query({
        text: `SELECT ${columns.map(render).join(', ')} FROM ${table} ORDER BY id`,
        rowMode: 'array',
      });
      return (rows as unknown[][]).map((r) => r.map((v, i) => normaliseText(columns[i]!.kind, v)));
    },
    end: () => client.end(),
  };
}

function sqliteSide(filename: string): Side & { end(): Promise<void> } {
  const db = new Database(filename);
  return {
    engine: 'sqlite',
    config: { client: 'sqlite', connection: filename },
    async create(table, columns) {
      db.exec(
        `CREATE TABLE ${table} (${columns.map((c) => `"${c.name}" ${c.ddl.sqlite}`).join(', ')})`,
      );
    },
    async insert(table, columns, rows) {
      const stmt = db.prepare(`INSERT INTO ${table} VALUES (${columns.map(() => '?').join(', ')})`);
      for (const row of rows) {
        stmt.run(
          columns.map((c) => {
            const v = row[c.name] ?? null;
            if (v === null) return null;
            if (c.kind === 'bigint') return BigInt(v);
            if (c.kind === 'bool') return v === 'true' ? 1 : 0;
            if (c.kind === 'binary') return Buffer.from(v as string, 'hex');
            return v;
          }),
        );
      }
    },
    async readBack() {
      throw new Error('SQLite is only a source in this matrix');
    },
    end: async () => void db.close(),
  };
}

async function mysqlSide(url: string): Promise<Side & { end(): Promise<void> }> {
  const mysql = await import('mysql2/promise');
  const conn = await mysql.createConnection({
    uri: url,
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    jsonStrings: true,
  });
  await conn.query(`SET time_zone = '+00:00'`);
  const render = (c: Column) => {
    const col = `\`${c.name}\``;
    if (c.kind === 'binary') return `LOWER(HEX(${col}))`;
    if (c.kind === 'timestamptz') return `DATE_FORMAT(${col}, '%Y-%m-%dT%H:%i:%s.%fZ')`;
    if (c.kind === 'text' || c.kind === 'json') return col;
    return `CAST(${col} AS CHAR)`;
  };
  return {
    engine: 'mysql',
    config: { client: 'mysql', connection: url },
    async create(table, columns) {
      await conn.query(
        `CREATE TABLE ${table} (${columns.map((c) => `\`${c.name}\` ${c.ddl.mysql}`).join(', ')})`,
      );
    },
    async insert(table, columns, rows) {
      // MariaDB takes no offsets in datetime literals: CONVERT_TZ applies the one we wrote.
      const values = columns.map((c) =>
        c.kind === 'timestamptz' ? `CONVERT_TZ(?, ?, '+00:00')` : '?',
      );
      const sql = `INSERT INTO ${table} VALUES (${values.join(', ')})`;
      for (const row of rows) {
        const params = columns.flatMap((c): (string | number | Buffer | null)[] => {
          const v = row[c.name] ?? null;
          if (c.kind === 'timestamptz') {
            if (v === null) return [null, '+00:00'];
            const text = v as string;
            return [text.slice(0, -6), text.slice(-6)];
          }
          if (v === null) return [null];
          if (c.kind === 'bool') return [v === 'true' ? 1 : 0];
          if (c.kind === 'binary') return [Buffer.from(v as string, 'hex')];
          return [v];
        });
        await conn.execute(sql, params);
      }
    },
    async readBack(table, columns) {
      const [rows] = await conn.query({
        sql: `SELECT ${columns.map(render).join(', ')} FROM ${table} ORDER BY id`,
        rowsAsArray: true,
      });
      return (rows as unknown[][]).map((r) =>
        r.map((v, i) =>
          normaliseText(columns[i]!.kind, Buffer.isBuffer(v) ? v.toString('utf8') : v),
        ),
      );
    },
    end: () => conn.end(),
  };
}

const pgTest = await pgServer();
const mysqlTest = await mysqlServer();
const sqliteDir = mkdtempSync(join(tmpdir(), 'deltasync-matrix-'));
const sides: Partial<Record<Engine, Side & { end(): Promise<void> }>> = {};

const PAIRS: [Engine, Engine][] = [
  ['pg', 'pg'],
  ['sqlite', 'pg'],
  ['pg', 'mysql'],
  ['mysql', 'pg'],
];

function skipReason(source: Engine, target: Engine): string | undefined {
  for (const e of [source, target]) {
    if (e === 'pg' && !pgTest.available) return pgTest.reason;
    if (e === 'mysql' && !mysqlTest.available) return mysqlTest.reason;
  }
  return undefined;
}

beforeAll(async () => {
  if (pgTest.available) {
    const url = await pgTest.fresh('typematrix');
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    // The adapter must not depend on the database's (or role's) own time zone.
    await admin.query(
      `ALTER DATABASE ${new URL(url).pathname.slice(1)} SET TimeZone = 'Asia/Kolkata'`,
    );
    await admin.end();
    sides.pg = await pgSide(url);
  }
  if (mysqlTest.available) sides.mysql = await mysqlSide(await mysqlTest.fresh('typematrix'));
  sides.sqlite = sqliteSide(join(sqliteDir, 'source.db'));
});

afterAll(async () => {
  for (const side of Object.values(sides)) await side.end();
  await pgTest.cleanup();
  await mysqlTest.cleanup();
  rmSync(sqliteDir, { recursive: true, force: true });
});

describe.each(PAIRS)('type matrix %s -> %s', (sourceEngine, targetEngine) => {
  const reason = skipReason(sourceEngine, targetEngine);
  const columns = COLUMNS.filter(
    (c) => !c.only || (c.only.includes(sourceEngine) && c.only.includes(targetEngine)),
  );
  const from = `src_${sourceEngine}_to_${targetEngine}`;
  const table = `dst_${sourceEngine}_to_${targetEngine}`;

  it.skipIf(reason !== undefined)(`carries every value exactly ${reason ?? ''}`, async () => {
    const source = sides[sourceEngine]!;
    const target = sides[targetEngine]!;
    await source.create(from, columns);
    await source.insert(from, columns, ROWS);
    await target.create(table, columns);

    const reader = await openSource(source.config);
    let wire: WireRow[];
    let delta;
    try {
      delta = await reader.columns(from);
      expect(delta.map((c) => c.name)).toEqual(columns.map((c) => c.name));
      const upTo = (await reader.maxLogId(from, 'log_id'))!;
      wire = [];
      const request = { table: from, columns: delta, logIdColumn: 'log_id', after: '0', upTo };
      const types = delta.map((c) => c.type);
      for await (const row of reader.readChanges(request)) {
        // What a part file does: one line of COPY text, and back.
        wire.push(decodeLine(encodeRow(row, types).slice(0, -1), types));
      }
    } finally {
      await reader.close();
    }

    // The reader's wire values, value by value.
    expect(wire).toHaveLength(ROWS.length);
    ROWS.forEach((row, r) => {
      columns.forEach((c, i) => {
        const got = comparableWire(c.kind, wire[r]![i]!);
        expect({ row: r + 1, column: c.name, value: got }).toEqual({
          row: r + 1,
          column: c.name,
          value: expectedWire(c.kind, row[c.name] ?? null),
        });
      });
    });

    const writer = await openTarget(target.config);
    try {
      async function* rows(): AsyncGenerator<WireRow> {
        yield* wire;
      }
      const applied = await writer.transaction((tx) =>
        tx.applyRows({ table, key: ['id'], columns: delta, rows: rows() }),
      );
      expect(applied).toBe(ROWS.length);
    } finally {
      await writer.close();
    }

    // The target's own rendering, value by value.
    const back = await target.readBack(table, columns);
    expect(back).toHaveLength(ROWS.length);
    ROWS.forEach((row, r) => {
      columns.forEach((c, i) => {
        expect({ row: r + 1, column: c.name, value: back[r]![i] }).toEqual({
          row: r + 1,
          column: c.name,
          value: expectedText(c.kind, row[c.name] ?? null),
        });
      });
    });
  });
});
