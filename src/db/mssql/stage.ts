/**
 * Proving, before the MERGE, that every staged value fits its SQL Server replica column
 * unchanged (issue 9: never quietly different), and naming the first row that does not; and
 * turning a constraint the MERGE runs into (unique, NOT NULL, foreign key, CHECK, truncation,
 * overflow) into a DeltaError (65). Pure: the SQL is pinned by unit tests, target.ts runs it.
 *
 * The staging table holds each value in the delta's own type (see stageFor): integers as
 * bigint, strings as nvarchar(max), binary as varbinary(max), decimals and date/times as their
 * exact wire text. Here each is read as its widest SQL Server type (decimal(38,s) with s the
 * largest scale the delta's values have, datetime2(7), datetimeoffset(7), time(7)…), cast to the
 * replica column's type and back: a value that comes back different, or not at all, would be
 * rounded or refused. Strings and binary are measured instead (DATALENGTH against the column's
 * length), and a varchar column's code page must hold every character.
 */
import { DeltaError } from '../../errors.js';
import { misfitError } from '../misfit.js';
import type { LogicalType, WireValue } from '../types.js';
import type { TableName } from './sql.js';
import {
  quoteIdent,
  stagingFor,
  type DriverType,
  type MssqlColumn,
  type Staging,
} from './types.js';

/** What the fit check needs of one staging column (a StagingColumn is one). */
export interface CheckedColumn {
  /** The staging column, `c0`, `c1`…. */
  name: string;
  source: { name: string; type: LogicalType };
  target: MssqlColumn;
  /** How the value is staged: strings and binary are measured, the rest roundtripped. */
  driver: DriverType;
  /** SQL (over alias `st`) giving the value the MERGE writes. */
  value: string;
  key: boolean;
  /** For decimals: the largest scale among the delta's values, noted while staging. */
  digits?: { scale: number };
}

const INT_TYPES = new Set(['tinyint', 'smallint', 'int']);

/**
 * How a delta column is staged on its way to `target` (stagingFor, widened): never narrower than
 * the delta's own type, so that staging cannot cut, round or refuse a value; the fit check does
 * that, naming the row. Integers go as bigint (converted to a narrower integer column's type for
 * the MERGE, so keys compare in the column's own type, an index seek), strings as nvarchar(max)
 * and binary as varbinary(max). Decimals, bigints bound for non-integer columns and date/times
 * are staged as their exact wire text already (see stagingFor).
 */
export function stageFor(type: LogicalType, target: MssqlColumn): Staging {
  const staged = stagingFor(type, target);
  if (staged.driver === 'NVarChar' || staged.driver === 'VarBinary')
    return { ...staged, length: 'max' };
  if ((type === 'int' || type === 'bigint') && staged.driver !== 'VarChar') {
    const narrower = INT_TYPES.has(target.baseType);
    return {
      driver: 'BigInt',
      parse: narrower ? (s) => `CONVERT(${target.baseType}, ${s})` : (s) => s,
    };
  }
  return staged;
}

/**
 * Wraps a decimal column's writer to note the largest scale among its values (trailing zeros
 * do not count: 1.50 fits numeric(10,1)), which sizes the decimal(38,s) it is checked as.
 */
export function notingScale<T>(
  write: (value: WireValue) => T,
  digits: { scale: number },
): (value: WireValue) => T {
  return (value) => {
    if (typeof value === 'string') {
      const fraction = /\.(\d*?)0*$/.exec(value);
      if (fraction && fraction[1]!.length > digits.scale) digits.scale = fraction[1]!.length;
    }
    return write(value);
  };
}

/** The stage type of a logical type when read back from the staging column (see wideValue). */
function stageType(type: LogicalType, column: CheckedColumn): string | undefined {
  switch (type) {
    case 'int':
      return 'bigint';
    case 'bigint':
      return 'decimal(38,0)';
    case 'decimal':
      return `decimal(38,${Math.min(column.digits?.scale ?? 0, 38)})`;
    case 'float':
      return 'float';
    case 'date':
      return 'date';
    case 'time':
      return 'time(7)';
    case 'timestamp':
      return 'datetime2(7)';
    case 'timestamptz':
      return 'datetimeoffset(7)';
    default:
      return undefined; // bool, strings, binary, uuid: measured, not roundtripped
  }
}

