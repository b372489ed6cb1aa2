/**
 * The benchmark table: ten columns of the kinds a real replicated table has (64-bit keys and
 * change ids, money, text with some unicode and NULLs, an instant with microseconds, a date, a
 * flag, a JSON document), the same shape in PostgreSQL and MariaDB.
 */

export const TABLE = 'bench_rows';

export const COLUMNS = [
  'id',
  'log_id',
  'qty',
  'amount',
  'name',
  'email',
  'created_at',
  'birth_date',
  'active',
  'payload',
] as const;

export const COLUMN_LIST = COLUMNS.join(', ');

/** PostgreSQL: source, raw-pipe target and deltasync target all use this. */
export const PG_DDL = `
  CREATE TABLE ${TABLE} (
    id          bigint PRIMARY KEY,
    log_id      bigint NOT NULL,
    qty         integer NOT NULL,
    amount      numeric(12,2) NOT NULL,
    name        text NOT NULL,
    email       varchar(200),
    created_at  timestamptz NOT NULL,
    birth_date  date,
    active      boolean NOT NULL,
    payload     jsonb
  )`;

/** The source's change-id index: extract reads `log_id > last AND log_id <= high` in order. */
export const PG_SOURCE_INDEX = `CREATE INDEX ${TABLE}_log_id ON ${TABLE} (log_id)`;

/**
 * Fills the source with `n` rows on the server (generate_series: seconds for a million rows).
 * Every tenth email and every seventh birth date is NULL; every fiftieth name has non-ASCII text;
 * timestamps carry microseconds.
 */
export function pgFillSql(n: number): string {
  return `
    INSERT INTO ${TABLE} (${COLUMN_LIST})
    SELECT g,
           g,
           (g % 1000)::int,
           round((g % 1000000)::numeric / 7, 2),
           CASE WHEN g % 50 = 0 THEN 'Zoë Ørsted ' || g ELSE 'name ' || g END,
           CASE WHEN g % 10 = 0 THEN NULL ELSE 'user' || g || '@example.com' END,
           timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second',
           CASE WHEN g % 7 = 0 THEN NULL ELSE date '1950-01-01' + (g % 20000)::int END,
           g % 3 = 0,
           jsonb_build_object('n', g, 'tag', 't' || (g % 17), 'ok', g % 2 = 0)
      FROM generate_series(1, ${n}) AS g`;
}

/**
 * Touches every row: a new change id above every existing one (so extract sees all rows again)
 * and new values in three columns (so the upsert really changes each row).
 */
export function pgUpdateSql(n: number): string {
  return `UPDATE ${TABLE} SET log_id = log_id + ${n}, qty = qty + 1, amount = amount + 0.01, active = NOT active`;
}

/**
 * The source rows as MariaDB's LOAD DATA reads them: PostgreSQL's COPY text format already is
 * tab-separated with backslash escapes and \\N for NULL; only booleans (t/f) and the instant
 * (a UTC wall clock for a TIMESTAMP column in a +00:00 session) need spelling out.
 */
export const PG_EXPORT_FOR_MYSQL = `
  SELECT id, log_id, qty, amount, name, email,
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
         birth_date, active::int, payload::text
    FROM ${TABLE}`;

/** MariaDB: raw LOAD DATA target and deltasync target. TIMESTAMP holds an instant (UTC). */
export const MYSQL_DDL = `
  CREATE TABLE ${TABLE} (
    id          BIGINT NOT NULL PRIMARY KEY,
    log_id      BIGINT NOT NULL,
    qty         INT NOT NULL,
    amount      DECIMAL(12,2) NOT NULL,
    name        TEXT NOT NULL,
    email       VARCHAR(200) NULL,
    created_at  TIMESTAMP(6) NULL DEFAULT NULL,
    birth_date  DATE NULL,
    active      BOOLEAN NOT NULL,
    payload     JSON NULL
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`;

/**
 * Aggregates that both engines compute identically, to check a MariaDB replica against the
 * PostgreSQL source without moving the rows again.
 */
export const PG_AGGREGATES = `
  SELECT count(*)::text, sum(log_id)::text, sum(amount)::text, sum(qty)::text,
         sum(char_length(name))::text, count(email)::text, count(birth_date)::text,
         sum(active::int)::text,
         to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
    FROM ${TABLE}`;

export const MYSQL_AGGREGATES = `
  SELECT CAST(count(*) AS CHAR), CAST(sum(log_id) AS CHAR), CAST(sum(amount) AS CHAR),
         CAST(sum(qty) AS CHAR), CAST(sum(char_length(name)) AS CHAR),
         CAST(count(email) AS CHAR), CAST(count(birth_date) AS CHAR),
         CAST(sum(active) AS CHAR), DATE_FORMAT(max(created_at), '%Y-%m-%d %H:%i:%s.%f')
    FROM ${TABLE}`;

/**
 * A fingerprint of a PostgreSQL table's full contents: row count and a sum of per-row hashes of
 * the row's text. Equal fingerprints on source and replica mean the same rows and values.
 */
export const PG_FINGERPRINT = `SELECT count(*)::text || ':' || coalesce(sum(hashtext(t::text)::bigint), 0)::text AS fp FROM ${TABLE} AS t`;
