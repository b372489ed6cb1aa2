import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DeltaError, ExitCode, describeError } from '../../src/errors.js';
import {
  FORMAT_NAME,
  FORMAT_VERSION,
  isManifestFileName,
  manifestFileName,
  parseManifest,
  partsOf,
  readManifest,
  serializeManifest,
  writeManifest,
  type Manifest,
} from '../../src/format/manifest.js';
import { listDir, testdir } from '../helpers/tmp.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/manifest/', import.meta.url));
const FILE = 'logId00000000000000000200.MANIFEST.json';
const P = 'logId00000000000000000200';

/** A valid two-table manifest for job "acme", delta 100 -> 200; a fresh copy on every call. */
function validManifest(): Manifest {
  return {
    format: FORMAT_NAME,
    formatVersion: FORMAT_VERSION,
    job: 'acme',
    fromLogId: '100',
    toLogId: '200',
    createdAt: '2024-05-01T12:00:00.000Z',
    compression: 'gzip',
    tables: [
      {
        name: 'customers',
        key: ['id'],
        columns: [
          { name: 'id', type: 'int' },
          { name: 'name', type: 'text' },
        ],
        rows: 15,
        parts: [
          {
            file: `${P}.customers.0001.ndjson.gz`,
            rows: 10,
            bytes: 120,
            xxhash64: '0123456789abcdef',
          },
          {
            file: `${P}.customers.0002.ndjson.gz`,
            rows: 5,
            bytes: 60,
            xxhash64: 'fedcba9876543210',
          },
        ],
      },
      {
        name: 'public.order lines',
        key: ['order_id', 'line'],
        columns: [
          { name: 'order_id', type: 'bigint' },
          { name: 'line', type: 'int' },
          { name: 'amount', type: 'decimal' },
        ],
        rows: 2,
        parts: [
          {
            file: `${P}.public_order_lines.0001.ndjson.gz`,
            rows: 2,
            bytes: 40,
            xxhash64: '00000000000000ff',
          },
        ],
      },
    ],
  };
}

/** Parses `m` (or raw text) and returns the error it is refused with; fails if it is accepted. */
function refusal(m: unknown, fileName = FILE, job?: string): DeltaError {
  const text = typeof m === 'string' ? m : JSON.stringify(m);
  try {
    parseManifest(text, fileName, job);
  } catch (err) {
    expect(err).toBeInstanceOf(DeltaError);
    const e = err as DeltaError;
    expect(e.exitCode).toBe(ExitCode.DATA);
    expect(e.exitCode).toBe(65);
    expect(e.message.startsWith(`${fileName}: `)).toBe(true);
    expect(e.message).not.toContain('\n');
    expect(e.file).toBe(fileName);
    return e;
  }
  throw new Error('the manifest was accepted');
}

function withChange(change: (m: Manifest) => void): Manifest {
  const m = validManifest();
  change(m);
  return m;
}

describe('names', () => {
  it('manifestFileName pads the logId and isManifestFileName recognises it', () => {
    expect(manifestFileName('200')).toBe(FILE);
    expect(isManifestFileName(FILE)).toBe(true);
    expect(isManifestFileName(`${P}.customers.0001.ndjson.gz`)).toBe(false);
    expect(isManifestFileName(`.${FILE}.tmp-123-abcd`)).toBe(false);
    expect(isManifestFileName(`${FILE}.bak`)).toBe(false);
  });
});

describe('round trip', () => {
  it('writeManifest then readManifest gives back the same manifest', async () => {
    const dir = await testdir();
    const m = validManifest();
    await writeManifest(join(dir, FILE), m);
    expect(await listDir(dir)).toEqual([FILE]);
    expect(await readManifest(join(dir, FILE), 'acme')).toEqual(m);
    expect(partsOf(m).map((p) => p.file)).toEqual([
      `${P}.customers.0001.ndjson.gz`,
      `${P}.customers.0002.ndjson.gz`,
      `${P}.public_order_lines.0001.ndjson.gz`,
    ]);
  });

  it('keeps the simulated flag, and logIds up to 2^64 - 1 exactly', async () => {
    const dir = await testdir();
    const m = withChange((x) => {
      x.simulated = true;
      x.fromLogId = '18446744073709551614';
      x.toLogId = '18446744073709551615';
      x.tables = [];
    });
    const file = manifestFileName(m.toLogId);
    await writeManifest(join(dir, file), m);
    const back = await readManifest(join(dir, file));
    expect(back.simulated).toBe(true);
    expect(back.toLogId).toBe('18446744073709551615');
    expect(back).toEqual(m);
  });

  it('serializes as readable, newline-terminated JSON', () => {
    const text = serializeManifest(validManifest());
    expect(text.endsWith('}\n')).toBe(true);
    expect(text.split('\n').length).toBeGreaterThan(20);
    expect(JSON.parse(text)).toEqual(validManifest());
  });

  it('reads a static fixture of a valid manifest (format 1, written before format 2)', async () => {
    const m = await readManifest(join(FIXTURES, 'valid', FILE), 'acme');
    expect(m.formatVersion).toBe(1);
    expect(m.toLogId).toBe('200');
    expect(m.tables.map((t) => [t.name, t.rows, t.parts.length])).toEqual([
      ['customers', 3, 1],
      ['orders', 0, 0],
    ]);
  });

  it('keeps a column nativeType (format 2: the PostgreSQL type of text-carried values)', () => {
    const m = withChange((x) => {
      x.tables[0]!.columns[1] = { name: 'name', type: 'text', nativeType: 'integer[]' };
    });
    expect(FORMAT_VERSION).toBe(2);
    const back = parseManifest(JSON.stringify(m), FILE);
    expect(back.tables[0]!.columns[1]).toEqual({
      name: 'name',
      type: 'text',
      nativeType: 'integer[]',
    });
  });

  it('compares logIds numerically: 9 -> 10 is a valid step', () => {
    const m = withChange((x) => {
      x.fromLogId = '9';
      x.toLogId = '10';
      x.tables = [];
    });
    expect(parseManifest(JSON.stringify(m), manifestFileName('10')).toLogId).toBe('10');
  });
});

