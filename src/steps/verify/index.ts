/**
 * `deltasync verify`: proves that the replica matches the source for the configured tables, by
 * streaming both sides in key order and comparing a normalised form of every row. Modes:
 * - full: every mapped column of every row;
 * - partial: the key and the last-modified column only (the timestamp or logId column), cheap;
 * - incremental: only the rows changed since a given logId (logid and changelog tables).
 * It reads both databases and writes to neither; it needs a host that can reach both.
 */
import type { LoadedConfig } from '../../config/load.js';
import type { TableConfig } from '../../config/schema.js';
import { openSource, openTarget } from '../../db/index.js';
import type {
  ColumnInfo,
  LogicalType,
  SourceReader,
  TargetWriter,
  WireRow,
} from '../../db/types.js';
import { CHANGELOG_LOGID_COLUMN } from '../../db/types.js';
import { ConfigError } from '../../errors.js';
import { Shaper } from '../extract/shape.js';
import {
  compareKeys,
  differingColumns,
  isEqual,
  mergeCompare,
  normalise,
  OutOfOrderError,
  type KeyedRow,
  type NormaliseOptions,
  type TableVerdict,
} from './compare.js';

/**
 * A table whose key order differs between the two databases (collations) is sorted in memory by
 * verify itself, up to this many rows a side; beyond it verify says what to do instead.
 */
export const MAX_SORTED_IN_MEMORY = 2_000_000;

export type VerifyMode = 'full' | 'partial' | 'incremental';

export interface VerifyOptions {
  mode: VerifyMode;
  /** incremental: rows changed after this logId. */
  since?: string;
  /** How many differing keys to report per table. */
  maxReported: number;
  /** Only these tables (source names); all configured tables when absent. */
  tables?: string[];
}

export interface TableReport extends TableVerdict {
  table: string;
  replicaTable: string;
  equal: boolean;
  /** Why a table was not compared, when it was not. */
  skipped?: string;
}

export interface VerifyReport {
  job: string;
  mode: VerifyMode;
  equal: boolean;
  tables: TableReport[];
}

interface Plan {
  shaper: Shaper;
  sourceColumns: ColumnInfo[];
  /** Indexes into the shaped row: key columns, then compared columns. */
  keyIdx: number[];
  cmpIdx: number[];
  keyTypes: LogicalType[];
  /** Per compared column: the type both sides are normalised as, and how. */
  cmpTypes: LogicalType[];
  cmpOptions: NormaliseOptions[];
  /** The replica's names of the compared columns, to say which differ. */
  cmpNames: string[];
  /** The replica's own columns to read: key columns then compared columns. */
  replicaColumns: ColumnInfo[];
}

async function plan(
  source: SourceReader,
  target: TargetWriter,
  t: TableConfig,
  mode: VerifyMode,
): Promise<Plan> {
  const sourceColumns = await source.columns(t.name);
  const shaper = new Shaper(t, sourceColumns);
  const replica = await target.columns(shaper.target);
  if (!replica) throw new ConfigError(`replica table '${shaper.target}' does not exist`);
  const onReplica = new Map(replica.map((c) => [c.name, c]));
  const shaped = shaper.columns;
  const keyIdx = shaper.key.map((k) => shaped.findIndex((c) => c.name === k));
  for (const k of shaper.key) {
    if (!onReplica.has(k))
      throw new ConfigError(`replica table '${shaper.target}' has no key column '${k}'`);
  }
  let compared = shaped.filter((c) => !shaper.key.includes(c.name) && onReplica.has(c.name));
  if (mode === 'partial') {
    const marker = t.timestampColumn ?? t.logIdColumn;
    const name = marker && (t.rename?.[marker] ?? marker);
    if (!name || !onReplica.has(name) || !shaped.some((c) => c.name === name)) {
      throw new ConfigError(
        `tables.${t.name}: partial verify needs a last-modified column (timestampColumn or logIdColumn) shipped to the replica`,
      );
    }
    compared = compared.filter((c) => c.name === name);
  }
  const cmpIdx = compared.map((c) => shaped.indexOf(c));
  return {
    shaper,
    sourceColumns,
    keyIdx,
    cmpIdx,
    keyTypes: keyIdx.map((i) => shaped[i]!.type),
    cmpTypes: compared.map((c) => comparedAs(c, onReplica.get(c.name)!)),
    cmpOptions: compared.map((c) => ({
      trimPadding: isFixedWidth(c) || isFixedWidth(onReplica.get(c.name)!),
    })),
    cmpNames: compared.map((c) => c.name),
    replicaColumns: [...shaper.key, ...compared.map((c) => c.name)].map((n) => onReplica.get(n)!),
  };
}

