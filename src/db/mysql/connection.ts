/**
 * Opening MySQL/MariaDB connections, turning driver errors into deltasync errors, and reading a
 * table's columns. Shared by the source and the target.
 */
import type { Connection as CoreConnection, ConnectionOptions } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import {
  ConfigError,
  DeltasyncError,
  LockTimeoutError,
  PrivilegeError,
  UnavailableError,
} from '../../errors.js';
import type { DbConfig } from '../types.js';

/** An open connection and how to name it in messages (`host:port/db`, never the password). */
export interface Session {
  conn: Connection;
  /** The callback-style connection underneath, for streaming queries and LOAD DATA. */
  core: CoreConnection;
  where: string;
  /** Set when the server went away while no query was running. */
  lostWith?: Error;
  /** What the session was opened with, to open a helper connection (see findBlocker). */
  options: ConnectionOptions;
  /** This session's connection id, so that lock look-ups can leave it out. */
  threadId: number;
  /** How long a statement waits for a lock (`lockTimeoutSeconds`), for messages. */
  lockTimeoutSeconds: number;
}

/** How long a statement waits for a lock when the config says nothing (`lockTimeoutSeconds`). */
export const DEFAULT_LOCK_TIMEOUT_SECONDS = 60;
/** ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout (rows) or lock_wait_timeout (metadata) expired. */
const LOCK_WAIT_TIMEOUT = 1205;
/** Privileges the user lacks: table, column, global (PROCESS, SUPER…) and database level. */
const NO_PRIVILEGE = new Set([1142, 1143, 1227, 1044]);

/**
 * Options that keep every value exact, whatever the config says: 64-bit integers and decimals
 * as strings, dates as the server's text (no JS Date, no local time zone), JSON as text.
 */
const EXACT_OPTIONS = {
  supportBigNumbers: true,
  bigNumberStrings: true,
  decimalNumbers: false,
  dateStrings: true,
  jsonStrings: true,
  timezone: 'Z',
  charset: 'utf8mb4',
  multipleStatements: false,
  // A config's own typeCast would undo all of the above.
  typeCast: true,
} as const;

/** `host:port/db` for messages, from a URL or from mysql2 options. */
function placeOf(config: DbConfig): string {
  const c = config.connection;
  try {
    const fields =
      typeof c === 'string' ? new URL(c) : typeof c.uri === 'string' ? new URL(c.uri) : null;
    if (fields) {
      return `${fields.hostname || 'localhost'}:${fields.port || 3306}/${decodeURIComponent(fields.pathname.slice(1))}`;
    }
  } catch {
    return 'an unparsable connection URL';
  }
  const o = c as Record<string, unknown>;
  const host = o.socketPath ? String(o.socketPath) : `${o.host ?? 'localhost'}:${o.port ?? 3306}`;
  return `${host}/${o.database ?? ''}`;
}

/** Driver error codes that mean "cannot reach or stay connected to the server". */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR',
  'PROTOCOL_ENQUEUE_AFTER_QUIT',
  'ER_ACCESS_DENIED_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  'ER_BAD_DB_ERROR',
  'ER_CON_COUNT_ERROR',
  'ER_TOO_MANY_USER_CONNECTIONS',
  'ER_HOST_IS_BLOCKED',
  'ER_HOST_NOT_PRIVILEGED',
  'ER_SERVER_SHUTDOWN',
  'ER_NOT_SUPPORTED_AUTH_MODE',
  'ER_CONNECTION_KILLED',
]);
/** The same by server error number, for codes older mysql2 versions do not name (1927: MariaDB's killed connection). */
const UNAVAILABLE_ERRNOS = new Set([1040, 1044, 1045, 1049, 1053, 1129, 1130, 1203, 1251, 1927]);

interface DriverError extends Error {
  code?: string;
  errno?: number;
  fatal?: boolean;
  sqlMessage?: string;
}

/**
 * Turns a driver error into a ConfigError or an UnavailableError when it is one; anything else
 * (a deltasync error, a data error from the server) is returned unchanged.
 */
