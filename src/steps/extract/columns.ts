/**
 * Source column changes (issue 9: schema changes). Extract records each table's source column
 * names beside its state (`<job>.columns.json`) after every delta it publishes. When a table's
 * columns differ from the record (a column added, dropped or renamed, which is a drop and an
 * add), extract logs it once, notes it in the manifest (`tables[].columnsChanged`), and writes
 * that table as a **base** in the delta: the values of an added column in existing rows were
 * never shipped, and only the whole table carries them.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../format/atomic-file.js';
import type { Logger } from '../../log.js';
import type { TableCapture } from './modes/mode.js';

export interface ColumnsChanged {
  added: string[];
  dropped: string[];
}

const recordPath = (stateDir: string, job: string) => join(stateDir, `${job}.columns.json`);

async function readRecord(path: string): Promise<Record<string, string[]> | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, string[]>;
  } catch (err) {
    // Missing (a first run, or a state from before this record): nothing to compare with.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** The tables whose source columns changed since the last delta, with what changed. */
export async function columnChanges(
  stateDir: string,
  job: string,
  plans: TableCapture[],
  log: Logger,
): Promise<{ changes: Map<string, ColumnsChanged>; recorded: boolean }> {
  const changes = new Map<string, ColumnsChanged>();
  const record = await readRecord(recordPath(stateDir, job));
  if (!record) return { changes, recorded: false };
  for (const p of plans) {
    const before = record[p.config.name];
    if (!before) continue; // a table new to the job is seeded anyway (and recorded then)
    const now = p.source.map((c) => c.name);
    const added = now.filter((c) => !before.includes(c));
    const dropped = before.filter((c) => !now.includes(c));
    if (added.length + dropped.length === 0) continue;
    changes.set(p.config.name, { added, dropped });
    log.warn(
      { table: p.config.name, added, dropped },
      'source columns changed: the table goes out whole (a base) in the next delta',
    );
  }
  return { changes, recorded: true };
}

/** Records the tables' source columns, once a delta with them is published. */
export async function recordColumns(
  stateDir: string,
  job: string,
  plans: TableCapture[],
): Promise<void> {
  const record = Object.fromEntries(plans.map((p) => [p.config.name, p.source.map((c) => c.name)]));
  await writeFileAtomic(recordPath(stateDir, job), `${JSON.stringify(record, null, 2)}\n`);
}
