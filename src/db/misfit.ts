/**
 * The one-line message of a value a replica column would round, truncate or refuse (issue 9:
 * never quietly different), the same on every engine: table, key of the first offending row,
 * column, value and the replica column's type.
 */
import { DeltaError } from '../errors.js';

export interface Misfit {
  table: string;
  /** The key's column names, and the offending row's values of them. */
  key: string[];
  values: unknown[];
  column: string;
  /** The value as text; null for a NULL fed to a NOT NULL column. */
  value: string | null;
  /** The replica column's type as its engine prints it. */
  targetType: string;
}

/** `(id, region)=(3, eu)`, the way PostgreSQL writes keys in its messages. */
export function describeKey(key: string[], values: unknown[]): string {
  return `(${key.join(', ')})=(${values.map((v) => (v === null || v === undefined ? 'NULL' : String(v))).join(', ')})`;
}

/** The DeltaError (65) for a misfit; nothing of the delta has been applied when it is thrown. */
export function misfitError(m: Misfit): DeltaError {
  const what =
    m.value === null
      ? `is NULL, which the replica column (${m.targetType}, NOT NULL) refuses`
      : `value '${m.value}' does not fit the replica column's type ${m.targetType} unchanged`;
  return new DeltaError(
    `table '${m.table}' row ${describeKey(m.key, m.values)}: column ${m.column} ${what}`,
    { hint: 'widen the replica column or fix the source value; nothing was applied' },
  );
}
