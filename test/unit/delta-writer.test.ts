import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ColumnInfo, WireRow } from '../../src/db/types.js';
import { listManifests } from '../../src/format/delta-dir.js';
import { DeltaWriter, type DeltaWriterOptions } from '../../src/format/delta-writer.js';
import { FORMAT_NAME, FORMAT_VERSION, readManifest } from '../../src/format/manifest.js';
import { readCopyRows } from '../../src/format/copy-part.js';
import { PartFileWriter, type Compression } from '../../src/format/part-file.js';
import { PartSeries, type PartSink } from '../../src/format/part-series.js';
import { listDir, testdir } from '../helpers/tmp.js';

const PREFIX = 'logId00000000000000000200';
const MANIFEST = `${PREFIX}.MANIFEST.json`;
const COLUMNS: ColumnInfo[] = [
  { name: 'id', type: 'int', nativeType: 'integer' },
  { name: 'name', type: 'text' },
];

function options(dir: string, overrides: Partial<DeltaWriterOptions> = {}): DeltaWriterOptions {
  return {
    dir,
    job: 'acme',
    fromLogId: '100',
    toLogId: '200',
    maxRowsPerPart: 10,
    compression: 'gzip',
    ...overrides,
  };
}

function rowsOf(count: number, start = 1): WireRow[] {
  return Array.from({ length: count }, (_, i) => [start + i, `name ${start + i}`]);
}

async function* stream(rows: WireRow[], failAfter?: number): AsyncGenerator<WireRow> {
  let n = 0;
  for (const row of rows) {
    if (n++ === failAfter) throw new Error('source connection lost');
    yield row;
  }
}

async function readDelta(dir: string, compression: Compression): Promise<WireRow[][]> {
  const m = await readManifest(join(dir, MANIFEST), 'acme');
  const tables: WireRow[][] = [];
  for (const t of m.tables) {
    const rows: WireRow[] = [];
    for (const p of t.parts) {
      const types = t.columns.map((c) => c.type);
      for await (const row of readCopyRows(dir, p, compression, types)) rows.push(row);
    }
    tables.push(rows);
  }
  return tables;
}

