/**
 * Connecting to SQL Server, and turning driver errors into the errors an operator can act on:
 * anything that means "the server cannot be used right now" becomes an UnavailableError (exit 69)
 * naming server:port/database (never the password); a missing table or column a ConfigError.
 *
 * `connection` may be a URL (`mssql://user:pass@host:1433/db?encrypt=false`, what our test
 * helpers and most other tools use), an ADO string (`Server=host,1433;Database=db;...`, what the
 * mssql package itself parses) or an mssql config object.
 */
import sql from 'mssql';
import {
  ConfigError,
  DeltasyncError,
  LockTimeoutError,
  PrivilegeError,
  UnavailableError,
} from '../../errors.js';
import type { DbConfig } from '../types.js';

/** A connection pool together with how to name it in messages. */
export interface MssqlConnection {
  pool: sql.ConnectionPool;
  /** `server:port/database`, for messages. */
  label: string;
  /** The schema unqualified table names live in. */
  schema: string;
}

/** Without a timeout a cron run would hang on a black-holed host instead of failing. */
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/**
 * mssql's default of 15 s per request would kill a long streaming read or a MERGE of a million
 * rows; a run is bounded by its lock and by cron, not by a per-statement timer. 0 means none.
 */
const DEFAULT_REQUEST_TIMEOUT_MS = 0;

const URL_SCHEMES = new Set(['mssql:', 'sqlserver:']);

function parseBoolean(key: string, value: string): boolean {
  if (/^(true|yes|1)$/i.test(value)) return true;
  if (/^(false|no|0)$/i.test(value)) return false;
  throw new ConfigError(`connection URL parameter ${key}: expected true or false, got '${value}'`);
}

function parseMs(key: string, value: string): number {
  if (!/^\d+$/.test(value))
    throw new ConfigError(`connection URL parameter ${key}: expected milliseconds, got '${value}'`);
  return Number(value);
}

/** `mssql://user:password@host:port/database?encrypt=false&trustServerCertificate=true`. */
export function parseConnectionUrl(url: string): sql.config {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError('the SQL Server connection URL is not a valid URL');
  }
  const options: NonNullable<sql.config['options']> = {};
  const config: sql.config = {
    server: decodeURIComponent(u.hostname.replace(/^\[(.*)\]$/, '$1')),
    options,
  };
  if (u.port) config.port = Number(u.port);
  if (u.username) config.user = decodeURIComponent(u.username);
  if (u.password) config.password = decodeURIComponent(u.password);
  const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (database) config.database = database;
  for (const [key, value] of u.searchParams) {
    switch (key.toLowerCase()) {
      case 'database':
        config.database = value;
        break;
      case 'encrypt':
        options.encrypt = parseBoolean(key, value);
        break;
      case 'trustservercertificate':
        options.trustServerCertificate = parseBoolean(key, value);
        break;
      case 'instancename':
        options.instanceName = value;
        break;
      case 'connecttimeout':
      case 'connectiontimeout':
        config.connectionTimeout = parseMs(key, value);
        break;
      case 'requesttimeout':
        config.requestTimeout = parseMs(key, value);
        break;
      default:
        throw new ConfigError(`connection URL parameter ${key} is not one deltasync knows`, {
          hint: 'use database, encrypt, trustServerCertificate, instanceName, connectTimeout or requestTimeout',
        });
    }
  }
  return config;
}

/** How long a statement waits for a lock when the config says nothing (`lockTimeoutSeconds`). */
export const DEFAULT_LOCK_TIMEOUT_SECONDS = 60;

/** The statement that bounds lock waits on a session: SQL Server counts in milliseconds. */
export function lockTimeoutSql(seconds: number): string {
  return `SET LOCK_TIMEOUT ${Math.max(1, Math.ceil(seconds * 1000))}`;
}

/** The part of a tedious Connection we touch: the batch it sends on login and after a reset. */
interface InitialSql {
  getInitialSql(): string;
}

/**
 * Every pooled connection runs `SET LOCK_TIMEOUT` in the batch tedious sends right after login
 * (and again after each reset), so no request of ours can run before it.
 */
export function withLockTimeout(config: sql.config, seconds: number): sql.config {
  const before = config.beforeConnect;
  return {
    ...config,
    beforeConnect: (conn) => {
      before?.(conn);
      const c = conn as unknown as InitialSql;
      const initial = c.getInitialSql.bind(c);
      c.getInitialSql = () => `${initial()}\n${lockTimeoutSql(seconds)}`;
    },
  };
}

