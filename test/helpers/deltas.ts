/**
 * Hand-made deltas for replica-side tests: the rows, deletes and base flags a test wants, written
 * with the real DeltaWriter into an inbox, and a load-only job config pointing at a replica.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ColumnInfo, WireRow } from '../../src/db/types.js';
import { DeltaWriter } from '../../src/format/delta-writer.js';
import type { Manifest } from '../../src/format/manifest.js';
import type { Db } from './engines.js';

export interface DeltaTable {
  name: string;
  key: string[];
  columns: ColumnInfo[];
  rows?: WireRow[];
  deletes?: WireRow[];
  /** A base table: its rows are the table's whole content. */
  base?: boolean;
}

export interface LoadJob {
  dir: string;
  inbox: string;
  stateDir: string;
  config: string;
  /** Writes a delta (fromLogId -> toLogId) into the inbox; returns its manifest file name. */
  delta(
    from: number,
    to: number,
    tables: DeltaTable[],
    opts?: { fullBase?: boolean },
  ): Promise<string>;
  /** The load state file, parsed. */
  state(): Record<string, unknown>;
  cleanup(): void;
}

/**
 * A load-only job for `target`; `extra` is JavaScript source for more config keys. Jobs sharing
 * one replica need names of their own (the replica records what it applied by job).
 */
export function loadJob(target: Db, extra = '', name = 'rj'): LoadJob {
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-load-'));
  const inbox = join(dir, 'inbox');
  const stateDir = join(dir, 'state');
  mkdirSync(inbox);
  const config = join(dir, 'job.js');
  const base = { name, stateDir, target: target.config, inbox };
  writeFileSync(config, `export default { ...${JSON.stringify(base)}, ${extra} };\n`);
  return {
    dir,
    inbox,
    stateDir,
    config,
    async delta(from, to, tables, opts = {}) {
      const writer = new DeltaWriter({
        dir: inbox,
        job: name,
        fromLogId: String(from),
        toLogId: String(to),
        maxRowsPerPart: 1000,
        compression: 'gzip',
      });
      for (const t of tables) {
        const tw = writer.beginTable(t.name, t.key, t.columns);
        for (const r of t.rows ?? []) await tw.upsert(r);
        for (const k of t.deletes ?? []) await tw.delete(k);
        await tw.finish();
      }
      const { file } = await writer.finish();
      if (opts.fullBase || tables.some((t) => t.base)) {
        // The manifest fields extract's base deltas carry; written here as extract would.
        const path = join(inbox, file);
        const m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
        for (const t of m.tables) if (tables.find((x) => x.name === t.name)?.base) t.base = true;
        if (opts.fullBase) m.fullBase = true;
        writeFileSync(path, JSON.stringify(m, null, 2));
      }
      return file;
    },
    state: () =>
      JSON.parse(readFileSync(join(stateDir, `${name}.load.state.json`), 'utf8')) as Record<
        string,
        unknown
      >,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Shorthand for column lists: `cols('id:int', 'name:text')`. */
export function cols(...specs: string[]): ColumnInfo[] {
  return specs.map((s) => {
    const [name, type] = s.split(':');
    return { name: name!, type: type as ColumnInfo['type'] };
  });
}
