/** Reflected SQL Server columns for unit tests, as sys.columns would describe them. */
import { toMssqlColumn, type ReflectedColumn } from '../../src/db/mssql/types.js';

export function column(name: string, base_type: string, extra: Partial<ReflectedColumn> = {}) {
  return toMssqlColumn({
    name,
    base_type,
    max_length: 4,
    num_precision: 0,
    num_scale: 0,
    is_identity: false,
    is_computed: false,
    collation_name: null,
    ...extra,
  });
}
