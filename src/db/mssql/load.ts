/**
 * The SQL that applies a delta to a SQL Server target: the staging table the rows are bulk
 * loaded into, and the one MERGE that moves them into the target. Pure functions of the delta's
 * and the target's columns, so that unit tests can check every statement without a server.
 */
import { ConfigError } from '../../errors.js';
import type { ColumnInfo } from '../types.js';
import { literal, type TableName } from './sql.js';
import { notingScale, stageFor } from './stage.js';
import {
  driverWriter,
  quoteIdent,
  type DriverType,
  type DriverWriter,
  type MssqlColumn,
} from './types.js';

/** One column of the staging table: a delta column on its way to a target column. */
export interface StagingColumn {
  /** `c0`, `c1`, ...: positional, so no user identifier reaches the bulk load's column list. */
  name: string;
  source: ColumnInfo;
  target: MssqlColumn;
  driver: DriverType;
  length?: number | 'max';
  /** The column's DDL type, e.g. `nvarchar(100) COLLATE Latin1_General_CI_AS`. */
  declaration: string;
  /** SQL (over alias `st`) giving the typed value to write. */
  value: string;
  key: boolean;
  write: DriverWriter;
  /** Decimals: the largest scale among the staged values (see notingScale). */
  digits?: { scale: number };
}

/** The staging table's extra column: row order in the delta, so the last row per key wins. */
export const SEQ_COLUMN = 'seq';

/** Everything one applyRows needs, worked out before a single row is read. */
export interface ApplyPlan {
  staging: StagingColumn[];
  createStaging: string;
  merge: string;
  dropStaging: string;
}

const DRIVER_DECLARATIONS: Record<DriverType, string> = {
  TinyInt: 'tinyint',
  SmallInt: 'smallint',
  Int: 'int',
  BigInt: 'bigint',
  Float: 'float',
  Bit: 'bit',
  NVarChar: 'nvarchar',
  VarChar: 'varchar',
  VarBinary: 'varbinary',
  UniqueIdentifier: 'uniqueidentifier',
};

/**
 * A staged string column takes the target column's collation: temp tables otherwise take
 * tempdb's, and comparing the two in the MERGE fails with a collation conflict.
 */
function declare(driver: DriverType, length: number | 'max' | undefined, collation: string | null) {
  const sized =
    length === undefined
      ? DRIVER_DECLARATIONS[driver]
      : `${DRIVER_DECLARATIONS[driver]}(${length})`;
  if (driver !== 'NVarChar' && driver !== 'VarChar') return sized;
  const valid = collation !== null && /^\w+$/.test(collation);
  return `${sized} COLLATE ${valid ? collation : 'DATABASE_DEFAULT'}`;
}

function findColumn(columns: MssqlColumn[], name: string): MssqlColumn | undefined {
  // Exact first; SQL Server identifiers are usually case-insensitive, so fall back to that.
  return (
    columns.find((c) => c.name === name) ??
    columns.find((c) => c.name.toLowerCase() === name.toLowerCase())
  );
}

/** Why a delta column cannot be written to the target column of its name, if it cannot. */
function mappingProblem(name: string, t: MssqlColumn | undefined): string | undefined {
  if (!t) return `no column ${name}`;
  if (!t.type) return `column ${t.name} is ${t.nativeType}, which deltasync cannot write`;
  if (t.computed) return `column ${t.name} is computed and cannot be written`;
  if (t.baseType === 'rowversion') return `column ${t.name} is rowversion and cannot be written`;
  return undefined;
}

/** Maps delta columns to target columns, reporting every problem at once. */
export function stagingColumns(
  table: TableName,
  key: string[],
  columns: ColumnInfo[],
  target: MssqlColumn[],
): StagingColumn[] {
  const problems: string[] = [];
  if (key.length === 0) problems.push('no key columns');
  for (const k of key) {
    if (!columns.some((c) => c.name === k))
      problems.push(`key column ${k} is not among the delta's columns`);
  }
  const staging: StagingColumn[] = [];
  for (const [i, source] of columns.entries()) {
    const t = findColumn(target, source.name);
    const problem = mappingProblem(source.name, t);
    if (t === undefined || problem !== undefined) {
      problems.push(problem ?? `no column ${source.name}`); // (the ?? only satisfies the compiler)
      continue;
    }
    const name = `c${i}`;
    const staged = stageFor(source.type, t);
    const write = driverWriter(source.type, staged.driver, source.name);
    const digits = source.type === 'decimal' ? { scale: 0 } : undefined;
    staging.push({
      name,
      source,
      target: t,
      driver: staged.driver,
      length: staged.length,
      declaration: declare(staged.driver, staged.length, t.collation),
      value: staged.parse(`st.${name}`),
      key: key.includes(source.name),
      write: digits ? notingScale(write, digits) : write,
      ...(digits ? { digits } : {}),
    });
  }
  if (problems.length > 0) {
    throw new ConfigError(`target table ${table.label}: ${problems.join('; ')}`, {
      hint: 'make the target table match the delta, or change the job mapping',
    });
  }
  return staging;
}

