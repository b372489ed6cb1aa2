/**
 * Every mistake a user can make ends with its sysexits code and a one-line message saying what to
 * do, never "internal error" (issue 9, finding 6 and its family). Each case runs the real bins
 * against real PostgreSQL and MariaDB servers.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin, type BinResult } from '../helpers/cli.js';
import { openDb, servers, type Db } from '../helpers/engines.js';

const dbs = await servers();
const dir = mkdtempSync(join(tmpdir(), 'deltasync-mistakes-'));
const suffix = randomBytes(3).toString('hex');
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await dbs.cleanup();
});

/** Writes a config module (JavaScript source for the object's keys) and returns its path. */
function config(name: string, keys: string, ext = 'js'): string {
  const file = join(dir, `${name}.${ext}`);
  const base = {
    name: 'mistakes',
    stateDir: join(dir, `state-${name}`),
    outbox: join(dir, 'outbox'),
    inbox: join(dir, 'inbox'),
    destinations: [{ name: 'r', dir: join(dir, 'inbox') }],
  };
  writeFileSync(file, `export default { ...${JSON.stringify(base)}, ${keys} };\n`);
  return file;
}

/** The run failed the way a user mistake should: that code, one line, no "internal error". */
function expectMistake(r: BinResult, code: number, ...says: (string | RegExp)[]): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toContain('internal error');
  for (const s of says) expect(r.stderr).toMatch(s);
}

const extract = (file: string, ...args: string[]) =>
  runBin('deltasync-extract', ['-c', file, ...args]);
const TABLES = `tables: [{ name: 'items', key: 'id', logIdColumn: 'log_id' }]`;
mkdirSync(join(dir, 'inbox'));

describe('config files and paths', () => {
  it('a config that throws, exports nothing, or is TypeScript with a syntax error: 78', () => {
    const throws = join(dir, 'throws.js');
    writeFileSync(throws, "throw new Error('ACME_PG_URL is not set');\n");
    expectMistake(extract(throws), 78, 'cannot load config: ACME_PG_URL is not set');
    const nothing = join(dir, 'nothing.js');
    writeFileSync(nothing, 'export const name = 1;\n');
    expectMistake(extract(nothing), 78, 'must export a config object as default');
    const broken = join(dir, 'broken.ts');
    writeFileSync(broken, "export default { name: 'x', source: {{ }\n");
    expectMistake(extract(broken), 78, /broken\.ts: cannot load config/);
  });

  it('an unknown client: 78 naming the ones there are', () => {
    const file = config('client', `source: { client: 'oracle', connection: 'x' }, ${TABLES}`);
    expectMistake(extract(file), 78, "unknown database client 'oracle'", 'pg, postgres');
  });

  it('a state directory that cannot be created: 78', () => {
    writeFileSync(join(dir, 'a-file'), '');
    const file = config(
      'statedir',
      `source: { client: 'sqlite', connection: { filename: ${JSON.stringify(join(dir, 'src.sqlite'))} } }, ${TABLES}, stateDir: ${JSON.stringify(join(dir, 'a-file', 'state'))}`,
    );
    expectMistake(extract(file), 78, 'state directory', 'set stateDir');
    // Node's own recursive mkdir never returns under /proc: this must fail, not hang cron.
    const proc = config(
      'procstate',
      `source: { client: 'sqlite', connection: { filename: 'x.sqlite' } }, ${TABLES}, stateDir: '/proc/deltasync-no-such/state'`,
    );
    expectMistake(extract(proc), 78, 'state directory /proc/deltasync-no-such/state');
  });

  it('a missing inbox, or a SQLite file that is not there: 69', () => {
    const file = config(
      'inbox',
      `target: { client: 'sqlite', connection: { filename: ${JSON.stringify(join(dir, 'missing.sqlite'))} } }, inbox: ${JSON.stringify(join(dir, 'no-inbox'))}`,
    );
    expectMistake(runBin('deltasync-load', ['-c', file]), 69, 'no-inbox is not a directory');
    const sqlite = config(
      'sqlite',
      `target: { client: 'sqlite', connection: { filename: ${JSON.stringify(join(dir, 'missing.sqlite'))} } }`,
    );
    expectMistake(runBin('deltasync-load', ['-c', sqlite]), 69, 'missing.sqlite', 'check the path');
  });

  it('a log file the user cannot write: 78 naming log.file', () => {
    const file = config(
      'logfile',
      `source: { client: 'sqlite', connection: { filename: 'x.sqlite' } }, ${TABLES}, log: { file: ${JSON.stringify(dir)} }`,
    );
    expectMistake(extract(file), 78, /^deltasync extract: log\.file: cannot write/, 'writable');
  });

  it('verify --since over tables counted by two different counters: 78, before any database', () => {
    const file = config(
      'since',
      `source: { client: 'pg', connection: 'postgres://nobody@127.0.0.1:1/none' },
       target: { client: 'pg', connection: 'postgres://nobody@127.0.0.1:1/none' },
       tables: [{ name: 'orders', key: 'id', logIdColumn: 'log_id' },
                { name: 'customers', key: 'id', mode: 'changelog' },
                { name: 'rates', key: 'id', mode: 'snapshot' }]`,
    );
    const verify = (...a: string[]) => runBin('deltasync', ['verify', '-c', file, ...a]);
    expectMistake(
      verify('--mode', 'incremental', '--since', '5'),
      78,
      "'orders' (logid: their logId column) and 'customers' (changelog",
      '--table',
    );
    expectMistake(
      verify('--mode', 'incremental', '--since', '5', '--table', 'rates'),
      78,
      "'rates' (snapshot) have no logId",
    );
    expectMistake(verify('--since', '5'), 78, '--since is only used with --mode incremental');
    expectMistake(verify('--table', 'nope'), 78, '--table: nope not in the job');
  });
});

