/**
 * Hostile inputs: whatever arrives in the inbox, `deltasync-load` either applies it exactly or
 * refuses it with exit 65 and one line naming the file and the reason, and then the replica and
 * every state file are exactly as before (compared byte for byte).
 *
 * Complements load-refusals.test.ts (a damaged copy of a real delta): here the deltas are
 * crafted so that each defect is the only one, with correct sizes and xxhash64 wherever the
 * defect is not the checksum itself, so that the check under test is the one that refuses.
 * Every test starts from the same fixture: delta 0→4 loaded, delta 4→10 (6 rows: 5 inserts and
 * an update, parts of 3 rows) copied to the inbox and not yet loaded.
 */
import {
  cpSync,
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gunzipSync } from 'node:zlib';
import xxhash from 'xxhash-wasm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { decodeLine } from '../../src/format/copy-text.js';
import type { LogicalType } from '../../src/format/wire.js';
import { sqliteJob, summaryOf, type SqliteJob } from '../helpers/cli.js';
import {
  SourceChanges,
  completeCycle,
  expectConverged,
  manifestsIn,
  runStep,
  snapshotDir,
  sqliteReplica,
  stateLogId,
  type PipelineDirs,
  type Replica,
} from '../helpers/invariants.js';

const { create64 } = await xxhash();

const D10 = 'logId00000000000000000010';
const MANIFEST = `${D10}.MANIFEST.json`;
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

let job: SqliteJob;
let pristine: string;
let recorded: SourceChanges;
/** The rows of delta 4→10 as extract wrote them, one COPY text line each (without the newline). */
let secondLines: string[];

let source: SourceChanges;
let replica: Replica;
let dirs: PipelineDirs;

beforeAll(async () => {
  job = sqliteJob();
  recorded = new SourceChanges(job.source);
  recorded.apply(range(1, 4), []);
  completeCycle(job.config, 'fixture');
  await sqliteReplica(job.target).installCounters();
  recorded.apply(range(5, 9), [1]);
  for (const step of ['extract', 'copy'] as const) {
    const r = runStep(step, job.config);
    expect(r.code, r.stderr).toBe(0);
  }
  secondLines = manifestsIn(job.inbox)
    .find((d) => d.file === MANIFEST)!
    .parts.flatMap((p) =>
      gunzipSync(readFileSync(join(job.inbox, p)))
        .toString('utf8')
        .split('\n')
        .filter((l) => l !== ''),
    );
  expect(secondLines).toHaveLength(6);
  pristine = mkdtempSync(join(tmpdir(), 'deltasync-hostile-'));
  cpSync(job.dir, pristine, { recursive: true });
});

afterAll(() => {
  job.cleanup();
  rmSync(pristine, { recursive: true, force: true });
});

beforeEach(() => {
  rmSync(job.dir, { recursive: true, force: true });
  cpSync(pristine, job.dir, { recursive: true });
  source = new SourceChanges(job.source, recorded.lastLogId);
  source.changes.push(...recorded.changes);
  replica = sqliteReplica(job.target);
  dirs = { job: 't', destination: 'main', ...job };
});

interface Before {
  state: Record<string, string>;
  rows: string[][];
  applied: string | null;
  changes: [number, number][];
  history: string[];
}

async function observe(): Promise<Before> {
  return {
    state: snapshotDir(job.stateDir),
    rows: await replica.rows(),
    applied: await replica.applied('t'),
    changes: await replica.changes(),
    history: await replica.history(),
  };
}

/**
 * Runs load and expects a refusal: exit 65, one line on stderr naming `file` and matching
 * `reason`, and nothing moved: not a row, not a trigger count, not a byte of any state file.
 */
async function expectRefused(file: string, reason: RegExp | string): Promise<string> {
  const before = await observe();
  expect(before.applied).toBe('4');
  const r = runStep('load', job.config);
  expect(r.code, r.stderr).toBe(65);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toContain(file);
  if (typeof reason === 'string') expect(lines[0]).toContain(reason);
  else expect(lines[0]).toMatch(reason);
  expect(await observe()).toEqual(before);
  return lines[0]!;
}

const manifestPath = () => join(job.inbox, MANIFEST);
const readManifest = () => JSON.parse(readFileSync(manifestPath(), 'utf8'));
const writeManifest = (m: unknown) => writeFileSync(manifestPath(), JSON.stringify(m, null, 2));

