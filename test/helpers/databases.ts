/**
 * Real database servers for integration tests.
 *
 * Each suite asks for a server with `pgServer()` / `mysqlServer()` / `mssqlServer()`. When the
 * server cannot be reached the suite is skipped with a line saying why, unless
 * DELTASYNC_REQUIRE_DBS=1 (set by .ci/run), in which case the suite fails: CI must never pass by
 * skipping the databases it is supposed to test.
 *
 * Each test file gets a fresh database of its own (`fresh()`), dropped when the file is done.
 */
import { randomBytes } from 'node:crypto';

export const PG_URL =
  process.env.DELTASYNC_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const MYSQL_URL = process.env.DELTASYNC_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
/** SQL Server cannot run on our machines: its suite runs only when this is set. */
export const MSSQL_URL = process.env.DELTASYNC_TEST_MSSQL_URL;
export const REQUIRE_DBS = process.env.DELTASYNC_REQUIRE_DBS === '1';

export interface TestServer {
  /** False when the server could not be reached and the suite should skip. */
  available: boolean;
  /** Why the suite is skipped, printed once. */
  reason?: string;
  /** Creates an empty database and returns its connection URL. */
  fresh(label: string): Promise<string>;
  /** Drops every database this process created. */
  cleanup(): Promise<void>;
}

function uniqueName(label: string): string {
  return `dstest_${label
    .replace(/[^a-z0-9]/gi, '')
    .toLowerCase()
    .slice(0, 20)}_${randomBytes(4).toString('hex')}`;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

function unavailable(engine: string, url: string, err: unknown): TestServer {
  const reason = `${engine} integration suite SKIPPED: cannot connect to ${url} (${(err as Error).message}); start the server or set the URL variable`;
  if (REQUIRE_DBS) {
    throw new Error(`${reason} — DELTASYNC_REQUIRE_DBS=1 forbids skipping`);
  }
  console.warn(reason);
  return {
    available: false,
    reason,
    fresh: () => Promise.reject(new Error(reason)),
    cleanup: () => Promise.resolve(),
  };
}

export async function pgServer(): Promise<TestServer> {
  const { default: pg } = await import('pg');
  const admin = new pg.Client({ connectionString: PG_URL });
  try {
    await admin.connect();
  } catch (err) {
    return unavailable('PostgreSQL', PG_URL, err);
  }
  const created: string[] = [];
  return {
    available: true,
    async fresh(label) {
      const name = uniqueName(label);
      await admin.query(`CREATE DATABASE ${name}`);
      created.push(name);
      return withDatabase(PG_URL, name);
    },
    async cleanup() {
      for (const name of created) {
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      }
      await admin.end();
    },
  };
}

export async function mysqlServer(): Promise<TestServer> {
  const mysql = await import('mysql2/promise');
  let admin: Awaited<ReturnType<typeof mysql.createConnection>>;
  try {
    admin = await mysql.createConnection(MYSQL_URL);
  } catch (err) {
    return unavailable('MariaDB/MySQL', MYSQL_URL, err);
  }
  const created: string[] = [];
  return {
    available: true,
    async fresh(label) {
      const name = uniqueName(label);
      await admin.query(`CREATE DATABASE ${name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
      created.push(name);
      return withDatabase(MYSQL_URL, name);
    },
    async cleanup() {
      for (const name of created) await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      await admin.end();
    },
  };
}

/**
 * The SQL Server connection with `database` in place of the one it names. Takes the adapter's two
 * string forms: a URL (`mssql://user:pass@host:1433/db?encrypt=false`) or an ADO string
 * (`Server=host,1433;Database=db;User Id=...`).
 */
function withMssqlDatabase(connection: string, database: string): string {
  if (/^(mssql|sqlserver):/i.test(connection)) {
    const u = new URL(connection);
    u.pathname = `/${database}`;
    u.searchParams.delete('database');
    return u.toString();
  }
  const rest = connection
    .split(';')
    .filter((part) => part.trim() !== '' && !/^\s*(database|initial catalog)\s*=/i.test(part));
  return [...rest, `Database=${database}`].join(';');
}

/** The connection for messages: never its password. */
function redactMssql(connection: string): string {
  return connection
    .replace(/^([a-z]+:\/\/[^:/@]*):[^@]*@/i, '$1:***@')
    .replace(/(password|pwd)\s*=[^;]*/gi, '$1=***');
}

/**
 * SQL Server: available only when DELTASYNC_TEST_MSSQL_URL is set (it cannot run on our machines,
 * so CI never requires it); once set, an unreachable server follows the same rules as the others.
 * The URL goes through the adapter's own parser, because mssql itself reads only ADO strings.
 */
export async function mssqlServer(): Promise<TestServer> {
  if (!MSSQL_URL) {
    const reason =
      'SQL Server integration suite SKIPPED: DELTASYNC_TEST_MSSQL_URL is not set (SQL Server cannot run on these machines)';
    console.warn(reason);
    return {
      available: false,
      reason,
      fresh: () => Promise.reject(new Error(reason)),
      cleanup: () => Promise.resolve(),
    };
  }
  const url = MSSQL_URL;
  const { default: sql } = await import('mssql');
  const { poolConfig } = await import('../../src/db/mssql/connection.js');
  let pool: InstanceType<typeof sql.ConnectionPool>;
  try {
    pool = await new sql.ConnectionPool(poolConfig(url)).connect();
  } catch (err) {
    return unavailable('SQL Server', redactMssql(url), err);
  }
  const created: string[] = [];
  return {
    available: true,
    async fresh(label) {
      const name = uniqueName(label);
      await pool.request().batch(`CREATE DATABASE [${name}]`);
      created.push(name);
      return withMssqlDatabase(url, name);
    },
    async cleanup() {
      for (const name of created) {
        await pool
          .request()
          .batch(
            `ALTER DATABASE [${name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE [${name}]`,
          );
      }
      await pool.close();
    },
  };
}
