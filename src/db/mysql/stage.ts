/**
 * How a delta column is staged on MariaDB/MySQL before it reaches its replica column, and what
 * proves it fits there unchanged (issue 9: never quietly different). Pure: the SQL is checked by
 * unit tests, and load.ts runs it.
 */
import type { ColumnInfo, LogicalType } from '../types.js';
import { quoteIdent } from './types.js';

/** The staging type of each logical type: wide enough that staging never changes a value. */
const STAGE_TYPES: Record<LogicalType, string> = {
  int: 'BIGINT',
  bigint: 'DECIMAL(65,0)',
  decimal: 'DECIMAL(65,30)',
  float: 'DOUBLE',
  bool: 'TINYINT',
  text: 'LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
  binary: 'LONGBLOB',
  date: 'DATE',
  time: 'TIME(6)',
  timestamp: 'DATETIME(6)',
  timestamptz: 'DATETIME(6)',
  json: 'LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
  uuid: 'CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
};

/** Target data types whose values the stage types above can hold and be checked against. */
const KNOWN_TARGET_TYPES = new Set([
  'tinyint',
  'smallint',
  'mediumint',
  'int',
  'bigint',
  'decimal',
  'float',
  'double',
  'char',
  'varchar',
  'tinytext',
  'text',
  'mediumtext',
  'longtext',
  'json',
  'binary',
  'varbinary',
  'tinyblob',
  'blob',
  'mediumblob',
  'longblob',
  'date',
  'datetime',
  'timestamp',
  'time',
]);

/** [min, max] of each integer type, signed and unsigned. */
const INTEGER_RANGES: Record<string, [string, string, string]> = {
  tinyint: ['-128', '127', '255'],
  smallint: ['-32768', '32767', '65535'],
  mediumint: ['-8388608', '8388607', '16777215'],
  int: ['-2147483648', '2147483647', '4294967295'],
  bigint: ['-9223372036854775808', '9223372036854775807', '18446744073709551615'],
};

/** Byte limits of the TEXT and BLOB types. */
const LOB_BYTES: Record<string, number> = {
  tinytext: 255,
  text: 65535,
  mediumtext: 16777215,
  tinyblob: 255,
  blob: 65535,
  mediumblob: 16777215,
};

const NUMERIC_LOGICAL = new Set<LogicalType>(['int', 'bigint', 'decimal', 'float']);
const TIME_LOGICAL = new Set<LogicalType>(['timestamp', 'timestamptz']);

/**
 * How a delta column is staged, and the SQL condition on the staged value `s.<column>` that is
 * true when the target column would not hold it unchanged (exported for tests). A target type
 * we do not know (ENUM, SET, BIT, YEAR, geometry…) is staged as itself and not checked: only
 * it can parse the value.
 *
 * `quiet`: the part of `misfit` the server lets through with at most a note when the value is
 * written straight into the target in strict mode (it rounds a decimal's scale or into an integer
 * column, and cuts fractional seconds); the rest it refuses with an error.
 */
export function stageColumn(
  column: ColumnInfo,
  target: { dataType: string; columnType: string },
): { stageType: string; misfit: string | null; quiet: string | null } {
  const { dataType } = target;
  const columnType = target.columnType.toLowerCase();
  if (!KNOWN_TARGET_TYPES.has(dataType)) {
    return { stageType: target.columnType, misfit: null, quiet: null };
  }
  const stageType = STAGE_TYPES[column.type];
  const q = `s.${quoteIdent(column.name)}`;
  const unsigned = columnType.includes('unsigned');
  const args = /\((\d+)(?:,(\d+))?\)/.exec(columnType);
  const conds: string[] = [];
  const quiet: string[] = [];
  if (NUMERIC_LOGICAL.has(column.type)) {
    const range = INTEGER_RANGES[dataType];
    if (range) {
      const [min, max, umax] = range;
      if (!(dataType === 'bigint' && !unsigned && column.type === 'int'))
        conds.push(`${q} < ${unsigned ? '0' : min} OR ${q} > ${unsigned ? umax : max}`);
      if (column.type === 'decimal' || column.type === 'float') quiet.push(`${q} <> FLOOR(${q})`);
    } else if (dataType === 'decimal') {
      const precision = args?.[1] ?? '10';
      const scale = args?.[2] ?? '0';
      quiet.push(`CAST(${q} AS DECIMAL(${precision},${scale})) <> ${q}`);
      if (unsigned) conds.push(`${q} < 0`);
    }
    // FLOAT is not checked: a float32 read as its shortest decimal text never equals the
    // float64 it is compared as, though it travels exactly; one out of range fails loudly.
  } else if (TIME_LOGICAL.has(column.type) || column.type === 'time') {
    const fsp = Number(args?.[1] ?? '0');
    if (dataType === 'datetime' || dataType === 'timestamp') {
      if (fsp < 6) quiet.push(`CAST(${q} AS DATETIME(${fsp})) <> ${q}`);
      if (dataType === 'timestamp')
        conds.push(`${q} < '1970-01-01 00:00:01' OR ${q} > '2038-01-19 03:14:07.999999'`);
    } else if (dataType === 'time' && fsp < 6) {
      quiet.push(`CAST(${q} AS TIME(${fsp})) <> ${q}`);
    } else if (dataType === 'date') {
      quiet.push(`CAST(${q} AS DATE) <> ${q}`);
    }
  } else if (dataType === 'char' || dataType === 'varchar') {
    if (args) conds.push(`CHAR_LENGTH(${q}) > ${args[1]}`);
  } else if (dataType === 'binary' || dataType === 'varbinary') {
    if (args) conds.push(`LENGTH(${q}) > ${args[1]}`);
  } else if (LOB_BYTES[dataType] !== undefined) {
    conds.push(`LENGTH(${q}) > ${LOB_BYTES[dataType]}`);
  }
  const condition = (list: string[]) =>
    list.length === 0 ? null : `(${q} IS NOT NULL AND (${list.join(' OR ')}))`;
  return { stageType, misfit: condition([...conds, ...quiet]), quiet: condition(quiet) };
}
