/**
 * Throwaway databases of any engine for end-to-end tests, with a small common interface: run SQL,
 * read rows as arrays, and the `{ client, connection }` a job config needs.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { mysqlServer, PG_URL, pgServer, type TestServer } from './databases.js';

export type Engine = 'pg' | 'mysql' | 'sqlite';

export interface Db {
  engine: Engine;
  config: { client: string; connection: unknown };
  exec(sql: string): Promise<void>;
  rows(sql: string): Promise<unknown[][]>;
  close(): Promise<void>;
}

export interface Servers {
  pg: TestServer;
  mysql: TestServer;
  available(engine: Engine): boolean;
  cleanup(): Promise<void>;
}

export async function servers(): Promise<Servers> {
  const pgs = await pgServer();
  const mys = await mysqlServer();
  return {
    pg: pgs,
    mysql: mys,
    available: (e) => (e === 'pg' ? pgs.available : e === 'mysql' ? mys.available : true),
    async cleanup() {
      await pgs.cleanup();
      await mys.cleanup();
    },
  };
}

export async function openDb(s: Servers, engine: Engine, label: string): Promise<Db> {
  if (engine === 'pg') {
    const url = await s.pg.fresh(label);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    return {
      engine,
      config: { client: 'pg', connection: url },
      exec: async (sql) => void (await client.query(sql)),
      rows: async (sql) =>
        (await client.query({ text: sql, rowMode: 'array' })).rows as unknown[][],
      close: () => client.end(),
    };
  }
  if (engine === 'mysql') {
    const url = await s.mysql.fresh(label);
    const conn = await mysql.createConnection({
      uri: url,
      timezone: 'Z',
      multipleStatements: true,
    });
    await conn.query("SET time_zone = '+00:00'");
    return {
      engine,
      config: { client: 'mysql', connection: url },
      exec: async (sql) => void (await conn.query(sql)),
      rows: async (sql) => (await conn.query({ sql, rowsAsArray: true }))[0] as unknown[][],
      close: () => conn.end(),
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-sqlite-'));
  const file = join(dir, `${label}.sqlite`);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  return {
    engine,
    config: { client: 'sqlite', connection: { filename: file } },
    exec: async (sql) => void db.exec(sql),
    rows: async (sql) => db.prepare(sql).raw(true).all() as unknown[][],
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface JobFiles {
  config: string;
  dir: string;
  cleanup(): void;
}

/**
 * Writes a job config (a JS module) for a source and a target. `extra` is JavaScript source for
 * further keys, so tests can give functions (filters, computed columns).
 */
export function writeJob(source: Db, target: Db, extra: string): JobFiles {
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-job-'));
  mkdirSync(join(dir, 'inbox'));
  const config = join(dir, 'job.js');
  const base = {
    name: 'e2e',
    stateDir: join(dir, 'state'),
    source: source.config,
    target: target.config,
    outbox: join(dir, 'outbox'),
    destinations: [{ name: 'r', dir: join(dir, 'inbox') }],
    inbox: join(dir, 'inbox'),
  };
  writeFileSync(config, `export default { ...${JSON.stringify(base)}, ${extra} };\n`);
  return { config, dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * PostgreSQL login roles for tests of what a loader without some grant sees. Roles are
 * cluster-wide: `dropAll` them after the databases holding their privileges are gone.
 */
export function pgRoles(): {
  /** A new login role on `db`'s server, and `db` as that role would connect to it. */
  create(db: Db): Promise<{ role: string; db: Db }>;
  dropAll(): Promise<void>;
} {
  const roles: string[] = [];
  return {
    async create(db) {
      const role = `ds_loader_${Math.floor(Math.random() * 1e9)}`;
      await db.exec(`CREATE ROLE ${role} LOGIN`);
      roles.push(role);
      const url = new URL(db.config.connection as string);
      url.username = role;
      return { role, db: { ...db, config: { client: 'pg', connection: url.toString() } } };
    },
    async dropAll() {
      if (roles.length === 0) return;
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      try {
        for (const role of roles.splice(0)) await admin.query(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await admin.end();
      }
    },
  };
}