describe('DeltaWriter', () => {
  it.each<Compression>(['gzip', 'none'])(
    'rotates parts at maxRowsPerPart: 25 rows, max 10 -> 10, 10, 5 (%s)',
    async (compression) => {
      const dir = await testdir();
      const writer = new DeltaWriter(options(dir, { compression }));
      const rows = rowsOf(25);
      const table = await writer.writeTable('orders', ['id'], COLUMNS, stream(rows));
      const ext = compression === 'gzip' ? '.copy.gz' : '.copy';
      expect(table.parts.map((p) => [p.file, p.rows])).toEqual([
        [`${PREFIX}.orders.0001${ext}`, 10],
        [`${PREFIX}.orders.0002${ext}`, 10],
        [`${PREFIX}.orders.0003${ext}`, 5],
      ]);
      expect(table.rows).toBe(25);
      await writer.finish();
      expect(await readDelta(dir, compression)).toEqual([rows]);
    },
  );

  it('makes no empty trailing part when rows are an exact multiple of maxRowsPerPart', async () => {
    const dir = await testdir();
    const writer = new DeltaWriter(options(dir));
    const table = await writer.writeTable('orders', ['id'], COLUMNS, stream(rowsOf(20)));
    expect(table.parts.map((p) => p.rows)).toEqual([10, 10]);
    expect(await listDir(dir)).toHaveLength(2);
  });

  it('gives tables whose names make the same file name parts of their own', async () => {
    // `sales.orders` and `sales_orders` both read `sales_orders` once made safe for a file name.
    const dir = await testdir();
    const writer = new DeltaWriter(options(dir));
    const dotted = await writer.writeTable('sales.orders', ['id'], COLUMNS, stream(rowsOf(3)));
    const plain = await writer.writeTable('sales_orders', ['id'], COLUMNS, stream(rowsOf(12, 50)));
    const names = [...dotted.parts, ...plain.parts].map((p) => p.file);
    expect(new Set(names).size).toBe(3);
    expect(dotted.parts.map((p) => p.file)).toEqual([`${PREFIX}.sales_orders.0001.copy.gz`]);
    expect(plain.parts.map((p) => p.file)).toEqual([
      `${PREFIX}.sales_orders-2.0001.copy.gz`,
      `${PREFIX}.sales_orders-2.0002.copy.gz`,
    ]);
    await writer.finish();
    expect(await readDelta(dir, 'gzip')).toEqual([rowsOf(3), rowsOf(12, 50)]);
  });

  it('writes an empty table as a table with no parts', async () => {
    const dir = await testdir();
    const writer = new DeltaWriter(options(dir));
    const table = await writer.writeTable('orders', ['id'], COLUMNS, stream([]));
    expect(table).toEqual({
      name: 'orders',
      key: ['id'],
      columns: [
        { name: 'id', type: 'int', nativeType: 'integer' },
        { name: 'name', type: 'text' },
      ],
      rows: 0,
      parts: [],
    });
    expect(await listDir(dir)).toEqual([]);
    const { manifest } = await writer.finish();
    expect(manifest.tables[0]!.parts).toEqual([]);
    expect(await listDir(dir)).toEqual([MANIFEST]);
    expect((await readManifest(join(dir, MANIFEST))).tables[0]!.rows).toBe(0);
  });

  it('writes the manifest last: none exists before finish, and it is parseable after', async () => {
    const dir = await testdir();
    const writer = new DeltaWriter(options(dir, { simulated: true }));
    await writer.writeTable('customers', ['id'], COLUMNS, stream(rowsOf(3)));
    await writer.writeTable('orders', ['id'], COLUMNS, stream(rowsOf(12, 100)));
    expect(await listManifests(dir)).toEqual([]);
    expect((await listDir(dir)).some((f) => f.includes('MANIFEST'))).toBe(false);

    const { manifest, file } = await writer.finish();
    expect(file).toBe(MANIFEST);
    const listed = await listManifests(dir);
    expect(listed.map((e) => [e.file, e.logId])).toEqual([[MANIFEST, '200']]);

    const read = await readManifest(join(dir, MANIFEST), 'acme');
    expect(read).toEqual(manifest);
    expect(read).toMatchObject({
      format: FORMAT_NAME,
      formatVersion: FORMAT_VERSION,
      job: 'acme',
      fromLogId: '100',
      toLogId: '200',
      compression: 'gzip',
      simulated: true,
    });
    expect(Number.isNaN(Date.parse(read.createdAt))).toBe(false);
    expect(read.tables.map((t) => [t.name, t.rows, t.parts.length])).toEqual([
      ['customers', 3, 1],
      ['orders', 12, 2],
    ]);

    // Every part is on disk before the manifest that names it.
    const manifestTime = (await stat(join(dir, MANIFEST))).mtimeMs;
    for (const t of read.tables) {
      for (const p of t.parts) {
        expect((await stat(join(dir, p.file))).mtimeMs).toBeLessThanOrEqual(manifestTime);
      }
    }
    expect(await readDelta(dir, 'gzip')).toEqual([rowsOf(3), rowsOf(12, 100)]);
    expect((await listDir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('omits the simulated flag for real deltas', async () => {
    const dir = await testdir();
    const writer = new DeltaWriter(options(dir));
    await writer.finish();
    const text = await readFile(join(dir, MANIFEST), 'utf8');
    expect(text).not.toContain('simulated');
  });

  it('abort removes every part written so far', async () => {
    const dir = await testdir({ 'unrelated.txt': 'keep me' });
    const writer = new DeltaWriter(options(dir));
    await writer.writeTable('customers', ['id'], COLUMNS, stream(rowsOf(15)));
    expect(await listDir(dir)).toHaveLength(3);
    await writer.abort();
    expect(await listDir(dir)).toEqual(['unrelated.txt']);
  });

  it('a source failure mid-table removes the unfinished part; abort removes the finished ones', async () => {
    const dir = await testdir();
    const writer = new DeltaWriter(options(dir));
    await writer.writeTable('customers', ['id'], COLUMNS, stream(rowsOf(4)));
    await expect(
      writer.writeTable('orders', ['id'], COLUMNS, stream(rowsOf(25), 15)),
    ).rejects.toThrow('source connection lost');
    // Part 1 of orders was finished; part 2 was in progress and is gone (no temporary file).
    expect(await listDir(dir)).toEqual([
      `${PREFIX}.customers.0001.copy.gz`,
      `${PREFIX}.orders.0001.copy.gz`,
    ]);
    await writer.abort();
    expect(await listDir(dir)).toEqual([]);
  });

  it('finishing over a stale manifest of the same logId replaces it whole', async () => {
    const dir = await testdir();
    await writeFile(join(dir, MANIFEST), '{"truncated":');
    const writer = new DeltaWriter(options(dir));
    await writer.writeTable('orders', ['id'], COLUMNS, stream(rowsOf(2)));
    await writer.finish();
    expect((await readManifest(join(dir, MANIFEST))).tables[0]!.rows).toBe(2);
  });
});

describe('PartSeries', () => {
  /** A sink writing real part files whose `failing`th part fails to finish (a full disk). */
  function sink(dir: string, failing: number): PartSink {
    let finished = 0;
    return {
      maxRowsPerPart: 10,
      openPart: (file) => PartFileWriter.create(dir, file, 'gzip'),
      async finishPart(writer) {
        if (++finished === failing) {
          await writer.abort();
          throw new Error('no space left on device');
        }
        return writer.finish();
      },
    };
  }

  async function* lines(count: number): AsyncGenerator<Buffer> {
    for (let i = 1; i <= count; i++) yield Buffer.from(`${i}\tname ${i}\n`);
  }

  it('finishes a part while the next fills, and lists the parts in order', async () => {
    const dir = await testdir();
    const series = new PartSeries(sink(dir, 0), (i) => `p${i}.copy.gz`, ['int', 'text']);
    expect((await series.writeCopyText(lines(25))).rows).toBe(25);
    await series.close();
    expect(series.parts.map((p) => [p.file, p.rows])).toEqual([
      ['p1.copy.gz', 10],
      ['p2.copy.gz', 10],
      ['p3.copy.gz', 5],
    ]);
    expect(series.rows).toBe(25);
    expect(await listDir(dir)).toEqual(['p1.copy.gz', 'p2.copy.gz', 'p3.copy.gz']);
  });

  it('a part that fails to finish in the background stops the writing with its error', async () => {
    const dir = await testdir();
    const series = new PartSeries(sink(dir, 1), (i) => `p${i}.copy.gz`, ['int', 'text']);
    await expect(series.writeCopyText(lines(45))).rejects.toThrow('no space left on device');
    await series.abort();
    // Nothing under a part's name but what finished; no temporary file left.
    expect(await listDir(dir)).toEqual([]);
  });
});