/** The staged value in its stage type, or NULL when its text does not parse as one. */
function wideValue(type: LogicalType, staged: string, wide: string): string {
  switch (type) {
    case 'int':
    case 'float':
      return staged;
    case 'date':
      return `TRY_CONVERT(date, ${staged}, 23)`;
    case 'timestamp':
      return `TRY_CONVERT(datetime2(7), ${staged}, 121)`;
    default:
      return `TRY_CONVERT(${wide}, ${staged})`;
  }
}

/**
 * Replica types that hold every value of a stage type unchanged: no check. `real` takes floats
 * unchecked as on PostgreSQL: a float64 roundtrip through float32 never compares equal, though a
 * real travels through the delta exactly as its shortest decimal text.
 */
const WIDER: Record<string, string[]> = {
  bigint: ['bigint', 'decimal(38,0)', 'numeric(38,0)'],
  'decimal(38,0)': ['decimal(38,0)', 'numeric(38,0)'],
  float: ['float', 'real'],
  date: ['date'],
  'time(7)': ['time(7)'],
  'datetime2(7)': ['datetime2(7)'],
  'datetimeoffset(7)': ['datetimeoffset(7)'],
};

/**
 * The type a replica value is cast back to, to compare with the staged one. datetime counts in
 * 1/300 s, so .123 is stored as .12333…: back as datetime2(3) it reads .123, as it is read by
 * verify and by every reader; .124 comes back .123 and is refused.
 */
function backType(target: MssqlColumn, wide: string): string {
  return target.baseType === 'datetime' ? 'datetime2(3)' : wide;
}

const UNICODE = new Set(['nchar', 'nvarchar']);
const SINGLE_BYTE = new Set(['char', 'varchar', 'text']);
const BINARY = new Set(['binary', 'varbinary']);

/**
 * The condition (over alias `st`) that is true when the staged value of `column` would not reach
 * its replica column unchanged, or null when it always does. NOT NULL columns fed NULL count.
 */
export function misfitCondition(column: CheckedColumn): string | null {
  const staged = `st.${quoteIdent(column.name)}`;
  const { target } = column;
  const conds: string[] = [];
  const length = typeof target.length === 'number' ? target.length : undefined;
  // The MERGE writes a staged string as it is, and assigning it is what would cut it.
  const text =
    column.value === `st.${column.name}` &&
    (column.driver === 'NVarChar' || column.driver === 'VarChar');
  const bytes = column.value === `st.${column.name}` && column.driver === 'VarBinary';
  if (text && UNICODE.has(target.baseType) && length !== undefined) {
    // nvarchar(n) counts UTF-16 code units, two bytes each; DATALENGTH counts trailing spaces,
    // which SQL Server would otherwise cut off without a word.
    conds.push(`DATALENGTH(${staged}) > ${length * 2}`);
  } else if (text && SINGLE_BYTE.has(target.baseType)) {
    // The column's code page must hold every character (else '?'), and its length counts bytes.
    // The staging column carries the replica column's collation, hence its code page.
    const single = `CONVERT(varchar(max), ${staged})`;
    conds.push(
      `CONVERT(varbinary(max), CONVERT(nvarchar(max), ${single})) <> CONVERT(varbinary(max), ${staged})`,
    );
    if (length !== undefined) conds.push(`DATALENGTH(${single}) > ${length}`);
  } else if (bytes && BINARY.has(target.baseType) && length !== undefined) {
    conds.push(`DATALENGTH(${staged}) > ${length}`);
  } else if (!text && !bytes) {
    const wide = stageType(column.source.type, column);
    if (wide !== undefined && !WIDER[wide]?.includes(target.nativeType)) {
      const w = wideValue(column.source.type, staged, wide);
      const back = `TRY_CONVERT(${backType(target, wide)}, TRY_CONVERT(${target.nativeType}, ${w}))`;
      // A staged text that does not parse as its own type does not fit either.
      if (w !== staged) conds.push(`${w} IS NULL`);
      conds.push(`${back} IS NULL OR ${back} <> ${w}`);
    }
  }
  const misfit = conds.length > 0 ? `(${staged} IS NOT NULL AND (${conds.join(' OR ')}))` : null;
  const refusesNull = !target.nullable && !target.identity;
  const isNull = `${staged} IS NULL`;
  if (refusesNull) return misfit ? `(${isNull} OR ${misfit})` : `(${isNull})`;
  return misfit;
}