/** CHAR(n), character(n), bpchar, NCHAR: types whose values some engines pad with spaces. */
function isFixedWidth(c: ColumnInfo): boolean {
  return /^(n?char|character|bpchar|nchar)\b(?! varying)/i.test(c.nativeType ?? '');
}

/**
 * The type both sides of a column are normalised as: a boolean on either side makes both
 * booleans (MariaDB has only TINYINT(1)); otherwise the source's type.
 */
function comparedAs(source: ColumnInfo, replica: ColumnInfo): LogicalType {
  return source.type === 'bool' || replica.type === 'bool' ? 'bool' : source.type;
}

function keyed(p: Plan, row: WireRow): KeyedRow {
  return {
    key: p.keyIdx.map((i) => row[i]!),
    values: p.cmpIdx.map((i, j) => normalise(row[i]!, p.cmpTypes[j]!, p.cmpOptions[j])),
  };
}

async function* sourceRows(
  source: SourceReader,
  t: TableConfig,
  p: Plan,
): AsyncGenerator<KeyedRow> {
  for await (const raw of source.readAll({ table: t.name, columns: p.sourceColumns, key: t.key })) {
    const row = p.shaper.row(raw);
    if (row) yield keyed(p, row);
  }
}

async function* replicaRows(target: TargetWriter, p: Plan): AsyncGenerator<KeyedRow> {
  const n = p.keyIdx.length;
  for await (const row of target.readAll({
    table: p.shaper.target,
    columns: p.replicaColumns,
    key: p.shaper.key,
  })) {
    yield {
      key: row.slice(0, n),
      values: row.slice(n).map((v, j) => normalise(v, p.cmpTypes[j]!, p.cmpOptions[j])),
    };
  }
}

/** incremental: the source's changed rows since a logId, by key (null: deleted at the source). */
async function changedSince(
  source: SourceReader,
  t: TableConfig,
  p: Plan,
  since: string,
  changelog: string,
): Promise<Map<string, KeyedRow | null>> {
  const changed = new Map<string, KeyedRow | null>();
  const put = (raw: WireRow) => {
    const row = p.shaper.row(raw);
    const key = JSON.stringify(p.shaper.keyOf(raw));
    changed.set(key, row ? keyed(p, row) : null);
  };
  if (t.mode === 'logid') {
    const upTo = await source.maxLogId(t.name, t.logIdColumn!);
    if (upTo === null || BigInt(upTo) <= BigInt(since)) return changed;
    for await (const raw of source.readChanges({
      table: t.name,
      columns: p.sourceColumns,
      logIdColumn: t.logIdColumn!,
      after: since,
      upTo,
    }))
      put(raw);
  } else if (t.mode === 'changelog') {
    const upTo = await source.maxLogId(changelog, CHANGELOG_LOGID_COLUMN);
    if (upTo === null || BigInt(upTo) <= BigInt(since)) return changed;
    for await (const c of source.readChangelog({
      changelog,
      table: t.name,
      columns: p.sourceColumns,
      key: t.key,
      after: since,
      upTo,
    })) {
      if (c.op === 'upsert') put(c.row);
      else changed.set(JSON.stringify(c.key), null);
    }
  }
  return changed;
}

