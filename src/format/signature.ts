/**
 * Signed manifests. With a shared `signingKey`, extract signs each manifest with HMAC-SHA256 and
 * load refuses deltas that are unsigned or whose signature does not verify. The signature covers
 * the manifest's canonical JSON (every field but `signature`, keys sorted, no spaces); signed
 * deltas also carry each part's SHA-256, so the signature reaches every byte of every part.
 * xxhash64 alone would not do: it is not a cryptographic hash.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { DeltaError } from '../errors.js';

export const SIGNATURE_ALGORITHM = 'HMAC-SHA256';

export interface Signature {
  alg: typeof SIGNATURE_ALGORITHM;
  /** Which key signed: the first 16 hex digits of the key's SHA-256 (not secret, helps rotation). */
  keyId: string;
  /** HMAC-SHA256 of the canonical manifest, hex. */
  value: string;
}

/** JSON with object keys sorted at every level and no white space: one text per value. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}

export function keyId(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

function hmac(key: string, manifest: Record<string, unknown>): string {
  const { signature: _ignored, ...signed } = manifest;
  return createHmac('sha256', key).update(canonicalJson(signed)).digest('hex');
}

export function sign<T extends object>(manifest: T, key: string): T & { signature: Signature } {
  return {
    ...manifest,
    signature: {
      alg: SIGNATURE_ALGORITHM,
      keyId: keyId(key),
      value: hmac(key, manifest as Record<string, unknown>),
    },
  };
}

/**
 * Checks the signature of a manifest as parsed from its file (before any schema step drops
 * fields). `keys`: the current key first, then previous keys still accepted during a rotation.
 */
export function verifySignature(raw: unknown, keys: string[], file: string): void {
  const manifest = raw as Record<string, unknown>;
  const sig = manifest.signature as Partial<Signature> | undefined;
  if (!sig || typeof sig !== 'object') {
    throw new DeltaError(`${file}: delta is not signed, and this loader requires signed deltas`, {
      file,
      hint: 'set the same signingKey on the extract side',
    });
  }
  if (sig.alg !== SIGNATURE_ALGORITHM || typeof sig.value !== 'string') {
    throw new DeltaError(`${file}: unknown signature algorithm '${String(sig.alg)}'`, { file });
  }
  const key = keys.find((k) => keyId(k) === sig.keyId);
  if (!key) {
    throw new DeltaError(
      `${file}: signed with key ${String(sig.keyId)}, which this loader does not have`,
      {
        file,
        hint: 'check signingKey / previousSigningKeys on both sides (key rotation)',
      },
    );
  }
  const expected = Buffer.from(hmac(key, manifest), 'hex');
  const actual = Buffer.from(sig.value, 'hex');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
    throw new DeltaError(
      `${file}: signature does not match: the manifest was altered after signing`,
      {
        file,
        hint: 'do not load it; find out who changed it, then copy the delta again from the source',
      },
    );
  }
}
