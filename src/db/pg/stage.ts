/**
 * How a delta column is staged on PostgreSQL before it reaches its replica column, and whether
 * its values must be proven to fit there unchanged (issue 9: never quietly different). Pure.
 */
import type { LogicalType } from '../types.js';

/**
 * How one column is staged: in the delta's own type (so that COPY cannot round, truncate or
 * wrap a value quietly, issue 9), or in the target's type when that is a type deltasync does not
 * know (enums, geometry…: the value travels as text and only the target type can parse it) or
 * exactly the type the delta's values came out of (nothing to round: see stageColumn).
 */
export interface StageColumn {
  name: string;
  /** The staging table's type for it. */
  stageType: string;
  /** The target column's type, as format_type() prints it. */
  targetType: string;
  /**
   * How a staged value is proven to fit before it is written: 'roundtrip' — cast to the target's
   * type and back, it must come back equal (numeric(10,2), timestamp(0), varchar(5), integer…);
   * 'parse' — the cast must only succeed (json); 'none' — the types are the same, or the target's
   * is wider than any staged value.
   */
  check: 'roundtrip' | 'parse' | 'none';
}

/** The type each logical type is staged in, as format_type() prints it. */
const STAGE_TYPES: Record<LogicalType, string> = {
  int: 'bigint',
  bigint: 'numeric',
  decimal: 'numeric',
  float: 'double precision',
  bool: 'boolean',
  text: 'text',
  binary: 'bytea',
  date: 'date',
  time: 'time without time zone',
  timestamp: 'timestamp without time zone',
  timestamptz: 'timestamp with time zone',
  json: 'text',
  uuid: 'uuid',
};

/**
 * Stage type -> target types it needs no roundtrip check for: wider ones, and `real` for
 * floats, which a float64 roundtrip would always fail (0.1 read from a real is not the double
 * 0.1) although a real travels through the delta exactly as its shortest decimal text. A value
 * out of their range still fails loudly, and the slow search names its row.
 */
const UNCHECKED: Record<string, string[]> = {
  bigint: ['bigint', 'numeric'],
  numeric: ['numeric'],
  text: ['text', 'character varying'],
  'double precision': ['real'],
};

/**
 * How a delta column of logical type `type` is staged for a target column (see StageColumn).
 * `sourceType` is the delta's `nativeType` for the column: when it names exactly the target's
 * type (format_type() text, typmod included: a PostgreSQL source with the replica's schema),
 * every value came out of a column of that very type and fits unchanged, so nothing is checked
 * (the check would cost a second pass over every row of the common case) and the column is
 * staged in that type. Another engine's type name that happens to read the same ('text',
 * 'date', 'bigint') means a domain that fits too.
 */
export function stageColumn(
  name: string,
  type: LogicalType,
  target: { nativeType?: string; typname: string; fallback: boolean },
  sourceType?: string,
): StageColumn {
  const targetType = target.nativeType ?? target.typname;
  if (target.fallback) return { name, stageType: targetType, targetType, check: 'none' };
  // Staged in the target's own type: COPY parses each value once, straight into what the
  // upsert writes, with no cast per row (COPY into the table itself would read the same text
  // into the same type, so nothing can round; a value that does not parse is refused by the
  // COPY and named by its line, as in the delta's type).
  if (sourceType === targetType) return { name, stageType: targetType, targetType, check: 'none' };
  const stageType = STAGE_TYPES[type];
  if (UNCHECKED[stageType]?.includes(targetType) || stageType === targetType)
    return { name, stageType, targetType, check: 'none' };
  const json = target.typname === 'json' || target.typname === 'jsonb';
  return { name, stageType, targetType, check: json ? 'parse' : 'roundtrip' };
}