async function compareIncremental(
  changed: Map<string, KeyedRow | null>,
  replica: AsyncIterable<KeyedRow>,
  p: Plan,
  max: number,
): Promise<TableVerdict> {
  const v: TableVerdict = {
    sourceRows: 0,
    replicaRows: 0,
    missing: 0,
    extra: 0,
    different: 0,
    first: [],
  };
  const found: TableVerdict['first'] = [];
  for (const row of changed.values()) if (row) v.sourceRows++;
  for await (const row of replica) {
    const key = JSON.stringify(row.key);
    if (!changed.has(key)) continue;
    const expected = changed.get(key)!;
    changed.delete(key);
    v.replicaRows++;
    if (expected === null) {
      v.extra++;
      found.push({ key: row.key, kind: 'extra on the replica' });
    } else {
      const columns = differingColumns(expected, row, p.cmpNames);
      if (columns.length > 0) {
        v.different++;
        found.push({ key: row.key, kind: 'different', columns });
      }
    }
  }
  for (const row of changed.values()) {
    if (row) {
      v.missing++;
      found.push({ key: row.key, kind: 'missing on the replica' });
    }
  }
  v.first = found.sort((a, b) => compareKeys(a.key, b.key, p.keyTypes)).slice(0, max);
  return v;
}

/**
 * Compares a whole table by merging both sides in key order. When a side returns its keys in
 * another order than verify's (a case- or accent-insensitive collation on a text key), both sides
 * are read again and sorted by verify itself, in memory, up to MAX_SORTED_IN_MEMORY rows.
 */
async function compareTable(
  source: SourceReader,
  target: TargetWriter,
  t: TableConfig,
  p: Plan,
  max: number,
): Promise<TableVerdict> {
  try {
    return await mergeCompare(
      sourceRows(source, t, p),
      replicaRows(target, p),
      p.keyTypes,
      max,
      p.cmpNames,
    );
  } catch (err) {
    if (!(err instanceof OutOfOrderError)) throw err;
  }
  const sorted = async (rows: AsyncIterable<KeyedRow>, side: string) => {
    const all: KeyedRow[] = [];
    for await (const row of rows) {
      if (all.length >= MAX_SORTED_IN_MEMORY) {
        throw new ConfigError(
          `verify: the ${side} of table '${t.name}' orders its keys differently (a collation) and has more than ${MAX_SORTED_IN_MEMORY} rows to sort in memory`,
          {
            hint: 'give the key column a binary collation on both sides (PostgreSQL COLLATE "C", MariaDB utf8mb4_bin), or verify with --mode incremental',
          },
        );
      }
      all.push(row);
    }
    all.sort((a, b) => compareKeys(a.key, b.key, p.keyTypes));
    return all;
  };
  const [left, right] = [
    await sorted(sourceRows(source, t, p), 'source'),
    await sorted(replicaRows(target, p), 'replica'),
  ];
  return mergeCompare(toAsync(left), toAsync(right), p.keyTypes, max, p.cmpNames);
}

async function* toAsync<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

/** The tables a verify run covers: all configured ones, or those named with --table. */
export function selectTables(config: LoadedConfig, names?: string[]): TableConfig[] {
  const all = config.tables!;
  if (!names || names.length === 0) return all;
  const unknown = names.filter((n) => !all.some((t) => t.name === n));
  if (unknown.length > 0) {
    throw new ConfigError(`--table: ${unknown.join(', ')} not in the job's tables`, {
      hint: `use one of: ${all.map((t) => t.name).join(', ')}`,
    });
  }
  return all.filter((t) => names.includes(t.name));
}

/**
 * `--since N` compares N with a counter of the source: the shared logId column of the job's
 * `logid` tables, or the change log's own logId for `changelog` tables. Those are two different
 * counters, so one N cannot mean the same for both; and timestamp and snapshot tables have no
 * logId at all. What --since cannot compare is refused here rather than quietly compared as
 * nothing.
 */