/** The mssql pool config for DbConfig.connection, with deltasync's defaults under it. */
export function poolConfig(connection: DbConfig['connection']): sql.config {
  let config: sql.config;
  if (typeof connection === 'string') {
    const scheme = /^[a-z]+:/i.exec(connection)?.[0].toLowerCase();
    if (scheme && URL_SCHEMES.has(scheme)) {
      config = parseConnectionUrl(connection);
    } else {
      config = sql.ConnectionPool.parseConnectionString(connection);
    }
  } else {
    // knex users write `host`; mssql wants `server`.
    const { host, ...rest } = connection as Record<string, unknown> & { host?: string };
    config = {
      ...(rest as Partial<sql.config>),
      server: (rest.server as string) ?? host,
    } as sql.config;
  }
  if (!config.server) {
    throw new ConfigError('the SQL Server connection names no server', {
      hint: "use mssql://user:password@host:1433/database or 'Server=host,1433;Database=...'",
    });
  }
  return {
    connectionTimeout: DEFAULT_CONNECT_TIMEOUT_MS,
    requestTimeout: DEFAULT_REQUEST_TIMEOUT_MS,
    ...config,
    options: { appName: 'deltasync', ...config.options },
  };
}

/** `server[\instance][:port]/database`, for messages: never the user's password. */
export function describeConnection(config: sql.config): string {
  const instance = config.options?.instanceName ? `\\${config.options.instanceName}` : '';
  const port = instance ? '' : `:${config.port ?? 1433}`;
  return `${config.server}${instance}${port}/${config.database ?? '(default database)'}`;
}

/** mssql's ConnectionError codes: the server, not our SQL, is the problem. */
const CONNECTION_CODES = new Set([
  'ELOGIN',
  'ETIMEOUT',
  'EINSTLOOKUP',
  'ESOCKET',
  'ECONNCLOSED',
  'ENOTOPEN',
]);
/** Server error numbers that mean the same. */
const CANNOT_OPEN_DATABASE = 4060;
const LOGIN_FAILED = 18456;
/** Server error numbers that mean the configuration names something that is not there. */
const INVALID_OBJECT = 208;
const INVALID_COLUMN = 207;
/** "Lock request time out period exceeded": SET LOCK_TIMEOUT expired. */
const LOCK_REQUEST_TIMEOUT = 1222;
/** Permission denied on an object, on a statement (CREATE TABLE…), or on the database. */
const PERMISSION_DENIED = new Set([229, 230, 262, 297, 300, 1088]);

interface DriverError extends Error {
  code?: string;
  number?: number;
  originalError?: Error;
}

/**
 * Turns a driver error into a DeltasyncError where we know what it means; returns other errors
 * unchanged. `table` names the table the statement was about, for ConfigErrors.
 */
export function translateError(
  err: unknown,
  label: string,
  table?: string,
  secret?: string,
): unknown {
  if (err instanceof DeltasyncError || !(err instanceof Error)) return err;
  const e = err as DriverError;
  let message = (e.message.split('\n')[0] ?? '').trim();
  // Belt and braces: no driver message we know of contains it, but none ever may.
  if (secret) message = message.replaceAll(secret, '***');
  const isConnection =
    e.name === 'ConnectionError' ||
    (e.code !== undefined && CONNECTION_CODES.has(e.code) && e.name !== 'RequestError');
  if (isConnection || e.number === CANNOT_OPEN_DATABASE || e.number === LOGIN_FAILED) {
    return new UnavailableError(`SQL Server ${label} is unavailable: ${message}`, {
      hint:
        e.number === LOGIN_FAILED || e.code === 'ELOGIN'
          ? 'check the user, the password and that the database exists'
          : 'check that the server is running and reachable, and the connection settings',
      cause: err,
    });
  }
  if (e.number === LOCK_REQUEST_TIMEOUT) {
    return new LockTimeoutError(
      `SQL Server ${label}: waited lockTimeoutSeconds for a lock on ${table ? `table '${table}'` : 'a table'}; nothing was applied`,
      {
        table,
        hint: 'end or wait for the blocking session (sp_who2 shows it in BlkBy); the next run carries on',
        cause: err,
      },
    );
  }
  if (e.number !== undefined && PERMISSION_DENIED.has(e.number)) {
    return new PrivilegeError(`SQL Server ${label}: ${message}`, {
      hint: 'grant the privilege to the configured user (see Grants in the README)',
      cause: err,
    });
  }
  if (e.number === INVALID_OBJECT || e.number === INVALID_COLUMN) {
    const where = table ? `table ${table} in SQL Server ${label}` : `SQL Server ${label}`;
    return new ConfigError(`${where}: ${message}`, {
      hint: 'check the table and column names in the job configuration',
      cause: err,
    });
  }
  return err;
}

/** Opens a pool and proves it with one connection; UnavailableError when that fails. */
export async function connect(config: DbConfig): Promise<MssqlConnection> {
  const cfg = poolConfig(config.connection);
  const label = describeConnection(cfg);
  const pool = new sql.ConnectionPool(
    withLockTimeout(cfg, config.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS),
  );
  // An idle pooled connection whose server goes away makes the pool emit 'error'; unhandled,
  // that would kill the process. The next request fails anyway, where it can be reported.
  pool.on('error', () => {});
  try {
    await pool.connect();
  } catch (err) {
    await pool.close().catch(() => {});
    throw translateError(err, label, undefined, cfg.password);
  }
  return { pool, label, schema: config.schema ?? 'dbo' };
}
