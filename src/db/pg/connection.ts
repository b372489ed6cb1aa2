/**
 * Connecting to PostgreSQL, and turning driver errors into the errors an operator can act on:
 * anything that means "the server cannot be used right now" becomes an UnavailableError (exit 69)
 * naming user@host:port/database (never the password); a missing table or column a ConfigError.
 */
import type pg from 'pg';
import {
  ConfigError,
  DeltasyncError,
  LockTimeoutError,
  PrivilegeError,
  UnavailableError,
} from '../../errors.js';
import type { DbConfig } from '../types.js';
import { SESSION_SETTINGS } from './types.js';

/** A connection together with how to name it in messages. */
export interface PgConnection {
  client: pg.Client;
  /** `user@host:port/database`, for messages. */
  label: string;
  /** What the client was opened with, to open a helper connection (see cancelQuery). */
  config: pg.ClientConfig;
  /** The server process serving this connection. */
  pid: number;
  /** How long a statement waits for a lock (`lockTimeoutSeconds`), for messages. */
  lockTimeoutSeconds: number;
}

/** node-postgres, imported on the first connection (see importPg). */
let driver: Promise<typeof pg> | undefined;

function loadPg(): Promise<typeof pg> {
  driver ??= importPg();
  return driver;
}

/**
 * node-postgres asks, as it loads, whether it runs in a Cloudflare Worker. Node 21 and later
 * answer through `navigator.userAgent`; Node 20 has no `navigator`, so pg builds a `Response`
 * instead, which loads Node's whole fetch implementation (undici): about 50 ms of CPU in every
 * cron run, a quarter of what a run with nothing to do costs. While pg loads, Node 20 gets the
 * `navigator` that later versions have.
 */
async function importPg(): Promise<typeof pg> {
  const global = globalThis as { navigator?: unknown };
  const shim = global.navigator === undefined;
  if (shim) global.navigator = { userAgent: `Node.js/${process.versions.node.split('.')[0]}` };
  try {
    return (await import('pg')).default;
  } finally {
    if (shim) delete global.navigator;
  }
}

/** Without a timeout a cron run would hang on a black-holed host instead of failing. */
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** SQLSTATE classes and codes that mean the server (not our SQL) is the problem. */
const UNAVAILABLE_CLASSES = ['08', '28', '53', '57'];
const UNKNOWN_DATABASE = '3D000';
const INVALID_PASSWORD = '28P01';
const UNDEFINED_TABLE = '42P01';
const UNDEFINED_COLUMN = '42703';
const UNDEFINED_SCHEMA = '3F000';
const INSUFFICIENT_PRIVILEGE = '42501';
/** lock_not_available: `lock_timeout` expired (or NOWAIT found the lock taken). */
const LOCK_NOT_AVAILABLE = '55P03';

/** How long a statement waits for a lock when the config says nothing (`lockTimeoutSeconds`). */
export const DEFAULT_LOCK_TIMEOUT_SECONDS = 60;

/** Socket-level error codes from Node. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);

/** node-postgres reports a dropped or unusable connection with these messages and no code. */
const CONNECTION_MESSAGES = [
  'Connection terminated',
  'connection timeout',
  'Client has encountered a connection error',
  'Client was closed and is not queryable',
];

function clientConfig(config: DbConfig): pg.ClientConfig {
  const base: pg.ClientConfig = {
    connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS,
    application_name: 'deltasync',
    keepAlive: true,
  };
  const c = config.connection;
  if (typeof c === 'string') return { ...base, connectionString: c };
  return { ...base, ...(c as pg.ClientConfig) };
}

function labelOf(client: pg.Client): string {
  const host = client.host?.startsWith('/') ? `socket ${client.host}` : client.host;
  return `${client.user ?? '?'}@${host ?? 'localhost'}:${client.port}/${client.database ?? ''}`;
}