export function checkSince(tables: TableConfig[], named: boolean): void {
  const byMode = (mode: TableConfig['mode']) => tables.filter((t) => t.mode === mode);
  const logid = byMode('logid');
  const changelog = byMode('changelog');
  if (logid.length > 0 && changelog.length > 0) {
    throw new ConfigError(
      `verify --since: tables ${logid.map((t) => `'${t.name}'`).join(', ')} (logid: their logId column) and ${changelog.map((t) => `'${t.name}'`).join(', ')} (changelog: the change log's logId) count in different logId spaces, so one --since cannot mean the same for both`,
      { hint: 'verify them in separate runs, each with --table and its own --since' },
    );
  }
  const untracked = tables.filter((t) => t.mode === 'timestamp' || t.mode === 'snapshot');
  if (named && untracked.length > 0) {
    throw new ConfigError(
      `verify --since: ${untracked.map((t) => `'${t.name}' (${t.mode})`).join(', ')} have no logId to compare with`,
      { hint: 'verify those tables with --mode full or partial' },
    );
  }
}

export async function verify(config: LoadedConfig, options: VerifyOptions): Promise<VerifyReport> {
  if (options.mode === 'incremental' && options.since === undefined) {
    throw new ConfigError('verify --mode incremental needs --since <logId>');
  }
  if (options.since !== undefined && options.mode !== 'incremental') {
    throw new ConfigError(`--since is only used with --mode incremental, not ${options.mode}`);
  }
  const selected = selectTables(config, options.tables);
  if (options.mode === 'incremental') checkSince(selected, (options.tables?.length ?? 0) > 0);
  const source = await openSource(config.source!);
  try {
    const target = await openTarget(config.target!);
    try {
      const tables: TableReport[] = [];
      for (const t of selected) {
        const p = await plan(source, target, t, options.mode);
        const base = { table: t.name, replicaTable: p.shaper.target };
        let verdict: TableVerdict;
        if (options.mode === 'incremental') {
          if (t.mode !== 'logid' && t.mode !== 'changelog') {
            const empty = {
              sourceRows: 0,
              replicaRows: 0,
              missing: 0,
              extra: 0,
              different: 0,
              first: [],
            };
            tables.push({
              ...base,
              ...empty,
              equal: true,
              skipped: `incremental verify needs a logid or changelog table, not ${t.mode}`,
            });
            continue;
          }
          const changed = await changedSince(
            source,
            t,
            p,
            options.since!,
            config.capture.changelogTable,
          );
          verdict = await compareIncremental(
            changed,
            replicaRows(target, p),
            p,
            options.maxReported,
          );
        } else {
          verdict = await compareTable(source, target, t, p, options.maxReported);
        }
        tables.push({ ...base, ...verdict, equal: isEqual(verdict) });
      }
      return { job: config.name, mode: options.mode, equal: tables.every((t) => t.equal), tables };
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

export function formatReport(r: VerifyReport): string {
  const lines = [
    `job ${r.job}, ${r.mode} verify: ${r.equal ? 'the replica matches the source' : 'the replica DIFFERS from the source'}`,
  ];
  for (const t of r.tables) {
    const name = t.table === t.replicaTable ? t.table : `${t.table} -> ${t.replicaTable}`;
    if (t.skipped) {
      lines.push(`  ${name}: skipped (${t.skipped})`);
      continue;
    }
    const counts = `${t.sourceRows} rows on the source, ${t.replicaRows} on the replica`;
    if (t.equal) {
      lines.push(`  ${name}: equal (${counts})`);
      continue;
    }
    lines.push(
      `  ${name}: ${t.missing} missing on the replica, ${t.extra} extra, ${t.different} different (${counts})`,
    );
    for (const d of t.first) {
      const columns = d.columns?.length ? ` (${d.columns.join(', ')})` : '';
      lines.push(`    key ${JSON.stringify(d.key)}: ${d.kind}${columns}`);
    }
  }
  return lines.join('\n');
}