/** Streams `chunks` into a file, gzipped or not, and returns its size and xxhash64 as stored. */
async function writePartFile(
  path: string,
  chunks: Iterable<Buffer> | AsyncIterable<Buffer>,
  gzip: boolean,
): Promise<{ bytes: number; xxhash64: string }> {
  const hash = create64();
  let bytes = 0;
  const measure = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  const out: Writable = createWriteStream(path);
  if (gzip) await pipeline(Readable.from(chunks), createGzip({ level: 1 }), measure, out);
  else await pipeline(Readable.from(chunks), measure, out);
  return { bytes, xxhash64: hash.digest().toString(16).padStart(16, '0') };
}

interface CraftedPart {
  rows: number;
  content: () => Iterable<Buffer> | AsyncIterable<Buffer>;
}

const linesOf = (lines: string[]): CraftedPart => ({
  rows: lines.length,
  content: () => [Buffer.from(lines.map((l) => `${l}\n`).join(''))],
});

/**
 * Replaces delta 4→10 in the inbox with crafted parts: every size and checksum in the manifest is
 * right for the bytes written, so only what the parts hold can be wrong.
 */
async function craftSecond(
  parts: CraftedPart[],
  compression: 'gzip' | 'none',
  formatVersion: 1 | 2 = 2,
): Promise<string[]> {
  const m = readManifest();
  for (const p of m.tables[0].parts as { file: string }[]) rmSync(join(job.inbox, p.file));
  const ext = (formatVersion === 1 ? '.ndjson' : '.copy') + (compression === 'gzip' ? '.gz' : '');
  const entries = [];
  for (const [i, part] of parts.entries()) {
    const file = `${D10}.items.000${i + 1}${ext}`;
    const written = await writePartFile(
      join(job.inbox, file),
      part.content(),
      compression === 'gzip',
    );
    entries.push({ file, rows: part.rows, ...written });
  }
  m.compression = compression;
  m.formatVersion = formatVersion;
  m.tables[0].parts = entries;
  m.tables[0].rows = parts.reduce((n, p) => n + p.rows, 0);
  writeManifest(m);
  return entries.map((e) => e.file);
}

