/**
 * Finding deltas in a directory (an outbox, a destination, an inbox). Only manifests count: a
 * part without its manifest is not a delta yet, and temporary files are never looked at.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { UnavailableError } from '../errors.js';
import { isTemporaryName } from './atomic-file.js';
import { compareLogIds, logIdOfFile } from './logid.js';
import { isManifestFileName } from './manifest.js';

export interface ManifestEntry {
  /** Manifest file name. */
  file: string;
  path: string;
  /** The delta's toLogId, read from the file name. */
  logId: string;
}

/** Manifests in `dir` with a logId greater than `after`, in logId order (numeric, not textual). */
export async function listManifests(dir: string, after = '0'): Promise<ManifestEntry[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new UnavailableError(`cannot list ${dir}: ${(err as Error).message}`);
  }
  const entries: ManifestEntry[] = [];
  for (const file of names) {
    if (isTemporaryName(file) || !isManifestFileName(file)) continue;
    const logId = logIdOfFile(file)!;
    if (compareLogIds(logId, after) > 0) entries.push({ file, path: join(dir, file), logId });
  }
  return entries.sort((a, b) => compareLogIds(a.logId, b.logId));
}
