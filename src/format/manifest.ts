/**
 * The MANIFEST: the one file that makes a set of part files a delta. It is written last, so its
 * presence means every part it names was complete when it was written; its row counts and
 * checksums let every later step prove that the parts are still what extract wrote.
 * The format is specified in docs/format.md; change both together.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { z } from 'zod';
import { LOGICAL_TYPES } from './wire.js';
import { DeltaError } from '../errors.js';
import { writeFileAtomic } from './atomic-file.js';
import { compareLogIds, isLogId, logIdOfFile, logIdPrefix } from './logid.js';
import { verifySignature } from './signature.js';

/** The `format` field every manifest carries, so a stray JSON file is never taken for a delta. */
export const FORMAT_NAME = 'deltasync-delta';
/**
 * Bumped on any change a reader of the previous version would misread. A reader refuses
 * versions newer than its own rather than guess. Version 1: NDJSON parts (`.ndjson[.gz]`), still
 * read; version 2: COPY text parts (`.copy[.gz]`), written.
 */
export const FORMAT_VERSION = 2;

export const MANIFEST_SUFFIX = '.MANIFEST.json';

/** Part and manifest file names: one path segment of safe characters, never `..` or a slash. */
const SAFE_FILE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const logIdString = z.string().refine(isLogId, 'must be a decimal logId string');
const count = z.number().int().nonnegative();

const partSchema = z.object({
  file: z.string().refine((f) => SAFE_FILE.test(f), {
    error: (issue) => `'${String(issue.input)}' must be a plain file name (no directories)`,
  }),
  rows: count,
  bytes: count,
  xxhash64: z.string().regex(/^[0-9a-f]{16}$/, 'must be 16 lowercase hex digits'),
  /** Present in signed deltas: the part's SHA-256, so that the signature covers its bytes. */
  sha256: z
    .string()
    .regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits')
    .optional(),
});

const columnSchema = z.object({
  name: z.string().min(1),
  type: z.enum(LOGICAL_TYPES),
  /**
   * The source's own type name. For a `text` column from PostgreSQL whose type other engines
   * lack (arrays, enums, intervals, ...) the values are that type's PostgreSQL text.
   */
  nativeType: z.string().min(1).optional(),
});

const tableSchema = z.object({
  name: z.string().min(1),
  key: z.array(z.string().min(1)).min(1),
  columns: z.array(columnSchema).min(1),
  rows: count,
  parts: z.array(partSchema),
  /** Rows to delete, by key: each line holds the key values in `key` order. */
  deletes: z.object({ rows: count, parts: z.array(partSchema) }).optional(),
  /**
   * True in a base delta (seeding, `deltasync resync`): the parts hold the table's whole content
   * as of the delta's snapshot, and load replaces the replica table's content with them (rows the
   * base lacks are deleted) inside the delta's transaction. Such a table has no delete parts.
   */
  base: z.boolean().optional(),
  /**
   * The source table's columns changed since the previous delta (by name; a rename is a drop and
   * an add). Such a table is a base in this delta. Information for load and humans.
   */
  columnsChanged: z.object({ added: z.array(z.string()), dropped: z.array(z.string()) }).optional(),
});

/**
 * A change log's capture position as its engine made it (`pg:<snapshot>…`, see
 * src/db/pg/window.ts): opaque to every step, printable ASCII after an engine prefix.
 */
const enginePosition = z
  .string()
  .regex(/^[a-z][a-z0-9]*:[!-~]+$/, 'must be a logId or an engine position');

/**
 * Where extract stood after a delta, per table: a logId, a timestamp-mode cursor, or (for a
 * change log, under `changelog:<table>`) an engine's capture position.
 */
const cursorSchema = z.union([
  logIdString,
  enginePosition,
  z.object({
    ts: z.union([z.string(), z.number(), z.boolean(), z.null()]),
    key: z.array(z.union([z.string(), z.number(), z.boolean(), z.null()])),
  }),
]);