function isUnavailable(err: { code?: unknown; message?: unknown }): boolean {
  const code = typeof err.code === 'string' ? err.code : '';
  if (code === UNKNOWN_DATABASE || NETWORK_CODES.has(code)) return true;
  if (code.length === 5 && UNAVAILABLE_CLASSES.includes(code.slice(0, 2))) {
    return code !== '57014'; // query_canceled is ours (statement_timeout), not the server's
  }
  const message = typeof err.message === 'string' ? err.message : '';
  return CONNECTION_MESSAGES.some((m) => message.startsWith(m));
}

function unavailableHint(code: unknown): string {
  if (code === UNKNOWN_DATABASE) return 'create the database or fix its name in the connection';
  if (code === INVALID_PASSWORD || code === '28000') return 'check the user and password';
  return 'check that the server is running and reachable, and the connection settings';
}

/**
 * Turns a driver error into a DeltasyncError where we know what it means; returns other errors
 * unchanged. `table` names the table the statement was about, for ConfigErrors.
 */
export function translateError(err: unknown, conn: PgConnection, table?: string): unknown {
  if (err instanceof DeltasyncError || !(err instanceof Error)) return err;
  const e = err as Error & { code?: string };
  if (isUnavailable(e)) {
    const first = e.message.split('\n')[0];
    return new UnavailableError(`PostgreSQL ${conn.label} is unavailable: ${first}`, {
      hint: unavailableHint(e.code),
      cause: err,
    });
  }
  if (e.code === LOCK_NOT_AVAILABLE) return lockTimeout(e, conn, table);
  if (e.code === INSUFFICIENT_PRIVILEGE) {
    return new PrivilegeError(`PostgreSQL ${conn.label}: ${e.message}`, {
      hint: `grant the privilege to ${conn.client.user ?? 'the configured user'} (see Grants in the README), or connect as a user that has it`,
      cause: err,
    });
  }
  if (/SASL|password must be a string|password authentication/i.test(e.message)) {
    return new ConfigError(`PostgreSQL ${conn.label}: ${e.message.split('\n')[0]}`, {
      hint: 'the password is missing or wrong: set the environment variable the config reads it from',
      cause: err,
    });
  }
  if (e.code === UNDEFINED_TABLE || e.code === UNDEFINED_COLUMN || e.code === UNDEFINED_SCHEMA) {
    const where = table ? `table '${table}' in PostgreSQL ${conn.label}` : conn.label;
    return new ConfigError(`${where}: ${e.message}`, {
      hint: 'check the table and column names in the job configuration',
      cause: err,
    });
  }
  return err;
}

/** The relation a lock wait was about, from PostgreSQL's error context ("… in relation \"t\""). */
function relationOf(e: Error & { where?: string }): string | undefined {
  return /relation "([^"]+)"/.exec(e.where ?? '')?.[1];
}

function lockTimeout(e: Error & { where?: string }, conn: PgConnection, table?: string): unknown {
  const relation = table ?? relationOf(e);
  const seconds = conn.lockTimeoutSeconds;
  return new LockTimeoutError(
    `PostgreSQL ${conn.label}: waited ${seconds} s (lockTimeoutSeconds) for a lock on ${relation ? `table '${relation}'` : 'a table'}; nothing was applied`,
    {
      table: relation,
      hint: 'end or wait for the blocking session, then run again; or raise lockTimeoutSeconds',
      cause: e,
      findBlocker: () => findBlocker(conn, relation),
    },
  );
}

interface BlockerRow {
  pid: number;
  usename: string | null;
  application_name: string | null;
  client_addr: string | null;
  xact_start: Date | null;
  state: string | null;
  relname: string | null;
}

/**
 * The session holding a lock on `table` (or, when the table is unknown, the one holding the
 * strongest lock in the database), seen from a second connection: our own statement has given up
 * waiting, but the blocker still holds its lock.
 */
