/**
 * xxhash64 of file contents, streaming. xxhash is not a MAC: it detects corruption and
 * truncation, not tampering (signed manifests are for that).
 */
import { createReadStream } from 'node:fs';
import xxhash from 'xxhash-wasm';

let api: Awaited<ReturnType<typeof xxhash>> | undefined;

/** Streaming xxhash64; digest as 16 lowercase hex digits. */
export interface Hasher {
  update(chunk: Uint8Array): void;
  digestHex(): string;
}

export async function createHasher(): Promise<Hasher> {
  api ??= await xxhash();
  const h = api.create64();
  return {
    update(chunk) {
      h.update(chunk);
    },
    digestHex() {
      return h.digest().toString(16).padStart(16, '0');
    },
  };
}

/** Hash and size of a whole file, read as a stream. */
export async function hashFile(path: string): Promise<{ xxhash64: string; bytes: number }> {
  const hasher = await createHasher();
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hasher.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { xxhash64: hasher.digestHex(), bytes };
}

/** xxhash64 of a small value held in memory, as 16 hex digits. */
export async function hashText(text: string): Promise<string> {
  api ??= await xxhash();
  return api.h64(text).toString(16).padStart(16, '0');
}
