/**
 * Change capture on MySQL/MariaDB (`changelog` mode): the DDL of the change log and its triggers,
 * and the SQL that reads the change log back. Pure functions, pinned by
 * `test/unit/mysql-capture.test.ts`.
 *
 * - The change log's `log_id` is an AUTO_INCREMENT BIGINT. A trigger runs after its row was
 *   written, so the transaction already holds an InnoDB transaction id when it takes a log_id:
 *   `stableHighWater` (see `high-water.ts`) therefore sees every transaction that could still
 *   commit a lower log_id.
 * - One trigger per event (MySQL has no `INSERT OR UPDATE OR DELETE` trigger). The UPDATE trigger
 *   logs the new key, and the old one too when the key changed. It is a BEGIN … END block with
 *   two single-row INSERTs rather than one `INSERT … SELECT … UNION ALL`: with the default
 *   innodb_autoinc_lock_mode=1 an INSERT … SELECT holds the change log's table-level AUTO-INC
 *   lock until the end of the statement that fired it, so one large UPDATE would stall every
 *   other captured write for as long as it runs (measured: 9 s for 300,000 rows).
 * - Key values are logged as text that reads back exactly whatever the writer's session: a
 *   TIMESTAMP key as its UTC wall clock (a plain CAST would use the writer's time zone), binary
 *   keys as hex, BIT keys as numbers.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../../errors.js';
import type { CaptureDdl, CaptureRequest, ColumnInfo, LogicalType, WireValue } from '../types.js';
import { splitTable } from './catalog.js';
import {
  quoteIdent,
  quoteTable,
  readConverter,
  shortestFloat32,
  type NativeColumn,
  type ReadConverter,
} from './types.js';

/** The two dialects differ in how a trigger is replaced. */
export type Flavor = 'mariadb' | 'mysql';

/** MySQL and MariaDB identifiers are at most 64 characters long. */
const MAX_IDENTIFIER = 64;

const BINARY_TYPES = new Set(['binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob']);
const INTEGER_TYPES = new Set(['tinyint', 'smallint', 'mediumint', 'int', 'integer', 'bigint']);

/** The data type (`int`, `timestamp`, …) from a column's native type, when known. */
function dataTypeOf(column: ColumnInfo): string | undefined {
  return /^[a-z]+/.exec((column.nativeType ?? '').toLowerCase())?.[0];
}

/** A string literal for a name: quotes doubled, so it reads the same whatever the sql_mode. */
function nameLiteral(text: string): string {
  if (text.includes('\\')) {
    throw new ConfigError(`table name ${text} contains a backslash, which change capture refuses`);
  }
  return `'${text.replace(/'/g, "''")}'`;
}

/** The text a trigger logs for one key column of the NEW or OLD row. */
export function keyText(row: 'NEW' | 'OLD', column: ColumnInfo): string {
  const ref = `${row}.${quoteIdent(column.name)}`;
  const dataType = dataTypeOf(column);
  if (dataType === 'timestamp' || (dataType === undefined && column.type === 'timestamptz')) {
    // UNIX_TIMESTAMP reads the stored instant; adding it to the epoch is time-zone free.
    return `CAST(TIMESTAMPADD(MICROSECOND, UNIX_TIMESTAMP(${ref}) * 1000000, '1970-01-01 00:00:00') AS CHAR)`;
  }
  if (dataType === 'bit') return `CAST(${ref} + 0 AS CHAR)`;
  if (column.type === 'binary') return `HEX(${ref})`;
  return `CAST(${ref} AS CHAR)`;
}

function keyArray(row: 'NEW' | 'OLD', key: ColumnInfo[]): string {
  return `JSON_ARRAY(${key.map((k) => keyText(row, k)).join(', ')})`;
}

/** `prefix_table_event`, shortened with a hash when it would pass 64 characters. */
export function triggerName(changelog: string, table: string, event: string): string {
  const full = `${splitTable(changelog)[1]}_${splitTable(table)[1]}_${event}`;
  if (full.length <= MAX_IDENTIFIER) return full;
  const hash = createHash('sha1').update(full).digest('hex').slice(0, 8);
  return `${full.slice(0, MAX_IDENTIFIER - event.length - hash.length - 2)}_${hash}_${event}`;
}

