/**
 * The engines the conformance suite loops over, the way Kysely's tests loop over its dialects:
 * every engine whose server is reachable (PostgreSQL, MariaDB/MySQL, SQLite always, SQL Server
 * when DELTASYNC_TEST_MSSQL_URL is set). An unreachable PostgreSQL or MariaDB is a skip with a
 * printed reason, or a failure under DELTASYNC_REQUIRE_DBS=1 (see test/helpers/databases.ts).
 *
 * Each engine gives a throwaway database and the few dialect pieces a test needs to write its
 * own DDL and fill tables; everything the suite asserts goes through the engine contract
 * (src/db/types.ts), so one expectation holds for every engine.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import type { DbConfig, WireRow } from '../../../src/db/types.js';
import { mssqlServer, mysqlServer, pgServer, type TestServer } from '../../helpers/databases.js';

export type EngineId = 'pg' | 'mysql' | 'sqlite' | 'mssql';

/** One fresh database of an engine, with an admin session of its own. */
export interface TestDb {
  engine: EngineId;
  config: DbConfig;
  exec(sql: string): Promise<void>;
  rows(sql: string): Promise<unknown[][]>;
  /** Ends every other session on this database (a connection lost mid-transaction). */
  killOthers(): Promise<void>;
  close(): Promise<void>;
}

/** Column types and SQL fragments, per engine, for the tests' own DDL and data. */
export interface Dialect {
  /** A 64-bit integer: logical `bigint` on every engine. */
  bigint: string;
  /** A short string that may be a key. */
  varchar(n: number): string;
  /** Unbounded text. */
  text: string;
  decimal: string;
  bool: string;
  /** An instant (logical `timestamptz`). */
  timestamptz: string;
  /** Appended to CREATE TABLE (MariaDB: the transactional engine). */
  tableSuffix: string;
  /** A FROM item yielding the integers 1..n as column `g`. */
  series(n: number): string;
  concat(...parts: string[]): string;
  /** `n` copies of one character. */
  repeat(char: string, n: number): string;
  /** A literal of an instant given as ISO UTC ('2024-01-01T10:00:00.5Z'). */
  instant(iso: string): string;
}

export interface EngineUnderTest {
  id: EngineId;
  name: string;
  server: TestServer | null;
  available: boolean;
  dialect: Dialect;
  fresh(label: string): Promise<TestDb>;
  /** A config for a server nothing listens on, with a password that must never be shown. */
  unreachable: DbConfig | null;
  /** A config naming a database that does not exist on a reachable server. */
  unknownDatabase(db: TestDb): DbConfig | null;
}

const pgDialect: Dialect = {
  bigint: 'bigint',
  varchar: (n) => `varchar(${n})`,
  text: 'text',
  decimal: 'numeric(12,2)',
  bool: 'boolean',
  timestamptz: 'timestamptz',
  tableSuffix: '',
  series: (n) => `generate_series(1, ${n}) AS s(g)`,
  concat: (...parts) => `(${parts.join(' || ')})`,
  repeat: (c, n) => `repeat('${c}', ${n})`,
  instant: (iso) => `'${iso}'`,
};

const mysqlDialect: Dialect = {
  bigint: 'BIGINT',
  varchar: (n) => `VARCHAR(${n})`,
  text: 'LONGTEXT',
  decimal: 'DECIMAL(12,2)',
  bool: 'TINYINT(1)',
  timestamptz: 'TIMESTAMP(6) NULL',
  tableSuffix: ' ENGINE=InnoDB',
  // MariaDB's sequence engine (the CI server is MariaDB).
  series: (n) => `(SELECT seq AS g FROM seq_1_to_${n}) s`,
  concat: (...parts) => `CONCAT(${parts.join(', ')})`,
  repeat: (c, n) => `REPEAT('${c}', ${n})`,
  instant: (iso) => `'${iso.replace('T', ' ').replace('Z', '')}'`,
};

