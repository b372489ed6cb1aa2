/**
 * Writes one delta: the parts of each table in turn, then the manifest, last. Until `finish`
 * returns, the delta does not exist for any reader; `abort` removes the parts written so far.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ColumnInfo, WireRow } from './wire.js';
import { copyPartFileName } from './copy-part.js';
import { PartFileWriter, type Compression } from './part-file.js';
import { PartSeries, type CopyTextWritten } from './part-series.js';

export type { CopyTextWritten } from './part-series.js';
import { faultPoint } from '../faults.js';
import { sign } from './signature.js';
import { logIdPrefix } from './logid.js';
import {
  FORMAT_NAME,
  FORMAT_VERSION,
  manifestFileName,
  writeManifest,
  type Manifest,
  type ManifestPart,
  type ManifestTable,
} from './manifest.js';

export interface DeltaWriterOptions {
  dir: string;
  job: string;
  fromLogId: string;
  toLogId: string;
  maxRowsPerPart: number;
  compression: Compression;
  simulated?: boolean;
  /** When set, parts carry their SHA-256 and the manifest is signed (see signature.ts). */
  signingKey?: string;
}

/** Collects one table's upserts and deletes; `finish` adds it to the delta. */
export class TableWriter {
  private readonly upserts: PartSeries;
  private readonly deletes: PartSeries;

  constructor(
    private readonly delta: DeltaWriter,
    private readonly name: string,
    private readonly key: string[],
    private readonly columns: ColumnInfo[],
    label: string,
    prefix: string,
    compression: Compression,
    private readonly base: boolean,
    private readonly columnsChanged: ManifestTable['columnsChanged'],
  ) {
    const keyTypes = key.map((k) => columns.find((c) => c.name === k)?.type ?? 'text');
    this.upserts = new PartSeries(
      delta,
      (i) => copyPartFileName(prefix, label, i, compression),
      columns.map((c) => c.type),
    );
    this.deletes = new PartSeries(
      delta,
      (i) => copyPartFileName(prefix, label, i, compression, 'deletes'),
      keyTypes,
    );
  }

  /** A row to insert or update, values in `columns` order (encoded by the codec). */
  write(row: WireRow): Promise<void> {
    return this.upserts.write(row);
  }

  /** The same as `write`. */
  upsert(row: WireRow): Promise<void> {
    return this.upserts.write(row);
  }

  /**
   * Rows (or, with `kind` 'deletes', key lines) as canonical COPY text bytes, complete
   * '\n'-terminated lines with chunk boundaries anywhere, in `columns` (or `key`) order. Split
   * into parts on line boundaries; no row is parsed. Rows written by `write` before stay first.
   */
  writeCopyText(
    data: AsyncIterable<Buffer>,
    kind: 'rows' | 'deletes' = 'rows',
  ): Promise<CopyTextWritten> {
    if (kind === 'rows') return this.upserts.writeCopyText(data);
    if (this.base) throw new Error(`table ${this.name} is written as a base: it has no deletes`);
    return this.deletes.writeCopyText(data);
  }

  /** A row to delete, given by its key values in `key` order. A base table has none. */
  delete(key: WireRow): Promise<void> {
    if (this.base) throw new Error(`table ${this.name} is written as a base: it has no deletes`);
    return this.deletes.write(key);
  }

  get rows(): number {
    return this.upserts.rows + this.deletes.rows;
  }

  async finish(): Promise<ManifestTable> {
    try {
      await this.upserts.close();
      await this.deletes.close();
    } catch (err) {
      await this.abort();
      throw err;
    }
    const table: ManifestTable = {
      name: this.name,
      key: this.key,
      columns: this.columns.map((c) => ({
        name: c.name,
        type: c.type,
        ...(c.nativeType ? { nativeType: c.nativeType } : {}),
      })),
      rows: this.upserts.parts.reduce((n, p) => n + p.rows, 0),
      parts: this.upserts.parts,
      ...(this.base ? { base: true } : {}),
      ...(this.columnsChanged ? { columnsChanged: this.columnsChanged } : {}),
    };
    if (this.deletes.parts.length > 0) {
      table.deletes = {
        rows: this.deletes.parts.reduce((n, p) => n + p.rows, 0),
        parts: this.deletes.parts,
      };
    }
    this.delta.addTable(table, this);
    return table;
  }

  async abort(): Promise<void> {
    await this.upserts.abort();
    await this.deletes.abort();
  }
}