/** A staged value as text for a message: binary as 0x…, floats with all their digits. */
function shownValue(column: CheckedColumn): string {
  const staged = `st.${quoteIdent(column.name)}`;
  if (column.source.type === 'binary') return `CONVERT(nvarchar(max), ${staged}, 1)`;
  if (column.source.type === 'float') return `CONVERT(nvarchar(max), ${staged}, 3)`;
  return `CONVERT(nvarchar(max), ${staged})`;
}

/**
 * One set-based query over the staging table: the first row (in delta order) with a value a
 * column would not take unchanged, as its key values (`k0`, `k1`…), the column's index (`col`)
 * and the value (`value`, NULL for a NULL); no row when every value fits; null when no column
 * needs checking.
 */
export function fitCheckSql(staging: string, columns: CheckedColumn[], seq: string): string | null {
  const checked = columns.flatMap((c, i) => {
    const cond = misfitCondition(c);
    return cond ? [{ i, cond, column: c }] : [];
  });
  if (checked.length === 0) return null;
  const keys = columns
    .filter((c) => c.key)
    .map((c, i) => `${shownValue(c)} AS ${quoteIdent(`k${i}`)}`);
  const which = checked.map((c) => `WHEN ${c.cond} THEN ${c.i}`).join(' ');
  const value = checked.map((c) => `WHEN ${c.cond} THEN ${shownValue(c.column)}`).join(' ');
  return (
    `SELECT TOP 1 ${keys.join(', ')}, CASE ${which} END AS col, CASE ${value} END AS value ` +
    `FROM ${quoteIdent(staging)} AS st WHERE ${checked.map((c) => c.cond).join(' OR ')} ` +
    `ORDER BY st.${quoteIdent(seq)}`
  );
}

/** The DeltaError for the row fitCheckSql found. */
export function fitCheckError(
  table: TableName,
  columns: CheckedColumn[],
  found: Record<string, unknown>,
): DeltaError {
  const keys = columns.filter((c) => c.key);
  const column = columns[Number(found.col)]!;
  const value = found.value === null || found.value === undefined ? null : String(found.value);
  return misfitError({
    table: table.label,
    key: keys.map((k) => k.source.name),
    values: keys.map((_k, i) => found[`k${i}`]),
    column: column.source.name,
    value,
    targetType: column.target.nativeType,
  });
}

/**
 * Server errors that mean the replica refused a row of the delta: a duplicate in a unique index
 * (2627, 2601), NULL into NOT NULL (515), a foreign key or CHECK constraint (547), a string or
 * binary value too long (8152, 2628), an arithmetic overflow (8115, 220) or a value that does not
 * convert (241, 242, 245, 8114). The fit check finds most of them first and names the row; what
 * it cannot see (unique indexes, foreign keys, CHECK constraints) ends here.
 */
export const REFUSED_ROW_ERRORS = new Set([
  2627, 2601, 515, 547, 8152, 2628, 8115, 220, 241, 242, 245, 8114,
]);

/**
 * The DeltaError (65) for a server error that means the replica refused a row, or undefined.
 * SQL Server's first line carries the constraint, the column and, for unique indexes, the
 * duplicate key value: it is kept whole.
 */
export function refusedRowError(err: unknown, table?: string): DeltaError | undefined {
  const e = err as {
    number?: unknown;
    message?: unknown;
    originalError?: { info?: { number?: unknown } };
  };
  const number = Number(e?.number ?? e?.originalError?.info?.number);
  if (!REFUSED_ROW_ERRORS.has(number)) return undefined;
  const reason = String(e.message ?? '')
    .split('\n')[0]!
    .trim();
  return new DeltaError(
    `${table === undefined ? '' : `table '${table}': `}the replica refused a row (error ${number}): ${reason}`,
    {
      hint: 'fix the replica constraint or column, or the source data; nothing was applied',
      cause: err,
    },
  );
}