/** `#stage_<table>_<random>`: local to the session, and dropped by a rollback. */
export function stagingTableName(table: TableName, suffix: string): string {
  return `#stage_${table.name.replace(/\W/g, '').slice(0, 40)}_${suffix}`;
}

/** The staging table: the positional columns, all nullable, then seq. */
export function createStagingSql(staging: string, columns: StagingColumn[]): string {
  const defs = columns.map((c) => `${quoteIdent(c.name)} ${c.declaration} NULL`);
  return `CREATE TABLE ${quoteIdent(staging)} (${[...defs, `${quoteIdent(SEQ_COLUMN)} bigint NOT NULL`].join(', ')})`;
}

const STRING_TYPES = new Set([
  'char',
  'varchar',
  'nchar',
  'nvarchar',
  'text',
  'ntext',
  'xml',
  'json',
]);
const BINARY_TYPES = new Set(['binary', 'varbinary', 'image']);
/** Blank-padded to their length: trailing spaces are padding, not content. */
const PADDED_TYPES = new Set(['char', 'nchar']);

/**
 * Expressions that are equal exactly when the stored values are. Strings compare as UTF-16
 * bytes plus their length, so that neither a case-insensitive collation nor SQL Server's habit of
 * ignoring trailing spaces hides a change (char/nchar are compared without their padding, which
 * the column adds anyway); binary compares with its length so that trailing zero bytes count.
 * text, ntext, image and xml cannot be compared at all until converted.
 */
function comparable(baseType: string, expr: string): string[] {
  if (STRING_TYPES.has(baseType)) {
    const raw = `CONVERT(nvarchar(max), ${expr})`;
    const text = PADDED_TYPES.has(baseType) ? `RTRIM(${raw})` : raw;
    return [`CONVERT(varbinary(max), ${text})`, `DATALENGTH(${text})`];
  }
  if (BINARY_TYPES.has(baseType)) {
    const bytes = `CONVERT(varbinary(max), ${expr})`;
    return [bytes, `DATALENGTH(${bytes})`];
  }
  return [expr];
}

/**
 * The incoming value as the column would store it (rounded to its precision and scale), so
 * that a value that only differs below the column's precision is not a change. Strings and
 * binary are left alone: CONVERT would truncate them silently, and a value too long for the
 * column must reach the UPDATE and fail there.
 */
function asStored(column: StagingColumn): string {
  const { baseType, nativeType } = column.target;
  const unconverted = STRING_TYPES.has(baseType) || BINARY_TYPES.has(baseType);
  return unconverted ? `s.${column.name}` : `CONVERT(${nativeType}, s.${column.name})`;
}

/** Single-byte string columns: a key of theirs is compared as varchar, never as nvarchar. */
const SINGLE_BYTE_STRINGS = new Set(['char', 'varchar']);

/**
 * The staged value `value` of a key column, in the form to compare with the target column.
 * Staged strings are nvarchar; comparing a varchar column with nvarchar converts the column,
 * which turns an index seek into a scan and, under a SQL_ collation, compares by Unicode rules
 * instead of the column's own. A sized column's key is compared as varchar(8000): before a
 * MERGE the fit check (stage.ts) has refused any key longer than the column, so none is cut
 * here; a key staged for a delete is not checked, and one longer than 8000 bytes could only
 * match a varchar(8000) row holding exactly its first 8000 bytes. The staging column carries the
 * target's collation, hence its code page.
 */
export function keyMatch(target: MssqlColumn, value: string): string {
  if (!SINGLE_BYTE_STRINGS.has(target.baseType)) return value;
  return `CONVERT(varchar(${target.length === 'max' ? 'max' : 8000}), ${value})`;
}