/** The change log: the same columns on every engine (see CHANGELOG_LOGID_COLUMN in types.ts). */
export function changelogTableDdl(changelog: string): string {
  // changed_at is a DATETIME (the writer's wall clock) rather than a TIMESTAMP, whose year-2038
  // limit would make every captured write fail then.
  return `CREATE TABLE IF NOT EXISTS ${quoteTable(changelog)} (
  log_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  table_name VARCHAR(255) NOT NULL,
  op CHAR(1) NOT NULL,
  key_values TEXT NOT NULL,
  changed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY table_name_log_id (table_name, log_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`;
}

/** Where the DDL runs: the server's dialect and the connection's default database. */
export interface CaptureContext {
  flavor: Flavor;
  /** DATABASE(): where an unqualified change log lives. */
  database: string | null;
}

/** install creates the change log and three triggers per table; remove drops them all. */
export function captureDdl(request: CaptureRequest, context: CaptureContext): CaptureDdl {
  const { flavor, database } = context;
  const install = [changelogTableDdl(request.changelog)];
  const remove: string[] = [];
  for (const { table, key } of request.tables) {
    if (key.length === 0) throw new ConfigError(`table ${table}: change capture needs a key`);
    const [schema] = splitTable(table);
    // A trigger resolves unqualified names in its table's database, not the connection's.
    const log =
      schema !== null && splitTable(request.changelog)[0] === null && database !== null
        ? `${quoteIdent(database)}.${quoteTable(request.changelog)}`
        : quoteTable(request.changelog);
    const name = (event: string) =>
      (schema === null ? '' : `${quoteIdent(schema)}.`) +
      quoteIdent(triggerName(request.changelog, table, event));
    const insert = (op: string, row: 'NEW' | 'OLD') =>
      `INSERT INTO ${log} (table_name, op, key_values) VALUES (${nameLiteral(table)}, '${op}', ${keyArray(row, key)})`;
    const keyChanged = key
      .map((k) => `OLD.${quoteIdent(k.name)} <=> NEW.${quoteIdent(k.name)}`)
      .join(' AND ');
    const bodies: [string, string, string][] = [
      ['ins', 'INSERT', insert('I', 'NEW')],
      [
        'upd',
        'UPDATE',
        `BEGIN ${insert('U', 'NEW')}; IF NOT (${keyChanged}) THEN ${insert('D', 'OLD')}; END IF; END`,
      ],
      ['del', 'DELETE', insert('D', 'OLD')],
    ];
    for (const [event, timing, body] of bodies) {
      const create = `TRIGGER ${name(event)} AFTER ${timing} ON ${quoteTable(table)} FOR EACH ROW ${body}`;
      // MariaDB replaces a trigger in one step; MySQL has no OR REPLACE, so a re-install drops
      // first (writes in between are not logged; the first install has nothing to replace).
      if (flavor === 'mariadb') install.push(`CREATE OR REPLACE ${create}`);
      else install.push(`DROP TRIGGER IF EXISTS ${name(event)}`, `CREATE ${create}`);
      remove.push(`DROP TRIGGER IF EXISTS ${name(event)}`);
    }
  }
  remove.push(`DROP TABLE IF EXISTS ${quoteTable(request.changelog)}`);
  return { install, remove };
}

// ---------------------------------------------------------------- reading the change log

/**
 * The SQL that turns logged key text back into a key column's own type, so the join with the
 * table compares like with like and uses the table's key index.
 */
export function keyFromText(column: NativeColumn, text: string): string {
  const columnType = column.columnType.toLowerCase();
  const { dataType } = column;
  if (INTEGER_TYPES.has(dataType) || dataType === 'year') {
    return `CAST(${text} AS ${/unsigned/.test(columnType) ? 'UNSIGNED' : 'SIGNED'})`;
  }
  if (BINARY_TYPES.has(dataType)) return `UNHEX(${text})`;
  switch (dataType) {
    case 'bit':
      return `CAST(${text} AS UNSIGNED)`;
    case 'decimal':
    case 'numeric': {
      const m = /\((\d+)(?:,(\d+))?\)/.exec(columnType);
      return `CAST(${text} AS DECIMAL(${m?.[1] ?? 10},${m?.[2] ?? 0}))`;
    }
    case 'float':
    case 'double':
    case 'real':
      return `CAST(${text} AS DOUBLE)`;
    case 'date':
      return `CAST(${text} AS DATE)`;
    case 'time':
      return `CAST(${text} AS TIME(6))`;
    case 'datetime':
    case 'timestamp':
      // TIMESTAMP keys were logged as UTC text, and the reader's session is in UTC.
      return `CAST(${text} AS DATETIME(6))`;
  }
  const { charset, collation } = column;
  if (charset && collation && /^\w+$/.test(charset) && /^\w+$/.test(collation)) {
    // The column's own collation: any other would compare differently and skip the index.
    return `CONVERT(${text} USING ${charset}) COLLATE ${collation}`;
  }
  return text;
}

