import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  ExitCode,
  LockTimeoutError,
  PrivilegeError,
  UnavailableError,
} from '../../src/errors.js';
import {
  connect,
  describeConnection,
  lockTimeoutSql,
  parseConnectionUrl,
  poolConfig,
  translateError,
  withLockTimeout,
} from '../../src/db/mssql/connection.js';

describe('connection settings', () => {
  it('parses a URL, decoding the user and password', () => {
    expect(
      parseConnectionUrl(
        'mssql://sync%40corp:p%40ss%3Bw%2Frd@db.example.com:14330/sales?encrypt=false&trustServerCertificate=true',
      ),
    ).toEqual({
      server: 'db.example.com',
      port: 14330,
      user: 'sync@corp',
      password: 'p@ss;w/rd',
      database: 'sales',
      options: { encrypt: false, trustServerCertificate: true },
    });
  });

  it('takes the database, instance and timeouts from parameters too', () => {
    expect(
      parseConnectionUrl(
        'sqlserver://sa@[::1]/?database=dstest_x&instanceName=SQLEXPRESS&connectTimeout=500&requestTimeout=0',
      ),
    ).toEqual({
      server: '::1',
      user: 'sa',
      database: 'dstest_x',
      connectionTimeout: 500,
      requestTimeout: 0,
      options: { instanceName: 'SQLEXPRESS' },
    });
  });

  it('refuses parameters it does not know, and bad values, as ConfigErrors', () => {
    expect(() => parseConnectionUrl('mssql://h/db?encrpyt=false')).toThrow(
      /parameter encrpyt is not one deltasync knows/,
    );
    expect(() => parseConnectionUrl('mssql://h/db?encrypt=maybe')).toThrow(ConfigError);
    expect(() => parseConnectionUrl('mssql://h/db?requestTimeout=soon')).toThrow(ConfigError);
  });

  it("accepts mssql's own ADO form", () => {
    expect(
      poolConfig(
        'Server=db.example.com,1444;Database=sales;User Id=sync;Password=secret;Encrypt=false',
      ),
    ).toMatchObject({
      server: 'db.example.com',
      port: 1444,
      database: 'sales',
      user: 'sync',
      password: 'secret',
      options: { encrypt: false, appName: 'deltasync' },
    });
  });

  it('accepts a config object, with knex-style host for server', () => {
    expect(poolConfig({ host: 'db', user: 'u', password: 'p', database: 'd' })).toMatchObject({
      server: 'db',
      database: 'd',
    });
  });

  it('times out connecting but never a long statement, unless told otherwise', () => {
    expect(poolConfig('mssql://h/db')).toMatchObject({
      connectionTimeout: 10_000,
      requestTimeout: 0,
    });
    expect(poolConfig('mssql://h/db?requestTimeout=60000').requestTimeout).toBe(60_000);
  });

  it('refuses a connection that names no server', () => {
    // A URL mssql would silently read as an empty config, had we not parsed it ourselves.
    expect(() => poolConfig('Database=sales')).toThrow(/names no server/);
    expect(() => poolConfig({ database: 'd' })).toThrow(ConfigError);
  });

  it('describes a connection without its password', () => {
    const cfg = poolConfig('mssql://sa:hunter2@db.example.com:1433/sales');
    expect(describeConnection(cfg)).toBe('db.example.com:1433/sales');
    expect(describeConnection(poolConfig('mssql://h?instanceName=X'))).toBe(
      'h\\X/(default database)',
    );
  });
});

describe('lock timeout', () => {
  it('SET LOCK_TIMEOUT counts milliseconds', () => {
    expect(lockTimeoutSql(60)).toBe('SET LOCK_TIMEOUT 60000');
    expect(lockTimeoutSql(0.5)).toBe('SET LOCK_TIMEOUT 500');
  });

  it('every pooled connection sends it in the batch that follows login, after any hook of the config', () => {
    const calls: string[] = [];
    const config = withLockTimeout(
      { server: 'h', beforeConnect: () => void calls.push('user hook') },
      7,
    );
    const conn = { getInitialSql: () => 'set textsize 2147483647' };
    config.beforeConnect!(conn as never);
    expect(calls).toEqual(['user hook']);
    expect(conn.getInitialSql()).toBe('set textsize 2147483647\nSET LOCK_TIMEOUT 7000');
  });
});

describe('driver errors', () => {
  const named = (name: string, props: object) =>
    Object.assign(new Error('boom\nsecond line'), { name }, props);

  it('unreachable servers and refused logins are UnavailableErrors (exit 69), one line', () => {
    const err = translateError(named('ConnectionError', { code: 'ESOCKET' }), 'h:1433/db');
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as UnavailableError).exitCode).toBe(ExitCode.UNAVAILABLE);
    expect((err as Error).message).toBe('SQL Server h:1433/db is unavailable: boom');
    const login = translateError(named('RequestError', { number: 18456 }), 'h:1433/db');
    expect(login).toBeInstanceOf(UnavailableError);
    expect((login as UnavailableError).hint).toMatch(/password/);
  });

  it('a lock wait past SET LOCK_TIMEOUT (error 1222) is a LockTimeoutError (69) naming the table', () => {
    const err = translateError(named('RequestError', { number: 1222 }), 'h:1433/db', 'dbo.orders');
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).exitCode).toBe(ExitCode.UNAVAILABLE);
    expect((err as Error).message).toContain("lock on table 'dbo.orders'");
    expect((err as Error).message).toContain('nothing was applied');
  });

  it('a missing permission (229, 262) is a PrivilegeError (78) saying to grant it', () => {
    for (const number of [229, 262]) {
      const err = translateError(named('RequestError', { number }), 'h:1433/db');
      expect(err).toBeInstanceOf(PrivilegeError);
      expect((err as PrivilegeError).exitCode).toBe(ExitCode.CONFIG);
      expect((err as PrivilegeError).hint).toMatch(/grant/);
    }
  });

  it('missing tables and columns are ConfigErrors naming the table', () => {
    const err = translateError(named('RequestError', { number: 208 }), 'h:1433/db', 'dbo.orders');
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe('table dbo.orders in SQL Server h:1433/db: boom');
  });

  it('leaves other errors alone, and scrubs a password should a message ever hold one', () => {
    const other = named('RequestError', { number: 2627 });
    expect(translateError(other, 'h')).toBe(other);
    const leaky = Object.assign(new Error('Login failed: hunter2'), { name: 'ConnectionError' });
    expect((translateError(leaky, 'h', undefined, 'hunter2') as Error).message).not.toContain(
      'hunter2',
    );
  });

  it('a server that is not there fails connect() with an UnavailableError, without the password', async () => {
    // Port 1 on loopback: nothing listens, so the real driver fails at once.
    const err = await connect({
      client: 'mssql',
      connection: 'mssql://sa:hunter2@127.0.0.1:1/sales?connectTimeout=3000',
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toMatch(/^SQL Server 127\.0\.0\.1:1\/sales is unavailable: /);
    expect((err as Error).message).not.toContain('hunter2');
    expect((err as Error).message).not.toContain('\n');
  });
});
