/**
 * Change capture on SQL Server (`changelog` mode): the change-log table, one trigger per table
 * that fills it, and the read that turns the log back into rows and deletes.
 *
 * The change log has the columns every engine's has (see CHANGELOG_LOGID_COLUMN):
 * - `log_id rowversion`: SQL Server stamps every insert with the next value of the database's
 *   rowversion counter, and MIN_ACTIVE_ROWVERSION() tells exactly which values are still held
 *   by open transactions, so the high-water mark over the log is exact, needs no privilege and
 *   no waiting (an IDENTITY would need the lock DMVs and VIEW SERVER STATE; see high-water.ts).
 *   The adapter reads and compares it as the bigint counter it is; values are increasing but not
 *   consecutive (the counter is shared by every rowversion column of the database).
 * - `table_name nvarchar(255)`: the table as configured (SQL Server names are Unicode).
 * - `op char(1)`: I, U or D. `key_values nvarchar(max)`: a JSON array of the key values as
 *   text, in key order. `changed_at datetime2(6)`: the server's wall clock.
 *
 * Needs SQL Server 2016 SP1 or later (CREATE OR ALTER, JSON_VALUE, STRING_ESCAPE); JSON_VALUE
 * works at every compatibility level (only OPENJSON, not used, needs 130).
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../../errors.js';
import type {
  CaptureDdl,
  CaptureRequest,
  ChangelogRow,
  ColumnInfo,
  LogicalType,
} from '../types.js';
import { literal, logIdKind, logIdRange, tableName, type Query, type TableName } from './sql.js';
import { parsePosition, windowCondition } from './window.js';
import { quoteIdent, type MssqlColumn, type WireReader } from './types.js';

/** A base type for a key column described only by the contract's ColumnInfo. */
const BASE_TYPE_OF_LOGICAL: Partial<Record<LogicalType, string>> = {
  int: 'int',
  bigint: 'bigint',
  decimal: 'decimal',
  float: 'float',
  bool: 'bit',
  text: 'nvarchar',
  binary: 'varbinary',
  date: 'date',
  time: 'time',
  timestamp: 'datetime2',
  timestamptz: 'datetimeoffset',
  uuid: 'uniqueidentifier',
};

function baseTypeOf(column: ColumnInfo): string | undefined {
  const native = /^[a-z0-9]+/i.exec(column.nativeType ?? '')?.[0]?.toLowerCase();
  return native ?? BASE_TYPE_OF_LOGICAL[column.type];
}

/**
 * The text a key value is logged as (nvarchar), one rendering per type so that the same key is
 * always the same text (the reader groups by it), and that `keyFromText` reads back exactly:
 * money with 4 decimals (style 2), float with 17 digits (style 3), binary as 0x hex (style 1),
 * dates ISO (23, 121), datetimeoffset in UTC, uuids in lowercase. Undefined for a type that
 * cannot be a key (text, ntext, image, xml, rowversion, ...).
 */
export function keyText(baseType: string, expr: string): string | undefined {
  switch (baseType) {
    case 'tinyint':
    case 'smallint':
    case 'int':
    case 'bigint':
    case 'decimal':
    case 'numeric':
      return `CONVERT(nvarchar(40), ${expr})`;
    case 'money':
    case 'smallmoney':
      return `CONVERT(nvarchar(40), ${expr}, 2)`;
    case 'float':
    case 'real':
      return `CONVERT(nvarchar(40), ${expr}, 3)`;
    case 'bit':
      return `CONVERT(nvarchar(1), ${expr})`;
    case 'char':
    case 'varchar':
    case 'nchar':
    case 'nvarchar':
      return `CONVERT(nvarchar(max), ${expr})`;
    case 'uniqueidentifier':
      return `LOWER(CONVERT(nvarchar(36), ${expr}))`;
    case 'date':
      return `CONVERT(nvarchar(10), ${expr}, 23)`;
    case 'time':
      return `CONVERT(nvarchar(16), ${expr}, 121)`;
    case 'datetime':
    case 'smalldatetime':
    case 'datetime2':
      return `CONVERT(nvarchar(27), ${expr}, 121)`;
    case 'datetimeoffset':
      return `CONVERT(nvarchar(34), SWITCHOFFSET(${expr}, '+00:00'), 121)`;
    case 'binary':
    case 'varbinary':
      return `CONVERT(nvarchar(max), ${expr}, 1)`;
    default:
      return undefined;
  }
}

