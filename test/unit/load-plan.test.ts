/**
 * How load matches a delta table with the replica table (planTable), with the replica's columns
 * given: a column the replica generates itself is left out of what load writes, and a generated
 * key column is refused.
 */
import { describe, expect, it } from 'vitest';
import type { TargetColumn, TargetWriter } from '../../src/db/types.js';
import { ConfigError } from '../../src/errors.js';
import type { ManifestTable } from '../../src/format/manifest.js';
import { silentLogger } from '../../src/log.js';
import { planTable, type RunMemo } from '../../src/steps/load.js';

const items = {
  name: 'items',
  key: ['id'],
  columns: [
    { name: 'id', type: 'bigint' },
    { name: 'name', type: 'text' },
    { name: 'label', type: 'text' },
    { name: 'log_id', type: 'bigint' },
  ],
  parts: [],
} as unknown as ManifestTable;

function replica(columns: TargetColumn[]): TargetWriter {
  return {
    columns: async () => columns,
    addColumnSql: (table: string, c: { name: string }) => `ALTER TABLE ${table} ADD ${c.name}`,
  } as unknown as TargetWriter;
}

const memo = (): RunMemo => ({ columns: new Map(), skipped: new Map(), warned: new Set() });

describe('planTable', () => {
  it('leaves out a column the replica generates itself, and keeps the others in order', async () => {
    const plan = await planTable(
      replica([
        { name: 'id', type: 'bigint' },
        { name: 'name', type: 'text' },
        { name: 'label', type: 'text', generated: true },
        { name: 'log_id', type: 'bigint' },
      ]),
      items,
      memo(),
      'stop',
      silentLogger(),
    );
    expect(plan.keep).toEqual([0, 1, 3]);
    expect(plan.columns.map((c) => c.name)).toEqual(['id', 'name', 'log_id']);
    expect(plan.add).toEqual([]);
  });

  it('refuses a key column the replica generates (ConfigError, nothing planned)', async () => {
    const err = await planTable(
      replica([
        { name: 'id', type: 'bigint', generated: true },
        { name: 'name', type: 'text' },
        { name: 'label', type: 'text' },
        { name: 'log_id', type: 'bigint' },
      ]),
      items,
      memo(),
      'stop',
      silentLogger(),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain("computes its key column 'id' itself");
  });
});