const sqliteDialect: Dialect = {
  bigint: 'BIGINT',
  varchar: (n) => `VARCHAR(${n})`,
  text: 'TEXT',
  decimal: 'NUMERIC',
  bool: 'BOOLEAN',
  timestamptz: 'TIMESTAMPTZ',
  tableSuffix: '',
  series: (n) =>
    `(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ${n}) SELECT g FROM s)`,
  concat: (...parts) => `(${parts.join(' || ')})`,
  repeat: (c, n) => `substr(replace(hex(zeroblob(${Math.ceil(n / 2)})), '0', '${c}'), 1, ${n})`,
  // The stored form SQLite's timestamp mode compares cursors with (README), six-digit fraction.
  instant: (iso) => {
    const [date, time] = iso.replace('Z', '').split('T');
    const [whole, fraction = ''] = time!.split('.');
    return `'${date} ${whole}.${fraction.padEnd(6, '0')}'`;
  },
};

const mssqlDialect: Dialect = {
  bigint: 'bigint',
  varchar: (n) => `nvarchar(${n})`,
  text: 'nvarchar(max)',
  decimal: 'decimal(12,2)',
  bool: 'bit',
  timestamptz: 'datetimeoffset(6)',
  tableSuffix: '',
  series: (n) =>
    `(SELECT TOP (${n}) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS g FROM sys.all_objects a CROSS JOIN sys.all_objects b) s`,
  concat: (...parts) => `CONCAT(${parts.join(', ')})`,
  repeat: (c, n) => `REPLICATE(CAST('${c}' AS nvarchar(max)), ${n})`,
  instant: (iso) => `'${iso}'`,
};