export function translateError(
  err: unknown,
  where: string,
  table?: string,
  session?: Session,
): unknown {
  if (err instanceof DeltasyncError || !(err instanceof Error)) return err;
  const e = err as DriverError;
  const reason = (e.sqlMessage ?? e.message ?? String(e.code)).split('\n')[0];
  if (e.errno === LOCK_WAIT_TIMEOUT) {
    const seconds = session?.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS;
    return new LockTimeoutError(
      `MariaDB/MySQL ${where}: waited ${seconds} s (lockTimeoutSeconds) for a lock on ${table ? `table '${table}'` : 'a table'}; nothing was applied`,
      {
        table,
        hint: 'end or wait for the blocking session, then run again; or raise lockTimeoutSeconds',
        cause: err,
        findBlocker: session && (() => findBlocker(session)),
      },
    );
  }
  if (e.code === 'ER_NO_SUCH_TABLE' || e.errno === 1146) {
    return new ConfigError(`table ${table ?? '?'} does not exist in MariaDB/MySQL ${where}`, {
      hint: 'create it or fix the table name in the job config',
      cause: err,
    });
  }
  if (e.code === 'ER_BAD_FIELD_ERROR' || e.errno === 1054) {
    return new ConfigError(`${reason} (table ${table ?? '?'} in MariaDB/MySQL ${where})`, {
      hint: 'fix the column names in the job config or the table',
      cause: err,
    });
  }
  if (e.errno !== undefined && NO_PRIVILEGE.has(e.errno) && !(e.errno === 1044 && !session)) {
    return new PrivilegeError(`${reason} (MariaDB/MySQL ${where})`, {
      hint: 'grant the privilege to the configured user',
      cause: err,
    });
  }
  const closed = /closed state|connection is closed/i.test(e.message);
  if (
    e.fatal ||
    closed ||
    UNAVAILABLE_CODES.has(e.code ?? '') ||
    UNAVAILABLE_ERRNOS.has(e.errno ?? 0)
  ) {
    return new UnavailableError(`MariaDB/MySQL ${where} is unavailable: ${reason}`, {
      hint: unavailableHint(e, closed),
      cause: err,
    });
  }
  return err;
}

function unavailableHint(e: DriverError, closed: boolean): string {
  if (e.errno === 1044 || e.errno === 1045 || e.errno === 1130) {
    return 'check the user, password and grants in the connection settings';
  }
  if (e.errno === 1049) return 'create the database or fix its name in the connection settings';
  if (closed || /LOST|ECONNRESET|EPIPE|KILLED|SHUTDOWN/.test(e.code ?? '') || e.errno === 1927) {
    return 'the connection was lost mid-way; the server rolled back any open transaction, so run again';
  }
  return 'check that the server is running and that host and port are right, then run again';
}

interface BlockerRow {
  id: number;
  user: string;
  host: string;
  db: string | null;
  started: string | null;
  command: string;
  info: string | null;
}

/**
 * The session most likely holding the lock we waited for, seen from a second connection: the
 * oldest other open InnoDB transaction that holds locks (in this database first), else the
 * longest-running other statement in this database (an ALTER holds metadata locks without a row
 * lock). Needs PROCESS to see other users' sessions.
 */
