/**
 * Writes one delta: the parts of each table in turn, then the manifest, last. Until `finish`
 * returns, the delta does not exist for any reader; `abort` removes the parts written so far.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ColumnInfo, WireRow } from '../db/types.js';
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
import { PartWriter, partFileName, type Compression } from './part-codec.js';

export interface DeltaWriterOptions {
  dir: string;
  job: string;
  fromLogId: string;
  toLogId: string;
  maxRowsPerPart: number;
  compression: Compression;
  simulated?: boolean;
}

export class DeltaWriter {
  private readonly tables: ManifestTable[] = [];
  private readonly written: string[] = [];
  private readonly prefix: string;
  /** First part file name of each table so far, to keep two tables from sharing part names. */
  private readonly firstParts = new Set<string>();

  constructor(private readonly options: DeltaWriterOptions) {
    this.prefix = logIdPrefix(options.toLogId);
  }

  /** Streams a table's rows into as many parts as maxRowsPerPart requires. */
  async writeTable(
    name: string,
    key: string[],
    columns: ColumnInfo[],
    rows: AsyncIterable<WireRow>,
  ): Promise<ManifestTable> {
    const { dir, compression, maxRowsPerPart } = this.options;
    // `a.b` and `a_b` make the same file name: number the later table so that it cannot
    // overwrite the earlier one's parts (the manifest, not the file name, says which is which).
    let label = name;
    for (let n = 2; this.firstParts.has(partFileName(this.prefix, label, 1, compression)); n++) {
      label = `${name}-${n}`;
    }
    this.firstParts.add(partFileName(this.prefix, label, 1, compression));
    const parts: ManifestPart[] = [];
    let writer: PartWriter | undefined;
    try {
      for await (const row of rows) {
        if (!writer) {
          const file = partFileName(this.prefix, label, parts.length + 1, compression);
          writer = await PartWriter.create(dir, file, compression);
        }
        await writer.write(row);
        if (writer.rows >= maxRowsPerPart) {
          parts.push(await this.finishPart(writer));
          writer = undefined;
        }
      }
      if (writer) parts.push(await this.finishPart(writer));
    } catch (err) {
      await writer?.abort();
      throw err;
    }
    const table: ManifestTable = {
      name,
      key,
      columns: columns.map((c) => ({ name: c.name, type: c.type })),
      rows: parts.reduce((n, p) => n + p.rows, 0),
      parts,
    };
    this.tables.push(table);
    return table;
  }

  private async finishPart(writer: PartWriter): Promise<ManifestPart> {
    this.written.push(writer.file);
    return writer.finish();
  }

  /** Publishes the manifest; from here on the delta exists. */
  async finish(): Promise<{ manifest: Manifest; file: string }> {
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
      tables: this.tables,
    };
    const file = manifestFileName(toLogId);
    await writeManifest(join(dir, file), manifest);
    return { manifest, file };
  }

  /** Removes every part this writer published; used when the delta cannot be finished. */
  async abort(): Promise<void> {
    await Promise.all(this.written.map((f) => rm(join(this.options.dir, f), { force: true })));
  }
}
