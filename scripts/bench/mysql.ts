/**
 * MariaDB side of the bench: throwaway databases and the raw `LOAD DATA LOCAL INFILE` that the
 * deltasync load into a MariaDB target is measured against, run by the stock `mariadb` client.
 */
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import type { Releasers } from './releasers.js';
import { runOk } from './process.js';
import { COLUMN_LIST, MYSQL_AGGREGATES, MYSQL_DDL, TABLE } from './table.js';

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Runs statements on a short-lived connection to `url`; returns the last result's rows. */
export async function mysqlQuery(url: string, ...sql: string[]): Promise<unknown[][]> {
  const connection = await mysql.createConnection(url);
  try {
    let rows: unknown[][] = [];
    for (const statement of sql) {
      const [result] = await connection.query({ sql: statement, rowsAsArray: true });
      rows = Array.isArray(result) ? (result as unknown[][]) : [];
    }
    return rows;
  } finally {
    await connection.end();
  }
}

/** Creates an empty database with the bench table, registers its drop, and returns its URL. */
export async function createMysqlDatabase(
  adminUrl: string,
  label: string,
  releasers: Releasers,
): Promise<string> {
  const name = `dsbench_${label}_${randomBytes(3).toString('hex')}`;
  await mysqlQuery(adminUrl, `CREATE DATABASE ${name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  releasers.add(`MariaDB database ${name}`, () =>
    mysqlQuery(adminUrl, `DROP DATABASE IF EXISTS ${name}`).then(() => undefined),
  );
  const url = withDatabase(adminUrl, name);
  await mysqlQuery(url, MYSQL_DDL);
  return url;
}

export async function mysqlAggregates(url: string): Promise<string[]> {
  const rows = await mysqlQuery(url, MYSQL_AGGREGATES);
  return (rows[0] ?? []).map(String);
}

export async function mysqlServerVersion(adminUrl: string): Promise<string> {
  const rows = await mysqlQuery(adminUrl, 'SELECT VERSION()');
  return String(rows[0]?.[0]).split('-')[0] ?? '?';
}

/** The `mariadb` client's connection flags for `url`; a password travels in MYSQL_PWD. */
function clientArgs(url: string): { args: string[]; env: NodeJS.ProcessEnv } {
  const u = new URL(url);
  const args = [
    '--no-defaults',
    '--protocol=tcp',
    '-h',
    u.hostname,
    '-P',
    u.port || '3306',
    '-u',
    decodeURIComponent(u.username || 'root'),
    '-D',
    u.pathname.slice(1),
  ];
  const env = { ...process.env };
  if (u.password) env.MYSQL_PWD = decodeURIComponent(u.password);
  return { args, env };
}

/**
 * Times `LOAD DATA LOCAL INFILE` of a COPY-text file into the (empty) bench table. The session
 * zone is UTC so the TIMESTAMP column gets the instants the file spells in UTC.
 */
export async function rawLoadData(url: string, file: string): Promise<number> {
  if (file.includes("'")) throw new Error(`cannot quote file name ${file}`);
  const { args, env } = clientArgs(url);
  const sql = `SET time_zone = '+00:00'; LOAD DATA LOCAL INFILE '${file}' INTO TABLE ${TABLE} CHARACTER SET utf8mb4 (${COLUMN_LIST})`;
  const result = await runOk('mariadb', [...args, '--local-infile=1', '-e', sql], { env });
  return result.seconds;
}