/**
 * A logged key value (`text`, nvarchar) back in the key column's own type, so that the join on
 * the key seeks the table's index; strings take the column's collation (the log's may differ,
 * and comparing two collations fails).
 */
export function keyFromText(column: MssqlColumn, text: string): string {
  const native = column.nativeType;
  switch (column.baseType) {
    case 'char':
    case 'varchar':
    case 'nchar':
    case 'nvarchar': {
      const valid = column.collation !== null && /^\w+$/.test(column.collation);
      return `CONVERT(${native}, ${text}${valid ? ` COLLATE ${column.collation}` : ''})`;
    }
    case 'date':
      return `CONVERT(date, ${text}, 23)`;
    case 'datetime':
    case 'smalldatetime':
    case 'datetime2':
      return `CONVERT(${native}, ${text}, 121)`;
    case 'binary':
    case 'varbinary':
      return `CONVERT(${native}, ${text}, 1)`;
    default:
      if (keyText(column.baseType, text) === undefined) {
        throw new ConfigError(`key column ${column.name} is ${native}, which cannot be a key`);
      }
      // Numbers, bit, uuid, time and datetimeoffset (ISO 8601 with an offset) parse unstyled.
      return `CONVERT(${native}, ${text})`;
  }
}

/** SQL Server's limit on an identifier. */
const MAX_IDENTIFIER = 128;