export class DeltaWriter {
  private readonly tables: ManifestTable[] = [];
  private readonly written: string[] = [];
  private readonly prefix: string;
  /** File labels used so far, to keep two tables from sharing part names. */
  private readonly labels = new Set<string>();
  /** Tables begun and not finished: abort() must remove their part being written too. */
  private readonly open = new Set<TableWriter>();

  constructor(private readonly options: DeltaWriterOptions) {
    this.prefix = logIdPrefix(options.toLogId);
  }

  get maxRowsPerPart(): number {
    return this.options.maxRowsPerPart;
  }

  /**
   * Starts a table; write its rows and deletes, then call `finish` on it. A `base` table holds
   * the table's whole content as of the delta's snapshot (load replaces the replica's with it):
   * rows only, no deletes.
   */
  beginTable(
    name: string,
    key: string[],
    columns: ColumnInfo[],
    options: { base?: boolean; columnsChanged?: ManifestTable['columnsChanged'] } = {},
  ): TableWriter {
    // `a.b` and `a_b` make the same file name: number the later table so that it cannot
    // overwrite the earlier one's parts (the manifest, not the file name, says which is which).
    const safe = (label: string) => label.replace(/[^A-Za-z0-9_-]/g, '_');
    let label = name;
    for (let n = 2; this.labels.has(safe(label)); n++) label = `${name}-${n}`;
    this.labels.add(safe(label));
    const table = new TableWriter(
      this,
      name,
      key,
      columns,
      label,
      this.prefix,
      this.options.compression,
      options.base === true,
      options.columnsChanged,
    );
    this.open.add(table);
    return table;
  }

  /** Streams a table's rows (upserts only) into as many parts as maxRowsPerPart requires. */
  async writeTable(
    name: string,
    key: string[],
    columns: ColumnInfo[],
    rows: AsyncIterable<WireRow>,
  ): Promise<ManifestTable> {
    const table = this.beginTable(name, key, columns);
    try {
      for await (const row of rows) await table.upsert(row);
    } catch (err) {
      await table.abort();
      throw err;
    }
    return table.finish();
  }

  /** @internal */
  async openPart(file: string): Promise<PartFileWriter> {
    return PartFileWriter.create(this.options.dir, file, this.options.compression, {
      sha256: this.options.signingKey !== undefined,
    });
  }

  /** @internal */
  async finishPart(writer: PartFileWriter): Promise<ManifestPart> {
    this.written.push(writer.file);
    const part = await writer.finish();
    await faultPoint('extract:after-part');
    return part;
  }

  /** @internal */
  addTable(table: ManifestTable, writer: TableWriter): void {
    this.open.delete(writer);
    this.tables.push(table);
  }

  /** Puts the tables in this order in the manifest (the order load applies them in). */
  orderTables(names: string[]): void {
    const rank = new Map(names.map((n, i) => [n, i]));
    this.tables.sort((a, b) => (rank.get(a.name) ?? 0) - (rank.get(b.name) ?? 0));
  }

  /** Rows and deletes written so far, over every table. */
  get rowCount(): number {
    return this.tables.reduce((n, t) => n + t.rows + (t.deletes?.rows ?? 0), 0);
  }

  /** True when some table of the delta is a base (the delta must be published, even empty). */
  get hasBase(): boolean {
    return this.tables.some((t) => t.base === true);
  }

  /**
   * Publishes the manifest; from here on the delta exists. `fullBase` is set when every table is
   * a base: the caller must have begun every table of the job.
   */
  async finish(
    extra: Pick<Manifest, 'cursors'> = {},
  ): Promise<{ manifest: Manifest; file: string }> {
    const { dir, job, fromLogId, toLogId, compression, simulated } = this.options;
    const manifest: Manifest = {
      format: FORMAT_NAME,
      formatVersion: FORMAT_VERSION,
      job,
      fromLogId,
      toLogId,
      createdAt: new Date().toISOString(),
      compression,
      ...(simulated ? { simulated: true } : {}),
      ...(this.tables.length > 0 && this.tables.every((t) => t.base) ? { fullBase: true } : {}),
      tables: this.tables,
      ...(extra.cursors ? { cursors: extra.cursors } : {}),
    };
    const file = manifestFileName(toLogId);
    const signed = this.options.signingKey ? sign(manifest, this.options.signingKey) : manifest;
    await writeManifest(join(dir, file), signed);
    return { manifest, file };
  }

  /** Removes every part this writer published; used when the delta cannot be finished. */
  async abort(): Promise<void> {
    for (const table of this.open) await table.abort();
    this.open.clear();
    await Promise.all(this.written.map((f) => rm(join(this.options.dir, f), { force: true })));
  }
}