/**
 * One MERGE from the staging table into the target: the last staged row per key (by seq),
 * updating a matched row only when a mapped column differs (so re-applying a delta writes
 * nothing; `EXISTS (SELECT new EXCEPT SELECT old)` is the NULL-safe way to say "differs"),
 * inserting the rest. Only the delta's columns are named. An identity column gets
 * IDENTITY_INSERT for the statement, and is never updated (SQL Server cannot).
 */
export function mergeSql(table: TableName, staging: string, columns: StagingColumn[]): string {
  const keys = columns.filter((c) => c.key);
  const updatable = columns.filter((c) => !c.key && !c.target.identity);
  const ranked =
    `SELECT ${columns.map((c) => `${c.value} AS ${c.name}`).join(', ')}, ` +
    `ROW_NUMBER() OVER (PARTITION BY ${keys.map((c) => c.value).join(', ')} ORDER BY st.${SEQ_COLUMN} DESC) AS rn ` +
    `FROM ${quoteIdent(staging)} AS st`;
  const lines = [
    `MERGE INTO ${table.quoted} WITH (HOLDLOCK) AS t`,
    `USING (SELECT ${columns.map((c) => c.name).join(', ')} FROM (${ranked}) AS d WHERE d.rn = 1) AS s`,
    `ON ${keys.map((c) => `t.${quoteIdent(c.target.name)} = ${keyMatch(c.target, `s.${c.name}`)}`).join(' AND ')}`,
  ];
  if (updatable.length > 0) {
    const stored = updatable.flatMap((c) =>
      comparable(c.target.baseType, `t.${quoteIdent(c.target.name)}`),
    );
    const incoming = updatable.flatMap((c) => comparable(c.target.baseType, asStored(c)));
    lines.push(
      `WHEN MATCHED AND EXISTS (SELECT ${incoming.join(', ')} EXCEPT SELECT ${stored.join(', ')}) THEN`,
      `  UPDATE SET ${updatable.map((c) => `t.${quoteIdent(c.target.name)} = s.${c.name}`).join(', ')}`,
    );
  }
  lines.push(
    'WHEN NOT MATCHED BY TARGET THEN',
    `  INSERT (${columns.map((c) => quoteIdent(c.target.name)).join(', ')}) VALUES (${columns.map((c) => `s.${c.name}`).join(', ')});`,
  );
  const merge = lines.join('\n');
  if (!columns.some((c) => c.target.identity)) return merge;
  // SET IDENTITY_INSERT outlives a failed statement and a rollback, and only one table per
  // session may have it: switch it off again whatever happens.
  const off = `SET IDENTITY_INSERT ${table.quoted} OFF;`;
  return [
    `SET IDENTITY_INSERT ${table.quoted} ON;`,
    'BEGIN TRY',
    merge,
    'END TRY',
    'BEGIN CATCH',
    off,
    'THROW;',
    'END CATCH;',
    off,
  ].join('\n');
}

/** Plans one applyRows: staging columns, staging DDL, the MERGE and the clean-up. */
export function planApply(
  table: TableName,
  key: string[],
  columns: ColumnInfo[],
  target: MssqlColumn[],
  staging: string,
): ApplyPlan {
  const cols = stagingColumns(table, key, columns, target);
  return {
    staging: cols,
    createStaging: createStagingSql(staging, cols),
    merge: mergeSql(table, staging, cols),
    dropStaging: `DROP TABLE ${quoteIdent(staging)}`,
  };
}

/** Everything one deleteRows needs: the key-only staging table and the DELETE. */
export interface DeletePlan {
  staging: StagingColumn[];
  createStaging: string;
  delete: string;
  dropStaging: string;
}

/**
 * Deletes the target rows whose keys are staged, and reports how many went (`deleted`). A key
 * staged twice deletes its row once; a key that is not there deletes nothing.
 */
export function deleteSql(
  table: TableName,
  staging: string,
  keys: StagingColumn[],
  notIn = false,
): string {
  const match = keys
    .map((c) => `t.${quoteIdent(c.target.name)} = ${keyMatch(c.target, c.value)}`)
    .join(' AND ');
  return (
    `DELETE t FROM ${table.quoted} AS t WHERE ${notIn ? 'NOT ' : ''}EXISTS (SELECT 1 FROM ${quoteIdent(staging)} AS st WHERE ${match});\n` +
    'SELECT @@ROWCOUNT AS deleted;'
  );
}