async function pgDb(server: TestServer, label: string): Promise<TestDb> {
  const url = await server.fresh(label);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return {
    engine: 'pg',
    config: { client: 'pg', connection: url },
    exec: async (sql) => void (await client.query(sql)),
    rows: async (sql) => (await client.query({ text: sql, rowMode: 'array' })).rows as unknown[][],
    killOthers: async () =>
      void (await client.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()`,
      )),
    close: () => client.end(),
  };
}

async function mysqlDb(server: TestServer, label: string): Promise<TestDb> {
  const url = await server.fresh(label);
  const conn = await mysql.createConnection({
    uri: url,
    timezone: 'Z',
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    multipleStatements: true,
  });
  await conn.query("SET time_zone = '+00:00'");
  return {
    engine: 'mysql',
    config: { client: 'mysql', connection: url },
    exec: async (sql) => void (await conn.query(sql)),
    rows: async (sql) => (await conn.query({ sql, rowsAsArray: true }))[0] as unknown[][],
    killOthers: async () => {
      const [ids] = await conn.query(
        'SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()',
      );
      for (const { ID } of ids as { ID: number }[]) await conn.query(`KILL ${ID}`);
    },
    close: () => conn.end(),
  };
}

async function sqliteDb(label: string): Promise<TestDb> {
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-conformance-'));
  const file = join(dir, `${label}.sqlite`);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  return {
    engine: 'sqlite',
    config: { client: 'sqlite', connection: { filename: file } },
    exec: async (sql) => void db.exec(sql),
    rows: async (sql) => db.prepare(sql).raw(true).all() as unknown[][],
    killOthers: () => Promise.reject(new Error('SQLite has no sessions to end')),
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function mssqlDb(server: TestServer, label: string): Promise<TestDb> {
  const connection = await server.fresh(label);
  const { default: sql } = await import('mssql');
  const { poolConfig } = await import('../../../src/db/mssql/connection.js');
  const pool = await new sql.ConnectionPool(poolConfig(connection)).connect();
  // As the SQL Server suites do: readers see the last committed version instead of waiting on
  // writers, and the source reads each delta in one SNAPSHOT transaction (mssql/window.ts).
  await pool
    .request()
    .batch(`ALTER DATABASE CURRENT SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE`);
  await pool.request().batch(`ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON`);
  return {
    engine: 'mssql',
    config: { client: 'mssql', connection },
    exec: async (text) => void (await pool.request().batch(text)),
    rows: async (text) => {
      const result = await pool.request().query(text);
      return (result.recordset ?? []).map((r) => Object.values(r as object));
    },
    killOthers: async () => {
      const result = await pool
        .request()
        .query(
          `SELECT session_id FROM sys.dm_exec_sessions WHERE database_id = DB_ID() AND session_id <> @@SPID`,
        );
      for (const { session_id } of result.recordset as { session_id: number }[])
        await pool.request().batch(`KILL ${session_id}`);
    },
    close: () => pool.close(),
  };
}

/**
 * `DELTASYNC_TEST_ENGINES=mssql,sqlite` runs the suite over those engines only (the SQL Server
 * workflow has no PostgreSQL or MariaDB); unset, every engine.
 */
const WANTED = process.env.DELTASYNC_TEST_ENGINES?.split(',').map((e) => e.trim());

function notWanted(engine: EngineId): TestServer {
  const reason = `${engine} left out by DELTASYNC_TEST_ENGINES=${process.env.DELTASYNC_TEST_ENGINES}`;
  return {
    available: false,
    reason,
    fresh: () => Promise.reject(new Error(reason)),
    cleanup: () => Promise.resolve(),
  };
}

const server = (engine: EngineId, connect: () => Promise<TestServer>) =>
  !WANTED || WANTED.includes(engine) ? connect() : Promise.resolve(notWanted(engine));

/** Every engine, reachable or not: `describe.each(ENGINES)` and skip the unavailable ones. */
export async function engines(): Promise<EngineUnderTest[]> {
  const pgs = await server('pg', pgServer);
  const mys = await server('mysql', mysqlServer);
  const mss = await server('mssql', mssqlServer);
  const sqliteWanted = !WANTED || WANTED.includes('sqlite');
  const withPath = (url: string, db: string) => {
    const u = new URL(url);
    u.pathname = `/${db}`;
    return u.toString();
  };
  return [
    {
      id: 'pg',
      name: 'PostgreSQL',
      server: pgs,
      available: pgs.available,
      dialect: pgDialect,
      fresh: (label) => pgDb(pgs, label),
      unreachable: { client: 'pg', connection: 'postgres://someone:s3cret@127.0.0.1:1/somedb' },
      unknownDatabase: (db) => ({
        client: 'pg',
        connection: withPath(db.config.connection as string, 'dstest_no_such_database'),
      }),
    },
    {
      id: 'mysql',
      name: 'MariaDB',
      server: mys,
      available: mys.available,
      dialect: mysqlDialect,
      fresh: (label) => mysqlDb(mys, label),
      unreachable: { client: 'mysql', connection: 'mysql://root:s3cret@127.0.0.1:1/somedb' },
      unknownDatabase: (db) => ({
        client: 'mysql2',
        connection: withPath(db.config.connection as string, 'dstest_no_such_database'),
      }),
    },
    {
      id: 'sqlite',
      name: 'SQLite',
      server: sqliteWanted ? null : notWanted('sqlite'),
      available: sqliteWanted,
      dialect: sqliteDialect,
      fresh: sqliteDb,
      unreachable: null,
      unknownDatabase: () => ({
        client: 'sqlite',
        connection: { filename: join(tmpdir(), 'deltasync-no-such-dir', 'none.sqlite') },
      }),
    },
    {
      id: 'mssql',
      name: 'SQL Server',
      server: mss,
      available: mss.available,
      dialect: mssqlDialect,
      fresh: (label) => mssqlDb(mss, label),
      unreachable: {
        client: 'mssql',
        connection: 'mssql://sa:s3cret@127.0.0.1:1/somedb?encrypt=false',
      },
      // The adapter names the database in its error either way; a URL with another path will do.
      unknownDatabase: (db) => {
        const c = db.config.connection as string;
        return /^(mssql|sqlserver):/i.test(c)
          ? { client: 'mssql', connection: withPath(c, 'dstest_no_such_database') }
          : null;
      },
    },
  ];
}

/** Drops every database the engines' servers made for this file. */
export async function cleanup(list: EngineUnderTest[]): Promise<void> {
  for (const e of list) await e.server?.cleanup();
}

export async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

export async function* rowsOf(rows: WireRow[], fail?: { at: number; error: Error }) {
  for (let i = 0; i < rows.length; i++) {
    if (fail && i === fail.at) throw fail.error;
    yield rows[i]!;
  }
  if (fail && fail.at >= rows.length) throw fail.error;
}

/** Long strings shown by length and ends, so a failing comparison prints something readable. */
export function readable(rows: WireRow[]): WireRow[] {
  return rows.map((row) =>
    row.map((v) =>
      typeof v === 'string' && v.length > 200
        ? `<${v.length} chars …${JSON.stringify(v.slice(-8))}>`
        : v,
    ),
  );
}
