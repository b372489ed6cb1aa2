/**
 * Shaping: how a source table becomes a replica table on the way. Per table, the config may give
 * the replica's table name, renamed columns, excluded columns, a row filter and computed columns.
 * It happens at extract, so the delta already holds exactly the replica's columns, and load
 * writes only those: a replica column that the mapping does not name is never touched.
 */
import type { TableConfig, ShapeRow } from '../../config/schema.js';
import type { ColumnInfo, WireRow, WireValue } from '../../db/types.js';
import { ConfigError } from '../../errors.js';

export class Shaper {
  /** The replica's table name. */
  readonly target: string;
  /** The delta's columns: kept source columns (renamed), then computed ones. */
  readonly columns: ColumnInfo[];
  /** The delta's key columns (renamed). */
  readonly key: string[];
  /** Indexes of the source's key columns in a source row, in key order. */
  readonly sourceKeyIndexes: number[];
  private readonly keep: number[];
  private readonly computed: { value: (row: ShapeRow) => WireValue }[];
  private readonly filter?: (row: ShapeRow) => boolean;
  private readonly identity: boolean;

  constructor(
    table: TableConfig,
    private readonly source: ColumnInfo[],
  ) {
    const where = `tables.${table.name}`;
    const names = new Set(source.map((c) => c.name));
    const problems: string[] = [];
    for (const k of table.key) {
      if (!names.has(k)) problems.push(`${where}.key: column '${k}' is not in the source table`);
    }
    for (const c of [table.logIdColumn, table.timestampColumn]) {
      if (c && !names.has(c)) problems.push(`${where}: column '${c}' is not in the source table`);
    }
    const excluded = new Set(table.exclude ?? []);
    for (const c of excluded) {
      if (!names.has(c))
        problems.push(`${where}.exclude: column '${c}' is not in the source table`);
      if (table.key.includes(c)) problems.push(`${where}.exclude: '${c}' is a key column`);
    }
    const rename = table.rename ?? {};
    for (const c of Object.keys(rename)) {
      if (!names.has(c)) problems.push(`${where}.rename: column '${c}' is not in the source table`);
    }
    this.keep = source.flatMap((c, i) => (excluded.has(c.name) ? [] : [i]));
    const out = this.keep.map((i) => ({
      ...source[i]!,
      name: rename[source[i]!.name] ?? source[i]!.name,
    }));
    const computed = Object.entries(table.computed ?? {});
    for (const [name, spec] of computed) out.push({ name, type: spec.type });
    const seen = new Set<string>();
    for (const c of out) {
      if (seen.has(c.name))
        problems.push(`${where}: two columns would be named '${c.name}' on the replica`);
      seen.add(c.name);
    }
    if (problems.length > 0) throw new ConfigError(problems.join('; '));

    this.target = table.target ?? table.name;
    this.columns = out;
    this.key = table.key.map((k) => rename[k] ?? k);
    this.sourceKeyIndexes = table.key.map((k) => source.findIndex((c) => c.name === k));
    this.computed = computed.map(([, spec]) => spec);
    this.filter = table.filter;
    this.identity = this.keep.length === source.length && computed.length === 0 && !this.filter;
  }

  private asObject(row: WireRow): ShapeRow {
    const o: ShapeRow = {};
    this.source.forEach((c, i) => (o[c.name] = row[i]!));
    return o;
  }

  /** The delta row for a source row, or null when the filter drops it. */
  row(sourceRow: WireRow): WireRow | null {
    if (this.identity) return sourceRow;
    const needObject = this.filter !== undefined || this.computed.length > 0;
    const obj = needObject ? this.asObject(sourceRow) : undefined;
    if (this.filter && !this.filter(obj!)) return null;
    const out: WireRow = this.keep.map((i) => sourceRow[i] ?? null);
    for (const c of this.computed) {
      const v = c.value(obj!);
      out.push(v === undefined ? null : v);
    }
    return out;
  }

  /** The key values of a source row, in key order. */
  keyOf(sourceRow: WireRow): WireRow {
    return this.sourceKeyIndexes.map((i) => sourceRow[i]!);
  }

  /** The source's key columns, in key order (for deletes and snapshot keys). */
  get sourceKey(): ColumnInfo[] {
    return this.sourceKeyIndexes.map((i) => this.source[i]!);
  }
}
