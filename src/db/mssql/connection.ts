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
import { ConfigError, DeltasyncError, UnavailableError } from '../../errors.js';
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
  const pool = new sql.ConnectionPool(cfg);
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
