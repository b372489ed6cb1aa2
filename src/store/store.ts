/**
 * The delta store: where deltas live (a directory, an SFTP server, S3-compatible object storage),
 * behind one small interface modelled on Litestream's `ReplicaClient`. Steps read, publish, list
 * and remove delta files only through it; each kind of store is one folder beside this file.
 *
 * File names are plain names (docs/format.md), never paths: a store maps them to its directory,
 * remote path or key prefix.
 */
import type { Readable } from 'node:stream';

/** A delta in a store, found by its manifest (a part without its manifest is not a delta yet). */
export interface StoreManifest {
  /** Manifest file name, e.g. `logId00000000000000000042.MANIFEST.json`. */
  file: string;
  /** The delta's toLogId, read from the file name, without leading zeros. */
  logId: string;
}

/** Size and hash of a file's bytes, as a manifest states them for a part. */
export interface FileDigest {
  bytes: number;
  xxhash64: string;
}

export interface PublishOptions {
  /**
   * What the bytes must be. Checked while they stream in, before anything is visible under the
   * final name; a mismatch is a DeltaError (65) and nothing is published.
   */
  expect?: FileDigest;
}

/** Something an interrupted writer left: a temporary file, an unfinished upload, an orphan part. */
export interface Leftover {
  /** The final file name it belongs to (for a temporary file or an upload) or its own name. */
  name: string;
  kind: 'temporary' | 'upload' | 'orphan-part';
  /** The store's own handle on it (a temporary path, an upload id), for `removeLeftover`. */
  ref: string;
}

export interface DeltaStore {
  /** Where the store is, for messages and logs: a directory or a URL without secrets. */
  readonly where: string;

  /**
   * Proves the store can be used: reachable, its directory (bucket, prefix) there. A directory
   * that is missing is a mount that failed, not one to create: UnavailableError (69).
   */
  check(): Promise<void>;

  /**
   * Delta manifests with a logId greater than `after`, in logId order (numeric). Cheap when
   * nothing is new: S3 starts its listing after the last known manifest (`StartAfter`).
   */
  listManifests(after?: string): Promise<StoreManifest[]>;

  /** Names of published files starting with `prefix` (temporary names excluded), sorted. */
  list(prefix: string): Promise<string[]>;

  /** The file's bytes as a stream; a missing file is a DeltaError (65) naming it. */
  read(file: string): Promise<Readable>;

  /** The file's size, or null when it is not there. */
  stat(file: string): Promise<{ bytes: number } | null>;

  /**
   * Publishes `source` under `file` atomically and create-only: readers see nothing or the whole
   * file. When `file` already holds the same bytes this is a success (a run that died after
   * publishing is repeated); different bytes are a DeltaError (65) naming the file.
   */
  publish(
    file: string,
    source: Readable | Uint8Array | string,
    options?: PublishOptions,
  ): Promise<FileDigest>;

  /**
   * Replaces `file` atomically with `data` (small files a reader expects to change, such as
   * acknowledgements). Not for delta files, which are create-only. Its caller holds the lock for
   * that name, so temporary files of the name left by earlier (killed) writers are removed first.
   */
  replace(file: string, data: Uint8Array | string): Promise<void>;

  /** Removes `file`; a file already gone is not an error. */
  remove(file: string): Promise<void>;

  /**
   * What interrupted writers left: temporary files, unfinished uploads, and parts whose delta
   * has no manifest; with `after`, only those of deltas past that logId (S3 then lists only
   * from there on). Only safe to remove while holding the lock of the step that writes here.
   */
  leftovers(after?: string): Promise<Leftover[]>;

  removeLeftover(leftover: Leftover): Promise<void>;

  /** Releases connections. The store is unusable afterwards. */
  close(): Promise<void>;
}