describe('crafting is sound', () => {
  it('a crafted copy of delta 4→10 (uncompressed, correct checksums) loads', async () => {
    await craftSecond([linesOf(secondLines.slice(0, 4)), linesOf(secondLines.slice(4))], 'none');
    completeCycle(job.config, 'crafted');
    await expectConverged(dirs, source, replica, '4', 'crafted delta');
  });

  it('a format-1 delta (NDJSON parts, in flight during an upgrade) loads the same', async () => {
    const types = readManifest().tables[0].columns.map((c: { type: LogicalType }) => c.type);
    const json = secondLines.map((l) => JSON.stringify(decodeLine(l, types)));
    expect(json[0]).toMatch(/^\["\d+",/);
    await craftSecond([linesOf(json.slice(0, 3)), linesOf(json.slice(3))], 'gzip', 1);
    completeCycle(job.config, 'format 1');
    await expectConverged(dirs, source, replica, '4', 'format-1 delta');
  });
});

describe('load refuses with 65, one line, and changes nothing', () => {
  it('a flipped byte in a part, where every row still decodes: only the checksum can tell', async () => {
    const [first] = await craftSecond([linesOf(secondLines.slice(0, 3))], 'none');
    const path = join(job.inbox, first!);
    const bytes = readFileSync(path);
    // A digit of the first row's last value (its log_id): still a valid row of 4 values.
    const at = bytes.indexOf(0x0a /* \n */) - 1;
    expect(String.fromCharCode(bytes[at]!)).toMatch(/\d/);
    bytes[at] ^= 0x01;
    writeFileSync(path, bytes);
    expect(statSync(path).size).toBe(readManifest().tables[0].parts[0].bytes);
    await expectRefused(first!, /checksum [0-9a-f]{16} does not match the manifest's/);
  });

  it('a truncated part, cut at a line boundary so that every remaining row is valid', async () => {
    const [, second] = await craftSecond(
      [linesOf(secondLines.slice(0, 3)), linesOf(secondLines.slice(3))],
      'none',
    );
    const path = join(job.inbox, second!);
    truncateSync(path, Buffer.byteLength(`${secondLines[3]}\n`));
    await expectRefused(second!, /is \d+ bytes, the manifest says \d+ \(truncated or altered\)/);
  });

  it('an empty manifest (a copy that stopped before the first byte)', async () => {
    truncateSync(manifestPath(), 0);
    await expectRefused(MANIFEST, /manifest is not valid JSON \(truncated or corrupt\)/);
  });

  it('a manifest cut before its closing brace', async () => {
    const text = readFileSync(manifestPath(), 'utf8').trimEnd();
    writeFileSync(manifestPath(), text.slice(0, -1));
    await expectRefused(MANIFEST, /manifest is not valid JSON \(truncated or corrupt\)/);
  });

  it.each([
    ['null', () => null, /invalid manifest: \(root\): .*object/],
    ['an array', () => [1, 2], /invalid manifest: \(root\): .*object/],
    [
      'tables that are not an array',
      (m: Record<string, unknown>) => ({ ...m, tables: 'items' }),
      /invalid manifest: tables: .*array/,
    ],
    [
      'a row count given as a string',
      (m: { tables: { parts: { rows: unknown }[] }[] }) => {
        m.tables[0]!.parts[0]!.rows = '3';
        return m;
      },
      /invalid manifest: tables\.0\.parts\.0\.rows: .*number/,
    ],
    [
      'no checksum',
      (m: { tables: { parts: { xxhash64?: unknown }[] }[] }) => {
        delete m.tables[0]!.parts[0]!.xxhash64;
        return m;
      },
      /invalid manifest: tables\.0\.parts\.0\.xxhash64: /,
    ],
  ] as const)('an invalid manifest (valid JSON, wrong shape): %s', async (_what, edit, reason) => {
    writeManifest((edit as (m: unknown) => unknown)(readManifest()));
    await expectRefused(MANIFEST, reason);
  });

  it.each(['../x', '/etc/passwd', 'sub/dir', `${D10}.items.0001.copy.gz/../../x`])(
    'a manifest naming a file outside its directory: %s',
    async (name) => {
      const m = readManifest();
      const real = m.tables[0].parts[0].file as string;
      // Where the name points (when we can choose), the very bytes the manifest describes: if
      // load followed the name it would find them whole, so only the name check can refuse.
      for (const where of [join(job.dir, 'x'), join(job.inbox, 'sub', 'dir')]) {
        mkdirSync(join(where, '..'), { recursive: true });
        cpSync(join(job.inbox, real), where);
      }
      m.tables[0].parts[0].file = name;
      writeManifest(m);
      await expectRefused(
        MANIFEST,
        `invalid manifest: tables.0.parts.0.file: '${name}' must be a plain file name (no directories)`,
      );
    },
  );

  it('a part listed twice (row counts adjusted so that only the repetition is wrong)', async () => {
    const m = readManifest();
    const parts = m.tables[0].parts as { file: string; rows: number }[];
    m.tables[0].parts = [parts[0], parts[0], ...parts.slice(1)];
    m.tables[0].rows += parts[0]!.rows;
    writeManifest(m);
    await expectRefused(MANIFEST, new RegExp(`part ${parts[0]!.file} is listed twice`));
  });

  it('a delta made by another job, valid in every other way', async () => {
    // A real extract of a job named 'other', its delta 0→7 delivered into this inbox.
    const other = sqliteJob({ name: 'other' });
    try {
      new SourceChanges(other.source).apply(range(1, 7), []);
      const r = runStep('extract', other.config);
      expect(r.code, r.stderr).toBe(0);
      const files = readdirSync(other.outbox);
      for (const f of files.filter((f) => !f.endsWith('.MANIFEST.json')))
        cpSync(join(other.outbox, f), join(job.inbox, f));
      const manifest = files.find((f) => f.endsWith('.MANIFEST.json'))!;
      cpSync(join(other.outbox, manifest), join(job.inbox, manifest));
      await expectRefused(
        'logId00000000000000000007.MANIFEST.json',
        /delta belongs to job 'other', not 't'/,
      );
    } finally {
      other.cleanup();
    }
  });

  it('a future format version, with a message saying to upgrade', async () => {
    writeManifest({ ...readManifest(), formatVersion: 3, somethingNew: { v: 3 } });
    await expectRefused(
      MANIFEST,
      /format version 3 is newer than this deltasync understands \(2\).*upgrade deltasync/,
    );
  });

  it('a row with the wrong number of columns (size and checksum right)', async () => {
    const short = secondLines[4]!.split('\t').slice(0, 3).join('\t');
    const [, second] = await craftSecond(
      [linesOf(secondLines.slice(0, 3)), linesOf([secondLines[3]!, short, secondLines[5]!])],
      'gzip',
    );
    await expectRefused(second!, /row 2 has 3 columns, the manifest declares 4/);
  });

  it('a value that is not of its declared type (size and checksum right)', async () => {
    const fields = secondLines[4]!.split('\t');
    fields[2] = 'many'; // qty, an int
    const [, second] = await craftSecond(
      [linesOf(secondLines.slice(0, 3)), linesOf([secondLines[3]!, fields.join('\t')])],
      'gzip',
    );
    await expectRefused(second!, /row 2 column 3: 'many' is not a bigint/);
  });

  it('a line of 100 MB (size and checksum right): refused at 64 MiB, memory stays bounded', async () => {
    const LINE = 100 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 'x');
    const [, second] = await craftSecond(
      [
        linesOf(secondLines.slice(0, 3)),
        {
          rows: 1,
          content: function* () {
            yield Buffer.from('11\t');
            for (let n = 0; n < LINE / chunk.length; n++) yield chunk;
            yield Buffer.from('\t1\t11\n');
          },
        },
      ],
      'gzip',
    );
    const before = await observe();
    const r = runStep('load', job.config);
    expect(r.code, r.stderr).toBe(65);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(
      `${second}: a line is longer than 67108864 bytes; the part is corrupt`,
    );
    expect(await observe()).toEqual(before);
    const rss = summaryOf(r.stdout)?.maxRssMb as number;
    console.log(`hostile-inputs: a 100 MB line refused with a peak RSS of ${rss} MB`);
    expect(rss).toBeLessThan(400);
  });
});

describe('deltas delivered twice or out of order', () => {
  it('an already-applied delta delivered again is skipped, not re-applied (exit 0)', async () => {
    expect(runStep('load', job.config).code).toBe(0);
    const applied = await observe();
    expect(applied.history).toEqual(['10']);
    // Copy forgets what it sent and delivers deltas 0→4 and 4→10 a second time.
    rmSync(join(job.stateDir, 't.copy.main.state.json'));
    const again = runStep('copy', job.config);
    expect(again.code, again.stderr).toBe(0);
    expect(summaryOf(again.stdout)).toMatchObject({ deltas: 2 });
    const r = runStep('load', job.config);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(summaryOf(r.stdout)).toMatchObject({ deltas: 0, rows: 0 });
    const after = await observe();
    // Not applied again: no trigger fired, no logId recorded again; state files as they were
    // (copy's own file aside, which the second delivery moved back to 10).
    expect(after.changes).toEqual(applied.changes);
    expect(after.history).toEqual(['10']);
    expect(after.rows).toEqual(applied.rows);
    expect(stateLogId(job.stateDir, 't', 'load')).toBe('10');
    // Already applied, it is not even read: a damaged re-delivery is just as harmless.
    truncateSync(manifestPath(), 10);
    expect(runStep('load', job.config)).toMatchObject({ code: 0, stderr: '' });
    expect(await observe()).toEqual(after);
  });

  it('the later delta first: a gap, nothing applied; once the missing one arrives, both in order', async () => {
    source.apply([20], [2]);
    for (const step of ['extract', 'copy'] as const) expect(runStep(step, job.config).code).toBe(0);
    // Delta 4→10 has not arrived yet: only 10→12 is in the inbox.
    const held = join(job.dir, 'in-transit');
    mkdirSync(held);
    const delta10 = readdirSync(job.inbox).filter((f) => f.startsWith(`${D10}.`));
    for (const f of delta10) renameSync(join(job.inbox, f), join(held, f));
    await expectRefused(
      'logId00000000000000000012.MANIFEST.json',
      /gap: the delta after logId 4 is missing; the next one in the inbox, logId00000000000000000012\.MANIFEST\.json, starts at 10/,
    );
    // It arrives, manifest last.
    for (const f of [...delta10.filter((f) => f !== MANIFEST), MANIFEST])
      renameSync(join(held, f), join(job.inbox, f));
    const r = runStep('load', job.config);
    expect(r.code, r.stderr).toBe(0);
    expect(summaryOf(r.stdout)).toMatchObject({ deltas: 2, rows: 8 });
    expect(await replica.history()).toEqual(['10', '12']);
    await expectConverged(dirs, source, replica, '4', 'after the missing delta arrived');
  });
});