async function findBlocker(conn: PgConnection, table?: string): Promise<string | undefined> {
  const { Client } = await loadPg();
  const helper = new Client({ ...conn.config, connectionTimeoutMillis: 5_000 });
  helper.on('error', () => {});
  try {
    await helper.connect();
    const { rows } = await helper.query<BlockerRow>(
      `SELECT a.pid, a.usename, a.application_name, host(a.client_addr) AS client_addr,
              a.xact_start, a.state, c.relname
         FROM pg_locks l
         JOIN pg_stat_activity a ON a.pid = l.pid
         JOIN pg_class c ON c.oid = l.relation
        WHERE l.granted AND l.locktype = 'relation' AND c.relkind IN ('r', 'p')
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.pid NOT IN (pg_backend_pid(), $1)
          AND ($2::text IS NULL OR l.relation = to_regclass($2))
        ORDER BY l.mode = 'AccessExclusiveLock' DESC, l.mode = 'ExclusiveLock' DESC, a.xact_start
        LIMIT 1`,
      [conn.pid, table ?? null],
    );
    const b = rows[0];
    if (!b) return undefined;
    return (
      `session pid ${b.pid} (user ${b.usename ?? '?'}, application '${b.application_name ?? ''}'` +
      `${b.client_addr ? `, from ${b.client_addr}` : ''}, ${b.state ?? 'unknown state'}` +
      `${b.xact_start ? `, transaction started ${b.xact_start.toISOString()}` : ''}` +
      `${table ? '' : `, on table '${b.relname}'`}); SELECT pg_terminate_backend(${b.pid}) ends it`
    );
  } finally {
    await helper.end().catch(() => {});
  }
}

/** Runs a query, translating its errors. */
export async function run<R extends pg.QueryResultRow = pg.QueryResultRow>(
  conn: PgConnection,
  sql: string,
  params?: unknown[],
  table?: string,
): Promise<pg.QueryResult<R>> {
  try {
    return await conn.client.query<R>(sql, params);
  } catch (err) {
    throw translateError(err, conn, table);
  }
}

/**
 * Opens a connection with deltasync's session settings. Throws UnavailableError when the server
 * cannot be reached, refuses the login or lacks the database.
 */
export async function connect(config: DbConfig): Promise<PgConnection> {
  const settings = clientConfig(config);
  const { Client } = await loadPg();
  const client = new Client(settings);
  const conn: PgConnection = {
    client,
    label: labelOf(client),
    config: settings,
    pid: 0,
    lockTimeoutSeconds: config.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS,
  };
  // An idle client whose server goes away emits 'error'; unhandled, that would kill the
  // process. The next query on it fails anyway and reports the problem where it matters.
  client.on('error', () => {});
  try {
    await client.connect();
    // Every statement of the session waits at most lock_timeout for a lock on a table or row (a
    // replica table locked by a long report, an ALTER on the source). A SET rather than a startup
    // `options` parameter, which connection poolers such as PgBouncer refuse. All in one round
    // trip (a simple query of several statements answers with one result each): a cron run with
    // nothing to do spends most of its database time opening its connection.
    const results = (await client.query(
      `${SESSION_SETTINGS}; SET lock_timeout = ${Math.ceil(conn.lockTimeoutSeconds * 1000)}; SELECT pg_backend_pid() AS pid`,
    )) as unknown as pg.QueryResult<{ pid: number }>[];
    conn.pid = results.at(-1)!.rows[0]!.pid;
  } catch (err) {
    await client.end().catch(() => {});
    throw translateError(err, conn);
  }
  return conn;
}

/**
 * Cancels whatever the connection's server process is running, from a second short-lived
 * connection (a role may cancel its own sessions). A cancel that arrives once the statement is
 * over is ignored by the server, so this cannot hit a later statement.
 */
export async function cancelQuery(conn: PgConnection): Promise<void> {
  const { Client } = await loadPg();
  const helper = new Client(conn.config);
  helper.on('error', () => {});
  try {
    await helper.connect();
    await helper.query('SELECT pg_cancel_backend($1)', [conn.pid]);
  } finally {
    await helper.end().catch(() => {});
  }
}

/** Closes a connection; a connection that is already broken closes quietly. */
export async function disconnect(conn: PgConnection): Promise<void> {
  await conn.client.end().catch(() => {});
}