/** Turns a key value read through keyFromText into its wire value. */
export function keyConverter(column: NativeColumn, type: LogicalType): ReadConverter {
  switch (type) {
    case 'int':
      return (v) => Number(v);
    case 'bigint':
      return (v) => String(v);
    case 'bool':
      return (v) => Number(v) !== 0;
    case 'float':
      return column.dataType === 'float'
        ? (v) => shortestFloat32(Number(v))
        : (v: unknown): WireValue => Number(v);
    default:
      return readConverter(type, column.dataType);
  }
}

export interface ChangelogSqlRequest {
  changelog: string;
  table: string;
  /** The key columns, in key order. */
  key: NativeColumn[];
  /** The row's columns to select, already qualified with `t.`. */
  selects: string[];
  /** Which change-log rows: a condition on `log_id` (see positionWindowSql in sql.ts). */
  window: string;
}

/**
 * Each key logged in the window, once, with the table's row for it when there still is one:
 * `found, key values…, row columns…`, in the order of each key's latest log_id.
 */
export function changelogSql(request: ChangelogSqlRequest): string {
  const texts = request.key.map((_, i) => `JSON_UNQUOTE(JSON_EXTRACT(c.key_values, '$[${i}]'))`);
  const typed = request.key.map((k, i) => keyFromText(k, texts[i]!));
  const join = request.key.map((k, i) => `t.${quoteIdent(k.name)} = ${typed[i]}`).join(' AND ');
  return (
    `SELECT t.${quoteIdent(request.key[0]!.name)} IS NOT NULL AS found, ${typed.join(', ')}, ${request.selects.join(', ')}` +
    ` FROM (SELECT key_values, MAX(log_id) AS last_id FROM ${quoteTable(request.changelog)}` +
    ` WHERE table_name = ${nameLiteral(request.table)} AND (${request.window})` +
    ` GROUP BY key_values) c` +
    ` LEFT JOIN ${quoteTable(request.table)} t ON ${join}` +
    ` ORDER BY c.last_id`
  );
}

// ---------------------------------------------------------------- checking what is installed

/** The triggers of one database (`?`: its name, or null for the connection's). */
export const TRIGGERS_SQL =
  'SELECT EVENT_OBJECT_TABLE AS table_name, TRIGGER_NAME AS trigger_name, ACTION_STATEMENT AS statement' +
  ' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = COALESCE(?, DATABASE())';

/** A trigger as information_schema.TRIGGERS lists it. */
export interface InstalledTrigger {
  table_name: string;
  trigger_name: string;
  statement: string;
}

/**
 * What is missing for `request` to be captured, or null when everything is there: the change log,
 * and for each table its three triggers writing into it. `triggers` are those of the tables'
 * databases. `triggersHidden` says no trigger showed at all: the reader may lack the privilege to
 * see them rather than the triggers be missing.
 */
export function missingCapture(
  request: CaptureRequest,
  triggers: InstalledTrigger[],
  changelogExists: boolean,
): { message: string; triggersHidden: boolean } | null {
  if (!changelogExists) {
    return { message: `the change log ${request.changelog} does not exist`, triggersHidden: false };
  }
  const logName = splitTable(request.changelog)[1];
  const byName = new Map(triggers.map((t) => [t.trigger_name, t]));
  const missing: string[] = [];
  for (const { table } of request.tables) {
    const name = splitTable(table)[1];
    for (const event of ['ins', 'upd', 'del']) {
      const trigger = byName.get(triggerName(request.changelog, table, event));
      const ok =
        trigger !== undefined && trigger.table_name === name && trigger.statement.includes(logName);
      if (!ok)
        missing.push(
          `${table} (${event === 'ins' ? 'insert' : event === 'upd' ? 'update' : 'delete'})`,
        );
    }
  }
  if (missing.length === 0) return null;
  return {
    message: `change capture is not installed for ${missing.join(', ')}: their writes would never reach the change log`,
    triggersHidden: triggers.length === 0,
  };
}