async function findBlocker(session: Session): Promise<string | undefined> {
  const mysql = await import('mysql2/promise');
  const helper = await mysql.createConnection({ ...session.options, connectTimeout: 5_000 });
  try {
    const [trx] = await helper.query(
      `SELECT p.ID AS id, p.USER AS user, p.HOST AS host, p.DB AS db,
              DATE_FORMAT(t.trx_started, '%Y-%m-%d %H:%i:%s') AS started, p.COMMAND AS command,
              LEFT(COALESCE(t.trx_query, p.INFO), 120) AS info
         FROM information_schema.INNODB_TRX t
         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
        WHERE p.ID NOT IN (?, CONNECTION_ID()) AND (t.trx_tables_locked > 0 OR t.trx_rows_locked > 0)
        ORDER BY p.DB <=> DATABASE() DESC, t.trx_started LIMIT 1`,
      [session.threadId],
    );
    let b = (trx as BlockerRow[])[0];
    if (!b) {
      const [busy] = await helper.query(
        `SELECT ID AS id, USER AS user, HOST AS host, DB AS db, NULL AS started, COMMAND AS command,
                LEFT(INFO, 120) AS info
           FROM information_schema.PROCESSLIST
          WHERE ID NOT IN (?, CONNECTION_ID()) AND DB <=> DATABASE()
            AND COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump')
          ORDER BY TIME DESC LIMIT 1`,
        [session.threadId],
      );
      b = (busy as BlockerRow[])[0];
    }
    if (!b) return undefined;
    return (
      `connection id ${b.id} (user ${b.user}@${b.host.replace(/:\d+$/, '')}, ${b.command}` +
      `${b.started ? `, transaction started ${b.started} UTC` : ''}` +
      `${b.info ? `, running: ${b.info.replace(/\s+/g, ' ')}` : ''}); KILL ${b.id} ends it`
    );
  } finally {
    await helper.end().catch(() => undefined);
  }
}

/**
 * Connects and pins the session to UTC, so TIMESTAMP columns read and write the UTC wall clock.
 * `forLoad` allows LOAD DATA LOCAL INFILE; a source never needs it, so it does not offer it.
 */
export async function openSession(config: DbConfig, forLoad: boolean): Promise<Session> {
  const where = placeOf(config);
  const base: ConnectionOptions =
    typeof config.connection === 'string'
      ? { uri: config.connection }
      : (config.connection as ConnectionOptions);
  const options: ConnectionOptions = {
    connectTimeout: 10_000,
    ...base,
    ...EXACT_OPTIONS,
    flags: forLoad ? ['LOCAL_FILES'] : ['-LOCAL_FILES'],
  };
  const mysql = await import('mysql2/promise');
  let conn: Connection;
  try {
    conn = await mysql.createConnection(options);
  } catch (err) {
    throw translateError(err, where);
  }
  const core = (conn as unknown as { connection: CoreConnection }).connection;
  const lockTimeoutSeconds = config.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS;
  const session: Session = {
    conn,
    core,
    where,
    options,
    threadId: conn.threadId,
    lockTimeoutSeconds,
  };
  // Without a listener an idle connection that the server drops would crash the process.
  conn.on('error', (err: Error) => {
    session.lostWith = err;
  });
  try {
    await run(session, "SET time_zone = '+00:00'");
    // Row locks (InnoDB) and metadata locks (a table being altered or locked) alike: wait at
    // most lockTimeoutSeconds, then fail with ER_LOCK_WAIT_TIMEOUT. Whole seconds only.
    const wait = Math.max(1, Math.ceil(lockTimeoutSeconds));
    await run(session, 'SET SESSION innodb_lock_wait_timeout = ?, lock_wait_timeout = ?', [
      wait,
      wait,
    ]);
  } catch (err) {
    await closeSession(session);
    throw err;
  }
  return session;
}

/** Runs a statement, translating errors. */
export async function run<T = unknown>(
  session: Session,
  sql: string,
  values?: unknown[],
  table?: string,
): Promise<T> {
  if (session.lostWith) throw translateError(session.lostWith, session.where, table, session);
  try {
    const [result] = await session.conn.query(sql, values);
    return result as T;
  } catch (err) {
    throw translateError(session.lostWith ?? err, session.where, table, session);
  }
}

/** Closes the connection; a connection that is already gone is not an error. */
export async function closeSession(session: Session): Promise<void> {
  try {
    await session.conn.end();
  } catch {
    session.conn.destroy();
  }
}

// Reflection moved to catalog.ts; re-exported for the modules that still import it from here.
export { reflectColumns, splitTable } from './catalog.js';