describe('PostgreSQL', () => {
  let db: Db;
  let url: URL;
  const readOnly = `ds_ro_${suffix}`;
  const noGrants = `ds_none_${suffix}`;
  const as = (user: string) => {
    const u = new URL(url);
    u.username = user;
    return u.toString();
  };
  beforeAll(async () => {
    if (!dbs.available('pg')) return;
    db = await openDb(dbs, 'pg', 'mistakes');
    url = new URL(db.config.connection as string);
    await db.exec(
      'CREATE TABLE items (id int PRIMARY KEY, name text, log_id bigint NOT NULL); INSERT INTO items VALUES (1, $$a$$, 1)',
    );
    await db.exec(`CREATE ROLE ${readOnly} LOGIN; GRANT SELECT ON items TO ${readOnly}`);
    await db.exec(`REVOKE CREATE ON SCHEMA public FROM PUBLIC; CREATE ROLE ${noGrants} LOGIN`);
  });
  afterAll(async () => {
    if (!db) return;
    await db.exec(
      `REVOKE ALL ON items FROM ${readOnly}; DROP ROLE ${readOnly}; DROP ROLE ${noGrants}`,
    );
    await db.close();
  });

  it.skipIf(!dbs.available('pg'))(
    'a password variable left unset, or an unset variable inside the URL: 78',
    () => {
      const unset = config(
        'pgpw',
        `source: { client: 'pg', connection: { host: '127.0.0.1', user: 'postgres', database: ${JSON.stringify(url.pathname.slice(1))}, password: process.env.DELTASYNC_TEST_UNSET_PASSWORD } }, ${TABLES}`,
      );
      expectMistake(
        extract(unset),
        78,
        'source.connection.password: undefined',
        'environment variable',
      );
      const inUrl = config(
        'pgurl',
        `source: { client: 'pg', connection: \`postgres://postgres:\${process.env.DELTASYNC_TEST_UNSET_PASSWORD}@127.0.0.1:5432/x\` }, ${TABLES}`,
      );
      expectMistake(extract(inUrl), 78, "the URL contains 'undefined'");
    },
  );

  it.skipIf(!dbs.available('pg'))(
    'a wrong port or an unknown database: 69 saying what to check',
    () => {
      const port = new URL(url);
      port.port = '1';
      expectMistake(
        extract(config('pgport', `source: { client: 'pg', connection: '${port}' }, ${TABLES}`)),
        69,
        'is unavailable',
        'check that the server is running',
      );
      const nodb = new URL(url);
      nodb.pathname = '/ds_no_such_db';
      expectMistake(
        extract(config('pgnodb', `source: { client: 'pg', connection: '${nodb}' }, ${TABLES}`)),
        69,
        'create the database or fix its name',
      );
    },
  );

  it.skipIf(!dbs.available('pg'))('a user without SELECT on a table: 78 naming it', () => {
    const file = config(
      'pgselect',
      `source: { client: 'pg', connection: '${as(noGrants)}' }, ${TABLES}`,
    );
    expectMistake(extract(file), 78, 'permission denied for table items', `grant the privilege`);
  });

  it.skipIf(!dbs.available('pg'))(
    'capture --apply with the read-only account: 78, use an account that may create tables and triggers',
    () => {
      const file = config(
        'pgcapture',
        `source: { client: 'pg', connection: '${as(readOnly)}' }, tables: [{ name: 'items', key: 'id', mode: 'changelog' }]`,
      );
      expectMistake(
        runBin('deltasync', ['capture', '-c', file, '--apply']),
        78,
        'permission denied',
        'with an account that may create tables and triggers',
      );
    },
  );

  it.skipIf(!dbs.available('pg'))(
    "tableOrder 'foreign-keys' over tables whose foreign keys form a cycle: 78 saying what to do",
    async () => {
      await db.exec(`CREATE TABLE dept (id int PRIMARY KEY, head int, log_id bigint NOT NULL);
        CREATE TABLE staff (id int PRIMARY KEY, dept int REFERENCES dept, log_id bigint NOT NULL);
        ALTER TABLE dept ADD FOREIGN KEY (head) REFERENCES staff`);
      const file = config(
        'pgcycle',
        `source: { client: 'pg', connection: '${url}' }, tableOrder: 'foreign-keys',
         tables: [{ name: 'dept', key: 'id', logIdColumn: 'log_id' }, { name: 'staff', key: 'id', logIdColumn: 'log_id' }]`,
      );
      expectMistake(extract(file), 78, 'foreign keys form a cycle', "use 'config'");
    },
  );
});