describe('refusals', () => {
  it('truncated text (static fixture), naming the file', async () => {
    const path = join(FIXTURES, 'truncated', FILE);
    const err = await readManifest(path).then(
      () => {
        throw new Error('accepted');
      },
      (e: unknown) => e as DeltaError,
    );
    expect(err).toBeInstanceOf(DeltaError);
    expect(err.exitCode).toBe(65);
    expect(err.message).toMatch(new RegExp(`^${FILE}: .*not valid JSON`));
  });

  it('invalid JSON and every truncation of a valid manifest', () => {
    expect(refusal('{"format": "deltasync-delta",').message).toContain('not valid JSON');
    expect(refusal('').message).toContain('not valid JSON');
    const text = serializeManifest(validManifest());
    for (let cut = 1; cut < text.length - 2; cut += 17) {
      refusal(text.slice(0, cut));
    }
  });

  it('JSON that is not an object', () => {
    expect(refusal('null').message).toContain('invalid manifest');
    expect(refusal('[]').message).toContain('invalid manifest');
    expect(refusal('"deltasync-delta"').message).toContain('invalid manifest');
  });

  it('a missing file, naming it', async () => {
    const dir = await testdir();
    await expect(readManifest(join(dir, FILE))).rejects.toThrow(
      new RegExp(`^${FILE}: cannot read manifest`),
    );
    await expect(readManifest(join(dir, FILE))).rejects.toBeInstanceOf(DeltaError);
  });

  it('a wrong format name', () => {
    const err = refusal(withChange((m) => ((m as { format: string }).format = 'other-tool')));
    expect(err.message).toContain('format');
  });

  it('a newer formatVersion, telling the operator to upgrade', () => {
    const err = refusal(withChange((m) => (m.formatVersion = FORMAT_VERSION + 1)));
    expect(err.message).toContain(`format version ${FORMAT_VERSION + 1} is newer`);
    expect(describeError(err)).toMatch(/upgrade/);
  });

  it('a newer formatVersion is reported even when the rest would not parse as version 1', () => {
    const err = refusal({ format: FORMAT_NAME, formatVersion: 99, everything: 'different' });
    expect(describeError(err)).toMatch(/upgrade/);
  });

  it('toLogId equal to fromLogId', () => {
    const m = withChange((x) => (x.fromLogId = '200'));
    expect(refusal(m).message).toContain('toLogId 200 is not after fromLogId 200');
  });

  it('toLogId before fromLogId, compared as numbers', () => {
    const m = withChange((x) => {
      x.fromLogId = '1000';
      x.tables = [];
    });
    expect(refusal(m).message).toContain('toLogId 200 is not after fromLogId 1000');
  });

  it('logIds that are not decimal strings', () => {
    expect(refusal(withChange((m) => (m.fromLogId = '-1'))).message).toContain('fromLogId');
    expect(refusal(withChange((m) => (m.fromLogId = '0100'))).message).toContain('fromLogId');
    const numeric = { ...validManifest(), toLogId: 200 };
    expect(refusal(numeric).message).toContain('toLogId');
  });

  it('a file name whose logId is not toLogId', () => {
    const other = manifestFileName('300');
    const err = refusal(validManifest(), other);
    expect(err.message).toContain('file name says logId 300 but toLogId is 200');
  });

  it.each([
    ['a ../ path', `../${P}.customers.0001.ndjson.gz`],
    ['an absolute path', `/etc/${P}.customers.0001.ndjson.gz`],
    ['a slash', `sub/${P}.customers.0001.ndjson.gz`],
    ['a backslash', `..\\${P}.customers.0001.ndjson.gz`],
    ['just ..', '..'],
    ['an empty name', ''],
  ])('a part file name with %s', (_what, file) => {
    const err = refusal(withChange((m) => (m.tables[0]!.parts[0]!.file = file)));
    expect(err.message).toContain('tables.0.parts.0.file');
  });

  it('a part listed twice in one table', () => {
    const m = withChange((x) => {
      const t = x.tables[0]!;
      t.parts[1]!.file = t.parts[0]!.file;
    });
    expect(refusal(m).message).toContain(`part ${P}.customers.0001.ndjson.gz is listed twice`);
  });

  it('a part listed by two tables', () => {
    const m = withChange((x) => {
      x.tables[1]!.parts[0]!.file = x.tables[0]!.parts[0]!.file;
    });
    expect(refusal(m).message).toContain('is listed twice');
  });

  it('a part not starting with the delta prefix', () => {
    const stray = 'logId00000000000000000100.customers.0001.ndjson.gz';
    const err = refusal(withChange((m) => (m.tables[0]!.parts[0]!.file = stray)));
    expect(err.message).toContain(`part ${stray} does not start with ${P}.`);
  });

  it('a part named like a manifest', () => {
    const err = refusal(withChange((m) => (m.tables[0]!.parts[0]!.file = `${P}.x.MANIFEST.json`)));
    expect(err.message).toContain('is named like a manifest');
  });

  it('part rows that do not sum to the table rows', () => {
    const err = refusal(withChange((m) => (m.tables[0]!.rows = 16)));
    expect(err.message).toContain('table customers: parts hold 15 rows, table says 16');
  });

  it('a table with rows but no parts', () => {
    const err = refusal(withChange((m) => (m.tables[0]!.parts = [])));
    expect(err.message).toContain('parts hold 0 rows, table says 15');
  });

  it('a key column that is not a column', () => {
    const err = refusal(withChange((m) => (m.tables[1]!.key = ['order_id', 'line_no'])));
    expect(err.message).toContain('key column line_no is not a column');
  });

  it('an empty key', () => {
    expect(refusal(withChange((m) => (m.tables[0]!.key = []))).message).toContain('tables.0.key');
  });

  it('a column listed twice', () => {
    const m = withChange((x) => x.tables[0]!.columns.push({ name: 'name', type: 'text' }));
    expect(refusal(m).message).toContain('table customers: duplicate column');
  });

  it('a table listed twice', () => {
    const m = withChange((x) => (x.tables[1]!.name = 'customers'));
    expect(refusal(m).message).toContain('table customers is listed twice');
  });

  it('an unknown column type', () => {
    const m = withChange((x) => ((x.tables[0]!.columns[0] as { type: string }).type = 'money'));
    expect(refusal(m).message).toContain('tables.0.columns.0.type');
  });

  it('a checksum that is not 16 lowercase hex digits', () => {
    const err = refusal(withChange((m) => (m.tables[0]!.parts[0]!.xxhash64 = 'ABCDEF0123456789')));
    expect(err.message).toContain('tables.0.parts.0.xxhash64');
  });

  it('negative or fractional counts', () => {
    expect(refusal(withChange((m) => (m.tables[0]!.parts[0]!.bytes = -1))).message).toContain(
      'tables.0.parts.0.bytes',
    );
    expect(refusal(withChange((m) => (m.tables[0]!.parts[0]!.rows = 9.5))).message).toContain(
      'tables.0.parts.0.rows',
    );
  });

  it('an unknown compression', () => {
    const err = refusal(withChange((m) => ((m as { compression: string }).compression = 'zstd')));
    expect(err.message).toContain('compression');
  });

  it('a delta of another job', () => {
    const err = refusal(validManifest(), FILE, 'other-job');
    expect(err.message).toContain(`delta belongs to job 'acme', not 'other-job'`);
    expect(() => parseManifest(JSON.stringify(validManifest()), FILE, 'acme')).not.toThrow();
  });

  it('readManifest names the file, not the whole path, and checks the job', async () => {
    const dir = await testdir();
    await writeFile(join(dir, FILE), serializeManifest(validManifest()));
    await expect(readManifest(join(dir, FILE), 'other')).rejects.toThrow(
      new RegExp(`^${FILE}: delta belongs to job 'acme'`),
    );
    const tampered = (await readFile(join(dir, FILE), 'utf8')).replace('"rows": 15', '"rows": 14');
    await writeFile(join(dir, FILE), tampered);
    await expect(readManifest(join(dir, FILE))).rejects.toThrow(
      /parts hold 15 rows, table says 14/,
    );
  });
});