/**
 * Plans one deleteRows: the key columns staged as applyRows stages them, then one DELETE of the
 * rows whose keys were staged or, with `notIn` (a base table), of those whose keys were not.
 */
export function planDelete(
  table: TableName,
  key: ColumnInfo[],
  target: MssqlColumn[],
  staging: string,
  notIn = false,
): DeletePlan {
  const cols = stagingColumns(
    table,
    key.map((k) => k.name),
    key,
    target,
  );
  return {
    staging: cols,
    createStaging: createStagingSql(staging, cols),
    delete: deleteSql(table, staging, cols, notIn),
    dropStaging: `DROP TABLE ${quoteIdent(staging)}`,
  };
}

/** Where a transaction remembers the foreign keys it switched off, to switch them on again. */
export const RELAXED_TABLE = '#deltasync_relaxed_fks';

/**
 * Switches off (NOCHECK) every enabled foreign key from or to these tables for the rest of the
 * transaction, remembering each in RELAXED_TABLE: rows of one delta that reference each other
 * then apply in any order, and a DELETE of several rows is not checked row by row. ALTER TABLE
 * is transactional in SQL Server, so a rollback switches them back on by itself; it needs the
 * ALTER permission on the tables. restoreForeignKeysSql re-checks them before commit.
 */
export function relaxForeignKeysSql(tables: TableName[]): string {
  const ids = tables.map((t) => `OBJECT_ID(${literal(t.quoted)})`).join(', ');
  const child = `QUOTENAME(OBJECT_SCHEMA_NAME(fk.parent_object_id)) + N'.' + QUOTENAME(OBJECT_NAME(fk.parent_object_id))`;
  return [
    `IF OBJECT_ID(N'tempdb..${RELAXED_TABLE}') IS NULL CREATE TABLE ${RELAXED_TABLE} (child nvarchar(600) NOT NULL, fk nvarchar(300) NOT NULL);`,
    `INSERT INTO ${RELAXED_TABLE} (child, fk) SELECT ${child}, QUOTENAME(fk.name) FROM sys.foreign_keys AS fk`,
    `  WHERE fk.is_disabled = 0 AND (fk.parent_object_id IN (${ids}) OR fk.referenced_object_id IN (${ids}));`,
    `DECLARE @off nvarchar(max) = N'';`,
    `SELECT @off = @off + N'ALTER TABLE ' + child + N' NOCHECK CONSTRAINT ' + fk + N';' FROM ${RELAXED_TABLE};`,
    `EXEC sp_executesql @off;`,
  ].join('\n');
}

/**
 * Switches the foreign keys relaxForeignKeysSql switched off back on WITH CHECK, which checks
 * every row again (so a delta that left a row without its parent fails here, error 547) and
 * keeps the constraints trusted by the optimizer.
 */
export function restoreForeignKeysSql(): string {
  return [
    `IF OBJECT_ID(N'tempdb..${RELAXED_TABLE}') IS NOT NULL BEGIN`,
    `  DECLARE @on nvarchar(max) = N'';`,
    `  SELECT @on = @on + N'ALTER TABLE ' + child + N' WITH CHECK CHECK CONSTRAINT ' + fk + N';' FROM ${RELAXED_TABLE};`,
    `  DROP TABLE ${RELAXED_TABLE};`,
    `  EXEC sp_executesql @on;`,
    `END`,
  ].join('\n');
}

/**
 * Counts (as `found`) the unique indexes (the primary key too) of the table whose key columns
 * are exactly `key`, in any order, unfiltered: what keeps MERGE from matching one delta row to
 * several replica rows. Without one, load refuses the table (78).
 */
export function uniqueKeySql(table: TableName, key: string[]): string {
  const names = key.map(literal).join(', ');
  const columns = (extra: string) =>
    `SELECT 1 FROM sys.index_columns AS ic JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id` +
    ` WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0${extra}`;
  return (
    `SELECT COUNT(*) AS found FROM sys.indexes AS i WHERE i.object_id = OBJECT_ID(${literal(table.quoted)})` +
    ` AND i.is_unique = 1 AND i.has_filter = 0` +
    ` AND (SELECT COUNT(*) FROM (${columns('')}) AS k) = ${key.length}` +
    ` AND NOT EXISTS (${columns(` AND c.name NOT IN (${names})`)})`
  );
}
