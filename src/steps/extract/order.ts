/**
 * Table order: parents before children, so that foreign keys on the replica hold at every
 * commit (load applies upserts in this order and deletes in the reverse order). Either the
 * config's own order, or derived from the source's foreign keys.
 */
import type { TableConfig } from '../../config/schema.js';
import type { SourceReader } from '../../db/types.js';
import { ConfigError } from '../../errors.js';

export async function orderTables(
  source: SourceReader,
  tables: TableConfig[],
  order: 'config' | 'foreign-keys',
): Promise<TableConfig[]> {
  if (order === 'config') return tables;
  const names = new Set(tables.map((t) => t.name));
  const parents = new Map<string, string[]>();
  for (const t of tables) {
    parents.set(
      t.name,
      (await source.referencedTables(t.name)).filter((p) => p !== t.name && names.has(p)),
    );
  }
  // Depth-first topological sort that keeps the config's order among unrelated tables.
  const sorted: TableConfig[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const byName = new Map(tables.map((t) => [t.name, t]));
  const visit = (name: string, path: string[]) => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') {
      throw new ConfigError(
        `tableOrder: foreign keys form a cycle (${[...path, name].join(' -> ')}); list the tables in order and use 'config'`,
      );
    }
    state.set(name, 'visiting');
    for (const p of parents.get(name) ?? []) visit(p, [...path, name]);
    state.set(name, 'done');
    sorted.push(byName.get(name)!);
  };
  for (const t of tables) visit(t.name, []);
  return sorted;
}
