/**
 * Opening a store from a config's spec. Each kind's driver (ssh2, the AWS SDK) is imported only
 * when a store of that kind is opened, so that a cron run with nothing to do stays fast.
 */
import { DirStore } from './dir/dir-store.js';
import { parseStoreSpec, type StoreSpec, type StoreSpecInput } from './spec.js';
import type { DeltaStore } from './store.js';

export type { DeltaStore, FileDigest, Leftover, PublishOptions, StoreManifest } from './store.js';
export {
  parseStoreSpec,
  storeObjectSchema,
  storeOptionsShape,
  storeSpecSchema,
  type StoreSpec,
  type StoreSpecInput,
} from './spec.js';
export { readManifestIn, readText } from './common.js';

/** Opens the store a spec names. Remote stores connect on first use, not here. */
export async function openStore(spec: StoreSpec | StoreSpecInput): Promise<DeltaStore> {
  const s = typeof spec === 'object' && 'kind' in spec ? spec : parseStoreSpec(spec);
  switch (s.kind) {
    case 'dir':
      return new DirStore(s.dir);
    case 'sftp': {
      const { SftpStore } = await import('./sftp/sftp-store.js');
      return new SftpStore(s);
    }
    case 's3': {
      const { S3Store } = await import('./s3/s3-store.js');
      return new S3Store(s);
    }
  }
}
