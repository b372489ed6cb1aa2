/**
 * PostgreSQL side of the bench: throwaway databases, the source table, and the raw pipe that
 * deltasync is measured against (`psql -c 'COPY (SELECT …) TO STDOUT' | psql -c 'COPY … FROM
 * STDIN'`, two processes and an OS pipe, nothing of ours in between).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Releasers } from './releasers.js';
import { runOk } from './process.js';
import { COLUMN_LIST, PG_DDL, PG_FINGERPRINT, TABLE } from './table.js';

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Runs statements on a short-lived connection to `url`; returns the last result's rows. */
export async function pgQuery(url: string, ...sql: string[]): Promise<unknown[][]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    let rows: unknown[][] = [];
    for (const statement of sql) {
      rows = (await client.query({ text: statement, rowMode: 'array' })).rows as unknown[][];
    }
    return rows;
  } finally {
    await client.end();
  }
}

/** Creates an empty database, registers its drop, and returns its URL. */
export async function createPgDatabase(
  adminUrl: string,
  label: string,
  releasers: Releasers,
): Promise<string> {
  const name = `dsbench_${label}_${randomBytes(3).toString('hex')}`;
  await pgQuery(adminUrl, `CREATE DATABASE ${name}`);
  // FORCE: a bin killed mid-run may still hold a connection.
  releasers.add(`PostgreSQL database ${name}`, () =>
    pgQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).then(() => undefined),
  );
  return withDatabase(adminUrl, name);
}

export async function createPgTable(url: string, ...extra: string[]): Promise<void> {
  await pgQuery(url, PG_DDL, ...extra);
}

/** `count:hashsum` of the bench table; see PG_FINGERPRINT. */
export async function pgFingerprint(url: string): Promise<string> {
  const rows = await pgQuery(url, PG_FINGERPRINT);
  return String(rows[0]?.[0]);
}

/** Flushes dirty pages first, so one phase's writes are not paid for by the next one's timing. */
export async function pgCheckpoint(adminUrl: string): Promise<void> {
  await pgQuery(adminUrl, 'CHECKPOINT');
}

const PSQL = ['-X', '-q', '-v', 'ON_ERROR_STOP=1'];

/**
 * Times the raw pipe from the source's table into the (empty) raw target's table. Connection
 * strings and statements travel as environment variables, so nothing needs shell quoting.
 */
export async function rawPgPipe(sourceUrl: string, targetUrl: string): Promise<number> {
  const script = `set -o pipefail; psql ${PSQL.join(' ')} -d "$SRC" -c "$OUT" | psql ${PSQL.join(' ')} -d "$DST" -c "$IN"`;
  const result = await runOk('bash', ['-c', script], {
    env: {
      ...process.env,
      SRC: sourceUrl,
      DST: targetUrl,
      OUT: `COPY (SELECT ${COLUMN_LIST} FROM ${TABLE}) TO STDOUT`,
      IN: `COPY ${TABLE} (${COLUMN_LIST}) FROM STDIN`,
    },
  });
  return result.seconds;
}

/** Writes `select` as COPY text (tab-separated, \\N for NULL) into `file`; returns seconds. */
export async function pgExportTsv(
  sourceUrl: string,
  select: string,
  file: string,
): Promise<number> {
  const script = `psql ${PSQL.join(' ')} -d "$SRC" -c "$OUT" > "$FILE"`;
  const result = await runOk('bash', ['-c', script], {
    env: {
      ...process.env,
      SRC: sourceUrl,
      OUT: `COPY (${select}) TO STDOUT`,
      FILE: file,
      // Dates as YYYY-MM-DD whatever the server's default DateStyle.
      PGOPTIONS: '-c DateStyle=ISO -c TimeZone=UTC',
    },
  });
  return result.seconds;
}

export async function pgServerVersion(adminUrl: string): Promise<string> {
  const rows = await pgQuery(adminUrl, 'SHOW server_version');
  return String(rows[0]?.[0]).split(' ')[0] ?? '?';
}