describe('MariaDB', () => {
  let db: Db;
  let url: URL;
  const user = `ds_ro_${suffix}`;
  const as = (name: string, password: string) => {
    const u = new URL(url);
    u.username = name;
    u.password = password;
    return u.toString();
  };
  beforeAll(async () => {
    if (!dbs.available('mysql')) return;
    db = await openDb(dbs, 'mysql', 'mistakes');
    url = new URL(db.config.connection as string);
    const name = url.pathname.slice(1);
    await db.exec(
      'CREATE TABLE items (id int PRIMARY KEY, name text, log_id bigint NOT NULL); CREATE TABLE secret (id int PRIMARY KEY, log_id bigint NOT NULL)',
    );
    await db.exec(`CREATE USER '${user}'@'%' IDENTIFIED BY 'right'`);
    await db.exec(`GRANT SELECT ON \`${name}\`.items TO '${user}'@'%'`);
  });
  afterAll(async () => {
    if (!db) return;
    await db.exec(`DROP USER IF EXISTS '${user}'@'%'`);
    await db.close();
  });

  it.skipIf(!dbs.available('mysql'))('a wrong password: 69 saying to check it', () => {
    const file = config(
      'mywrongpw',
      `source: { client: 'mysql', connection: '${as(user, 'wrong')}' }, ${TABLES}`,
    );
    expectMistake(extract(file), 69, 'Access denied', 'check the user, password');
  });

  it.skipIf(!dbs.available('mysql'))('a password variable left unset: 78', () => {
    const file = config(
      'mypw',
      `source: { client: 'mysql', connection: { host: '127.0.0.1', user: '${user}', password: process.env.DELTASYNC_TEST_UNSET_PASSWORD } }, ${TABLES}`,
    );
    expectMistake(extract(file), 78, 'source.connection.password: undefined');
  });

  it.skipIf(!dbs.available('mysql'))('a user without SELECT on a table: 78 naming it', () => {
    const file = config(
      'myselect',
      `source: { client: 'mysql', connection: '${as(user, 'right')}' }, tables: [{ name: 'secret', key: 'id', logIdColumn: 'log_id' }]`,
    );
    expectMistake(extract(file), 78, /SELECT command denied .*secret/, 'grant the privilege');
  });

  it.skipIf(!dbs.available('mysql'))(
    'capture --apply with the read-only account: 78 naming the grants',
    () => {
      const file = config(
        'mycapture',
        `source: { client: 'mysql', connection: '${as(user, 'right')}' }, tables: [{ name: 'items', key: 'id', mode: 'changelog' }]`,
      );
      expectMistake(
        runBin('deltasync', ['capture', '-c', file, '--apply']),
        78,
        'CREATE command denied',
        'grant CREATE',
      );
    },
  );
});