/** `name`, or when longer than an identifier may be, its start and a hash of the whole. */
function identifier(name: string): string {
  if (name.length <= MAX_IDENTIFIER) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, MAX_IDENTIFIER - 9)}_${hash}`;
}

/**
 * The trigger of `table` for change log `changelog`: `<changelog>_<table>`, in the table's
 * schema (a trigger lives with its table). Shortened with a hash when too long.
 */
export function triggerName(changelog: TableName, table: TableName): string {
  return identifier(`${changelog.name}_${table.name}`);
}

/** `["42","2026-01-02"]` for the row `alias` of inserted/deleted, NULL key values as null. */
function keyJson(alias: string, key: ColumnInfo[], table: TableName): string {
  const parts = key.map((k) => {
    const col = `${alias}.${quoteIdent(k.name)}`;
    const base = baseTypeOf(k);
    const text = base === undefined ? undefined : keyText(base, col);
    if (text === undefined) {
      throw new ConfigError(
        `table ${table.label}: key column ${k.name} (${k.nativeType ?? k.type}) cannot be captured`,
        { hint: 'use a key of numbers, strings, dates, times, uuids or binary' },
      );
    }
    return `CASE WHEN ${col} IS NULL THEN N'null' ELSE N'"' + STRING_ESCAPE(${text}, 'json') + N'"' END`;
  });
  return `N'[' + ${parts.join(" + N',' + ")} + N']'`;
}

/** The change-log table and its index, unless they exist. */
function changelogTableSql(log: TableName): string {
  return [
    `IF OBJECT_ID(${literal(log.quoted)}, N'U') IS NULL`,
    'BEGIN',
    `CREATE TABLE ${log.quoted} (`,
    '  log_id rowversion NOT NULL PRIMARY KEY CLUSTERED,',
    '  table_name nvarchar(255) NOT NULL,',
    '  op char(1) NOT NULL,',
    '  key_values nvarchar(max) NOT NULL,',
    '  changed_at datetime2(6) NOT NULL DEFAULT SYSDATETIME()',
    ');',
    `CREATE INDEX ${quoteIdent(identifier(`${log.name}_table_log_id`))} ON ${log.quoted} (table_name, log_id) INCLUDE (key_values);`,
    'END',
  ].join('\n');
}

/**
 * One statement trigger over `inserted`/`deleted` (set-based: a statement touching a million
 * rows logs them with two INSERT ... SELECTs). Inserted rows log their (new) key, as U when the
 * statement was an UPDATE; deleted rows log their key as D unless the same key is among the
 * inserted rows (an UPDATE that kept it). An UPDATE that changes a key so logs the old key as D
 * and the new one as U. CREATE OR ALTER makes installing again harmless.
 */
function triggerSql(log: TableName, table: TableName, configured: string, key: ColumnInfo[]) {
  const trigger = `${quoteIdent(table.schema)}.${quoteIdent(triggerName(log, table))}`;
  const name = literal(configured);
  const sameKey = key.map((k) => `i.${quoteIdent(k.name)} = d.${quoteIdent(k.name)}`).join(' AND ');
  return [
    `CREATE OR ALTER TRIGGER ${trigger} ON ${table.quoted}`,
    'AFTER INSERT, UPDATE, DELETE',
    'AS',
    'BEGIN',
    'SET NOCOUNT ON;',
    `INSERT INTO ${log.quoted} (table_name, op, key_values)`,
    `SELECT ${name}, CASE WHEN EXISTS (SELECT 1 FROM deleted) THEN 'U' ELSE 'I' END, ${keyJson('i', key, table)}`,
    'FROM inserted AS i;',
    `INSERT INTO ${log.quoted} (table_name, op, key_values)`,
    `SELECT ${name}, 'D', ${keyJson('d', key, table)}`,
    'FROM deleted AS d',
    `WHERE NOT EXISTS (SELECT 1 FROM inserted AS i WHERE ${sameKey});`,
    'END',
  ].join('\n');
}

/**
 * The DDL of `deltasync capture`: install creates the change log (unless it exists) and
 * (re)creates each table's trigger; remove drops the triggers, then the change log.
 */
export function captureDdl(request: CaptureRequest, defaultSchema: string): CaptureDdl {
  const log = tableName(request.changelog, defaultSchema);
  const install = [changelogTableSql(log)];
  const remove: string[] = [];
  for (const t of request.tables) {
    const table = tableName(t.table, defaultSchema);
    if (t.key.length === 0)
      throw new ConfigError(`table ${table.label}: no key columns to capture`);
    install.push(triggerSql(log, table, t.table, t.key));
    remove.push(
      `DROP TRIGGER IF EXISTS ${quoteIdent(table.schema)}.${quoteIdent(triggerName(log, table))}`,
    );
  }
  remove.push(`DROP TABLE IF EXISTS ${log.quoted}`);
  return { install, remove };
}

/** What readChangelog reads: the log, the table, and how each value leaves the server. */
export interface ChangelogQueryRequest {
  changelog: TableName;
  logId: MssqlColumn;
  /** The table as configured: what the triggers log as table_name. */
  configured: string;
  table: TableName;
  key: MssqlColumn[];
  /** Wire renderings of the key values parsed from the log (over `k.k0`, `k.k1`, ...). */
  keySelect: string[];
  /** Wire renderings of the row's columns (over `t.[col]`). */
  rowSelect: string[];
  after: string;
  upTo: string;
}

/**
 * Each key the log names for the table in (after, upTo], once, in the order of its latest
 * log_id; joined to the table on its key. Columns: `found` (1 when the row exists), the key
 * values, then the row's values.
 */
export function readChangelogQuery(req: ChangelogQueryRequest): Query {
  if (req.key.length === 0) throw new ConfigError(`table ${req.table.label}: no key columns`);
  // A rowversion log is read by positions (see window.ts); plain logIds are positions too.
  const range: Query =
    logIdKind(req.logId) === 'rowversion'
      ? {
          text: `(${windowCondition(quoteIdent(req.logId.name), parsePosition(req.after), parsePosition(req.upTo))})`,
          params: [],
        }
      : logIdRange(req.logId, req.after, req.upTo);
  const parsed = req.key.map(
    (k, i) => `${keyFromText(k, `JSON_VALUE(c.key_values, '$[${i}]')`)} AS k${i}`,
  );
  const join = req.key.map((k, i) => `t.${quoteIdent(k.name)} = k.k${i}`).join(' AND ');
  const text = [
    'WITH changed AS (',
    `SELECT key_values, MAX(${quoteIdent(req.logId.name)}) AS last_log_id FROM ${req.changelog.quoted}`,
    `WHERE table_name = @table AND ${range.text}`,
    'GROUP BY key_values',
    ')',
    `SELECT CASE WHEN t.${quoteIdent(req.key[0]!.name)} IS NULL THEN 0 ELSE 1 END AS found, ` +
      [...req.keySelect, ...req.rowSelect].join(', '),
    'FROM changed AS c',
    `CROSS APPLY (SELECT ${parsed.join(', ')}) AS k`,
    `LEFT JOIN ${req.table.quoted} AS t ON ${join}`,
    'ORDER BY c.last_log_id',
  ].join('\n');
  return {
    text,
    params: [
      { name: 'table', type: 'NVarChar', length: 255, value: req.configured },
      ...range.params,
    ],
  };
}

/**
 * One row of readChangelogQuery as a change: the row as it is now when it exists, else the
 * key of a deleted row (the key values the log named, in wire form).
 */
export function toChangelogRow(
  row: unknown[],
  keyReads: WireReader[],
  rowReads: WireReader[],
): ChangelogRow {
  if (Number(row[0]) === 1) {
    return { op: 'upsert', row: rowReads.map((read, i) => read(row[1 + keyReads.length + i])) };
  }
  return { op: 'delete', key: keyReads.map((read, i) => read(row[1 + i])) };
}

// ---------------------------------------------------------------- checking what is installed

/**
 * Whether the change log exists (`log`) and, for each captured table in order, whether its
 * trigger exists (`t0`, `t1`, …: 1 enabled, 0 disabled, NULL missing). One round trip.
 */
export function captureStateSql(request: CaptureRequest, defaultSchema: string): string {
  const log = tableName(request.changelog, defaultSchema);
  const checks = request.tables.map((t, i) => {
    const table = tableName(t.table, defaultSchema);
    const trigger = `${quoteIdent(table.schema)}.${quoteIdent(triggerName(log, table))}`;
    return (
      `(SELECT CASE WHEN tr.is_disabled = 0 THEN 1 ELSE 0 END FROM sys.triggers AS tr` +
      ` WHERE tr.object_id = OBJECT_ID(${literal(trigger)}) AND tr.parent_id = OBJECT_ID(${literal(table.quoted)})) AS t${i}`
    );
  });
  return [
    `SELECT CASE WHEN OBJECT_ID(${literal(log.quoted)}, N'U') IS NULL THEN 0 ELSE 1 END AS log`,
    ...checks,
  ].join(', ');
}

/** What is missing or disabled according to a captureStateSql row, or null when all is there. */
export function missingCapture(
  request: CaptureRequest,
  state: Record<string, unknown>,
): string | null {
  if (Number(state.log) !== 1) return `the change log ${request.changelog} does not exist`;
  const problems = request.tables.flatMap((t, i) => {
    const v = state[`t${i}`];
    if (v === null || v === undefined) return [`${t.table} (no trigger)`];
    return Number(v) === 1 ? [] : [`${t.table} (trigger disabled)`];
  });
  if (problems.length === 0) return null;
  return `change capture is not installed for ${problems.join(', ')}: their writes would never reach the change log`;
}