const manifestSchema = z.object({
  format: z.literal(FORMAT_NAME),
  formatVersion: z.number().int().positive(),
  job: z.string().min(1),
  fromLogId: logIdString,
  toLogId: logIdString,
  createdAt: z.string(),
  compression: z.enum(['gzip', 'none']),
  /** True for deltas made by `deltasync simulate`; load treats them like any other. */
  simulated: z.boolean().optional(),
  /**
   * True when every table of the job is a base table in this delta: a replica that has applied
   * nothing of this job (or is rebuilt) may start here, whatever came before `fromLogId`.
   */
  fullBase: z.boolean().optional(),
  tables: z.array(tableSchema),
  /**
   * Extract's per-table cursors after this delta, so that a delta published by a run that died
   * before saving its state can be adopted with them. Loaders ignore it.
   */
  cursors: z.record(z.string(), cursorSchema).optional(),
  /** HMAC-SHA256 of the rest, with a shared key (see src/format/signature.ts). */
  signature: z.object({ alg: z.string(), keyId: z.string(), value: z.string() }).optional(),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestTable = Manifest['tables'][number];
export type ManifestPart = ManifestTable['parts'][number];

export function manifestFileName(toLogId: string): string {
  return `${logIdPrefix(toLogId)}${MANIFEST_SUFFIX}`;
}

export function isManifestFileName(name: string): boolean {
  return /^logId[0-9]+\.MANIFEST\.json$/.test(name);
}

/** Checks what the schema cannot: chain order, names, sums, keys. Returns problems found. */
function semanticProblems(m: Manifest, fileName: string): string[] {
  const problems: string[] = [];
  if (compareLogIds(m.toLogId, m.fromLogId) <= 0) {
    problems.push(`toLogId ${m.toLogId} is not after fromLogId ${m.fromLogId}`);
  }
  const fileLogId = logIdOfFile(fileName);
  if (fileLogId !== null && fileLogId !== m.toLogId) {
    problems.push(`file name says logId ${fileLogId} but toLogId is ${m.toLogId}`);
  }
  const prefix = `${logIdPrefix(m.toLogId)}.`;
  const seenFiles = new Set<string>();
  const seenTables = new Set<string>();
  for (const t of m.tables) {
    if (seenTables.has(t.name)) problems.push(`table ${t.name} is listed twice`);
    seenTables.add(t.name);
    const columnNames = new Set(t.columns.map((c) => c.name));
    if (columnNames.size !== t.columns.length) problems.push(`table ${t.name}: duplicate column`);
    for (const k of t.key) {
      if (!columnNames.has(k)) problems.push(`table ${t.name}: key column ${k} is not a column`);
    }
    const checkParts = (parts: ManifestPart[], declared: number, what: string) => {
      let rows = 0;
      for (const p of parts) {
        if (!p.file.startsWith(prefix))
          problems.push(`part ${p.file} does not start with ${prefix}`);
        if (p.file.endsWith(MANIFEST_SUFFIX))
          problems.push(`part ${p.file} is named like a manifest`);
        if (seenFiles.has(p.file)) problems.push(`part ${p.file} is listed twice`);
        seenFiles.add(p.file);
        rows += p.rows;
      }
      if (rows !== declared)
        problems.push(`table ${t.name}: ${what}parts hold ${rows} rows, table says ${declared}`);
    };
    if (t.base && t.deletes && t.deletes.rows > 0)
      problems.push(`table ${t.name}: a base table cannot carry deletes`);
    checkParts(t.parts, t.rows, '');
    if (t.deletes) checkParts(t.deletes.parts, t.deletes.rows, 'delete ');
  }
  if (m.fullBase && !m.tables.every((t) => t.base))
    problems.push('fullBase is set but not every table is a base table');
  return problems;
}

/**
 * Parses and validates a manifest's text. `fileName` is the manifest's own name (for messages and
 * the logId check); `job`, when given, must match.
 */
export interface ManifestCheck {
  /** The job the delta must belong to. */
  job?: string;
  /** Keys a signature may verify with (current first); when given, the delta must be signed. */
  signingKeys?: string[];
}

export function parseManifest(
  text: string,
  fileName: string,
  check: ManifestCheck | string = {},
): Manifest {
  const { job, signingKeys } =
    typeof check === 'string' ? { job: check, signingKeys: undefined } : check;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new DeltaError(`${fileName}: manifest is not valid JSON (truncated or corrupt)`, {
      file: fileName,
      hint: 'copy the delta again from the source outbox',
    });
  }
  const version = (raw as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version === 'number' && version > FORMAT_VERSION) {
    throw new DeltaError(
      `${fileName}: format version ${version} is newer than this deltasync understands (${FORMAT_VERSION})`,
      { file: fileName, hint: 'upgrade deltasync on this host' },
    );
  }
  if (signingKeys && signingKeys.length > 0) verifySignature(raw, signingKeys, fileName);
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    throw new DeltaError(`${fileName}: invalid manifest: ${first}`, { file: fileName });
  }
  const m = parsed.data;
  const problems = semanticProblems(m, basename(fileName));
  if (problems.length > 0) {
    throw new DeltaError(`${fileName}: invalid manifest: ${problems.slice(0, 3).join('; ')}`, {
      file: fileName,
    });
  }
  if (job !== undefined && m.job !== job) {
    throw new DeltaError(`${fileName}: delta belongs to job '${m.job}', not '${job}'`, {
      file: fileName,
      hint: 'check that this inbox is not shared by two jobs',
    });
  }
  if (signingKeys && signingKeys.length > 0) {
    const unsealed = partsOf(m).find((p) => !p.sha256);
    if (unsealed) {
      throw new DeltaError(
        `${fileName}: part ${unsealed.file} has no SHA-256, so the signature does not cover it`,
        {
          file: fileName,
        },
      );
    }
  }
  return m;
}

export async function readManifest(
  path: string,
  check: ManifestCheck | string = {},
): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DeltaError(`${basename(path)}: cannot read manifest: ${(err as Error).message}`, {
      file: path,
      cause: err,
    });
  }
  return parseManifest(text, basename(path), check);
}

/** Serialises a manifest: stable key order, one table per block, readable by humans. */
export function serializeManifest(m: Manifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}

export async function writeManifest(path: string, m: Manifest): Promise<void> {
  await writeFileAtomic(path, serializeManifest(m));
}

/** Every part file of a manifest, in order. */
export function partsOf(m: Manifest): ManifestPart[] {
  return m.tables.flatMap((t) => [...t.parts, ...(t.deletes?.parts ?? [])]);
}

export type Cursor = z.infer<typeof cursorSchema>;
