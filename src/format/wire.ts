/**
 * The wire types of the delta format: the logical types a delta declares for its columns, the
 * values and rows as they travel in part files, and a column as a manifest lists it. The format
 * layer owns them; engines (src/db/, which re-exports them) convert native values to and from
 * them.
 */

/**
 * The types a delta declares for its columns. Each has one wire encoding (see `docs/format.md`)
 * so that a value read from one engine is written to another without loss.
 *
 * | type        | wire value (JSON)                                               |
 * |-------------|-----------------------------------------------------------------|
 * | int         | number, a safe integer (engines' 8/16/32-bit integers)          |
 * | bigint      | string of decimal digits, optional leading '-' (64-bit and up)  |
 * | decimal     | string, e.g. "-12.3400000000" (exact; never a JSON number)      |
 * | float       | number; NaN and ±Infinity as the strings "NaN", "Infinity", "-Infinity" |
 * | bool        | true / false                                                    |
 * | text        | string                                                          |
 * | binary      | string, base64 (RFC 4648, with padding)                         |
 * | date        | string "YYYY-MM-DD"                                             |
 * | time        | string "HH:MM:SS" or "HH:MM:SS.ffffff"                          |
 * | timestamp   | string "YYYY-MM-DD HH:MM:SS[.ffffff]", wall-clock, no zone      |
 * | timestamptz | string "YYYY-MM-DDTHH:MM:SS[.ffffff]Z", the instant in UTC       |
 * | json        | string holding the JSON document's text (numbers kept exact)    |
 * | uuid        | string, lowercase 8-4-4-4-12 hex                                |
 *
 * NULL is JSON null for every type; the empty string is "" and never becomes NULL.
 */
export const LOGICAL_TYPES = [
  'int',
  'bigint',
  'decimal',
  'float',
  'bool',
  'text',
  'binary',
  'date',
  'time',
  'timestamp',
  'timestamptz',
  'json',
  'uuid',
] as const;

export type LogicalType = (typeof LOGICAL_TYPES)[number];

/** A value as it travels in a part file. */
export type WireValue = string | number | boolean | null;

/** One row as it travels in a part file: values in the order of the delta's column list. */
export type WireRow = WireValue[];

export interface ColumnInfo {
  name: string;
  type: LogicalType;
  /** The engine's own type name, for messages and for creating staging tables. */
  nativeType?: string;
}
