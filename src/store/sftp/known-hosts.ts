/**
 * Host key verification as OpenSSH does it: a `known_hosts` file (plain and hashed `|1|` entries,
 * `[host]:port` for other ports, wildcards, `@revoked`) or one pinned SHA256 fingerprint. There is
 * no "accept on first use": an unknown key is refused with its fingerprint, so that the admin can
 * check it out of band and pin it.
 */
import { createHash, createHmac } from 'node:crypto';

/** `SHA256:…` as `ssh-keygen -l` prints it: base64 of the key blob's SHA-256, no padding. */
export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

/** The key type named at the start of an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, …). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return 'unknown';
  const len = keyBlob.readUInt32BE(0);
  return keyBlob.subarray(4, 4 + len).toString('latin1');
}

export type HostKeyVerdict =
  { ok: true } | { ok: false; reason: 'unknown' | 'changed' | 'revoked'; fingerprint: string };

/** The name known_hosts uses for a host: `host` on port 22, `[host]:port` otherwise. */
function hostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function wildcardMatch(pattern: string, name: string): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i').test(name);
}

function hashedMatch(entry: string, name: string): boolean {
  // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
  const [, magic, salt, hash] = entry.split('|');
  if (magic !== '1' || !salt || !hash) return false;
  const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
  return mac === hash;
}

function hostsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith('|')) return hashedMatch(patterns, name);
  let matched = false;
  for (const p of patterns.split(',')) {
    if (p.startsWith('!')) {
      if (wildcardMatch(p.slice(1), name)) return false;
    } else if (wildcardMatch(p, name)) matched = true;
  }
  return matched;
}

/** Checks `keyBlob` offered by `host:port` against the text of a known_hosts file. */
export function verifyKnownHost(
  knownHosts: string,
  host: string,
  port: number,
  keyBlob: Buffer,
): HostKeyVerdict {
  const name = hostName(host, port);
  const offered = keyBlob.toString('base64');
  const type = keyTypeOf(keyBlob);
  const fingerprint = fingerprintOf(keyBlob);
  let sameTypeOtherKey = false;
  let accepted = false;
  for (const raw of knownHosts.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    const marker = fields[0]!.startsWith('@') ? fields.shift() : undefined;
    const [patterns, keyType, key] = fields;
    if (!patterns || !keyType || !key || !hostsMatch(patterns, name)) continue;
    if (marker === '@revoked') {
      if (key === offered) return { ok: false, reason: 'revoked', fingerprint };
      continue;
    }
    if (marker !== undefined) continue; // @cert-authority: certificates are not supported
    if (key === offered) accepted = true;
    else if (keyType === type) sameTypeOtherKey = true;
  }
  if (accepted) return { ok: true };
  return { ok: false, reason: sameTypeOtherKey ? 'changed' : 'unknown', fingerprint };
}
