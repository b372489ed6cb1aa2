/**
 * An SFTP store (OpenSSH's sftp-server or any SFTP v3 server), over one SSH connection per run.
 * Publishing writes a temporary name, fsyncs it where the server offers `fsync@openssh.com`, then
 * renames it with `posix-rename@openssh.com`, or a plain rename when the server lacks it (then
 * only because the final name was just seen absent).
 *
 * The host key is always verified (known_hosts or a pinned fingerprint, see known-hosts.ts); keys
 * come from files, a passphrase from the environment, never from the URL.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ssh2, { type Client, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { ConfigError, DeltaError, UnavailableError } from '../../errors.js';
import { TMP_MARKER, isTemporaryName } from '../../format/atomic-file.js';
import {
  acceptExisting,
  digestStream,
  manifestsIn,
  missingFile,
  leftoversAmong,
  temporariesOf,
  toReadable,
  typedErrors,
} from '../common.js';
import type { DeltaStore, FileDigest, Leftover, PublishOptions, StoreManifest } from '../store.js';
import { fingerprintOf, verifyKnownHost, type HostKeyVerdict } from './known-hosts.js';

export interface SftpStoreOptions {
  host: string;
  port: number;
  username: string;
  /** Absolute directory on the server. */
  path: string;
  /** Default ~/.ssh/known_hosts. Ignored when `hostKey` pins the key. */
  knownHostsFile?: string;
  /** A pinned host key fingerprint, `SHA256:…` as `ssh-keygen -lf` prints it. */
  hostKey?: string;
  /** Default ~/.ssh/id_ed25519, then ~/.ssh/id_rsa. */
  privateKeyFile?: string;
  /** Name of the environment variable holding the key's passphrase. */
  passphraseEnv?: string;
  connectTimeoutSeconds?: number;
}

/** SFTP status codes (draft-ietf-secsh-filexfer-02). */
const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;
/** Bytes per SFTP write request; OpenSSH accepts up to 256 KiB, every server at least 32 KiB. */
const WRITE_CHUNK = 32 * 1024;
/** Write requests in flight at once, so that a transfer is not one round trip per chunk. */
const WRITE_WINDOW = 32;

function expandHome(path: string): string {
  return path.startsWith('~/') ? join(homedir(), path.slice(2)) : path;
}

function call<T>(fn: (cb: (err: Error | null | undefined, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
}

function sftpCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

export class SftpStore implements DeltaStore {
  readonly where: string;
  private session?: Promise<{ client: Client; sftp: SFTPWrapper }>;

  constructor(private readonly options: SftpStoreOptions) {
    const port = options.port === 22 ? '' : `:${options.port}`;
    this.where = `sftp://${options.username}@${options.host}${port}${options.path}`;
  }

  private pathOf(file: string): string {
    return posix.join(this.options.path, file);
  }

  private fail(err: unknown, what: string): unknown {
    if (err instanceof DeltaError || err instanceof ConfigError || err instanceof UnavailableError)
      return err;
    const code = sftpCode(err);
    const hint =
      code === SFTP_PERMISSION_DENIED
        ? `check that ${this.options.username} may write ${this.options.path} on ${this.options.host}`
        : 'check the server and the connection, then run again';
    return new UnavailableError(`${this.where}: ${what}: ${(err as Error).message}`, {
      hint,
      cause: err,
    });
  }

  /** The one connection of this run, opened on first use. */
  private connection(): Promise<{ client: Client; sftp: SFTPWrapper }> {
    this.session ??= this.connect();
    return this.session;
  }

  private async credentials(): Promise<Pick<ConnectConfig, 'privateKey' | 'passphrase'>> {
    const { privateKeyFile, passphraseEnv } = this.options;
    const candidates = privateKeyFile
      ? [expandHome(privateKeyFile)]
      : [join(homedir(), '.ssh', 'id_ed25519'), join(homedir(), '.ssh', 'id_rsa')];
    let key: Buffer | undefined;
    let keyFile = '';
    for (const file of candidates) {
      key = await readFile(file).catch(() => undefined);
      keyFile = file;
      if (key) break;
    }
    if (!key) {
      throw new ConfigError(`${this.where}: cannot read a private key (${candidates.join(', ')})`, {
        hint: 'set privateKeyFile to a key the server accepts for this user',
      });
    }
    let passphrase: string | undefined;
    if (passphraseEnv) {
      passphrase = process.env[passphraseEnv];
      if (passphrase === undefined) {
        throw new ConfigError(
          `${this.where}: environment variable ${passphraseEnv} (passphraseEnv) is not set`,
          { hint: `export ${passphraseEnv} with the passphrase of ${keyFile}` },
        );
      }
    }
    const parsed = ssh2.utils.parseKey(key, passphrase);
    if (parsed instanceof Error) {
      throw new ConfigError(`${this.where}: cannot use private key ${keyFile}: ${parsed.message}`, {
        hint: passphraseEnv
          ? `check the passphrase in ${passphraseEnv}`
          : 'for a key with a passphrase, set passphraseEnv to the variable that holds it',
      });
    }
    return { privateKey: key, passphrase };
  }

  private async hostKeyCheck(): Promise<(key: Buffer) => HostKeyVerdict> {
    const { hostKey, host, port } = this.options;
    if (hostKey) {
      return (key) => {
        const fingerprint = fingerprintOf(key);
        return fingerprint === hostKey
          ? { ok: true }
          : { ok: false, reason: 'changed', fingerprint };
      };
    }
    const file = expandHome(this.options.knownHostsFile ?? '~/.ssh/known_hosts');
    const text = await readFile(file, 'utf8').catch(() => '');
    return (key) => verifyKnownHost(text, host, port, key);
  }

  private hostKeyError(verdict: Extract<HostKeyVerdict, { ok: false }>): ConfigError {
    const { host, port, hostKey } = this.options;
    const against = hostKey ? `the pinned hostKey ${hostKey}` : 'known_hosts';
    const where = `${host}:${port}`;
    switch (verdict.reason) {
      case 'unknown':
        return new ConfigError(`${where} offered an unknown host key ${verdict.fingerprint}`, {
          hint: `check it with the server's admin (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then pin it with hostKey: '${verdict.fingerprint}' or add it to known_hosts`,
        });
      case 'revoked':
        return new ConfigError(`${where} offered a revoked host key ${verdict.fingerprint}`);
      case 'changed':
        return new ConfigError(
          `the host key of ${where} has CHANGED: it offered ${verdict.fingerprint}, which does not match ${against}`,
          {
            hint: 'someone may be intercepting the connection; if the server was really re-keyed, update the pinned key or known_hosts',
          },
        );
    }
  }

  private async connect(): Promise<{ client: Client; sftp: SFTPWrapper }> {
    const { host, port, username } = this.options;
    const auth = await this.credentials();
    const check = await this.hostKeyCheck();
    let refused: ConfigError | undefined;
    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', (err: Error & { level?: string; code?: string }) => {
        if (refused) return reject(refused);
        if (err.level === 'client-authentication') {
          return reject(
            new ConfigError(`${this.where}: the server refused the key for ${username}`, {
              hint: `add the public key to ~${username}/.ssh/authorized_keys on ${host}, or set privateKeyFile`,
            }),
          );
        }
        reject(
          new UnavailableError(`cannot connect to ${host}:${port}: ${err.message}`, {
            hint: 'check that the host is up and reachable, and its SSH port open to this host',
            cause: err,
          }),
        );
      });
      client.connect({
        host,
        port,
        username,
        ...auth,
        readyTimeout: (this.options.connectTimeoutSeconds ?? 20) * 1000,
        hostVerifier: (key: Buffer) => {
          const verdict = check(key);
          if (!verdict.ok) refused = this.hostKeyError(verdict);
          return verdict.ok;
        },
      });
    });
    // Later failures (the connection dropping) surface through the operation that meets them.
    client.on('error', () => undefined);
    try {
      const sftp = await call<SFTPWrapper>((cb) => client.sftp(cb));
      return { client, sftp };
    } catch (err) {
      client.end();
      throw this.fail(err, 'cannot start the SFTP subsystem');
    }
  }

  async check(): Promise<void> {
    const { sftp } = await this.connection();
    const attrs = await call<{ isDirectory(): boolean }>((cb) =>
      sftp.stat(this.options.path, cb),
    ).catch((err) => {
      throw this.fail(err, 'cannot open the directory');
    });
    if (!attrs.isDirectory())
      throw new UnavailableError(`${this.where}: ${this.options.path} is not a directory`);
  }

  private async names(): Promise<string[]> {
    const { sftp } = await this.connection();
    try {
      const entries = await call<{ filename: string }[]>((cb) =>
        sftp.readdir(this.options.path, cb),
      );
      return entries.map((e) => e.filename).filter((n) => n !== '.' && n !== '..');
    } catch (err) {
      if (sftpCode(err) === SFTP_NO_SUCH_FILE) return [];
      throw this.fail(err, 'cannot list');
    }
  }

  async listManifests(after = '0'): Promise<StoreManifest[]> {
    return manifestsIn(await this.names(), after);
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.names()).filter((n) => n.startsWith(prefix) && !isTemporaryName(n)).sort();
  }

  async read(file: string): Promise<Readable> {
    const { sftp } = await this.connection();
    const handle = await call<Buffer>((cb) => sftp.open(this.pathOf(file), 'r', cb)).catch(
      (err) => {
        throw sftpCode(err) === SFTP_NO_SUCH_FILE
          ? missingFile(file, this.where, err)
          : this.fail(err, `cannot read ${file}`);
      },
    );
    const stream = sftp.createReadStream(this.pathOf(file), {
      handle,
      autoClose: true,
      highWaterMark: 256 * 1024,
    } as Parameters<SFTPWrapper['createReadStream']>[1]);
    return typedErrors(stream, (err) => this.fail(err, `cannot read ${file}`));
  }

  async stat(file: string): Promise<{ bytes: number } | null> {
    const { sftp } = await this.connection();
    try {
      const attrs = await call<{ size: number }>((cb) => sftp.stat(this.pathOf(file), cb));
      return { bytes: attrs.size };
    } catch (err) {
      if (sftpCode(err) === SFTP_NO_SUCH_FILE) return null;
      throw this.fail(err, `cannot stat ${file}`);
    }
  }

  private temporaryName(file: string): string {
    return `.${file}${TMP_MARKER}${process.pid}-${randomBytes(4).toString('hex')}`;
  }

  /** Writes `source` to a new file `path`, several requests in flight, then fsyncs it. */
  private async writeNew(path: string, source: AsyncIterable<unknown>): Promise<void> {
    const { sftp } = await this.connection();
    const handle = await call<Buffer>((cb) => sftp.open(path, 'wx', 0o644, cb));
    try {
      let position = 0;
      let failed: unknown;
      const inFlight = new Set<Promise<void>>();
      for await (const chunk of source) {
        const buf = chunk as Buffer;
        for (let at = 0; at < buf.length; at += WRITE_CHUNK) {
          const piece = buf.subarray(at, at + WRITE_CHUNK);
          const request: Promise<void> = call<void>((cb) =>
            sftp.write(handle, piece, 0, piece.length, position, (err) => cb(err, undefined)),
          ).then(
            () => void inFlight.delete(request),
            (err) => {
              failed ??= err;
              inFlight.delete(request);
            },
          );
          inFlight.add(request);
          position += piece.length;
          if (inFlight.size >= WRITE_WINDOW) await Promise.race(inFlight);
          if (failed) throw failed;
        }
      }
      await Promise.all(inFlight);
      if (failed) throw failed;
      if (this.serverOffers(sftp, 'fsync@openssh.com')) {
        await call<void>((cb) => sftp.ext_openssh_fsync(handle, (err) => cb(err, undefined)));
      }
    } finally {
      await call<void>((cb) => sftp.close(handle, (err) => cb(err, undefined))).catch(
        () => undefined,
      );
    }
  }

  /** Whether the server announced an extension (ssh2 keeps the server's list privately). */
  private serverOffers(sftp: SFTPWrapper, extension: string): boolean {
    return (
      (sftp as unknown as { _extensions?: Record<string, string> })._extensions?.[extension] === '1'
    );
  }

  async publish(
    file: string,
    source: Readable | Uint8Array | string,
    options: PublishOptions = {},
  ): Promise<FileDigest> {
    const { sftp } = await this.connection();
    const tmp = this.pathOf(this.temporaryName(file));
    const digest = await digestStream(file, `publishing at ${this.where}`, options.expect);
    try {
      await pipeline(toReadable(source), digest, (hashed: AsyncIterable<unknown>) =>
        this.writeNew(tmp, hashed),
      );
      if (await this.stat(file)) {
        await this.unlink(tmp);
        return await acceptExisting(this, file, digest.digest());
      }
      if (this.serverOffers(sftp, 'posix-rename@openssh.com')) {
        await call<void>((cb) =>
          sftp.ext_openssh_rename(tmp, this.pathOf(file), (err) => cb(err, undefined)),
        );
      } else {
        await call<void>((cb) => sftp.rename(tmp, this.pathOf(file), (err) => cb(err, undefined)));
      }
    } catch (err) {
      await this.unlink(tmp).catch(() => undefined);
      throw this.fail(err, `cannot publish ${file}`);
    }
    return digest.digest();
  }

  async replace(file: string, data: Uint8Array | string): Promise<void> {
    const { sftp } = await this.connection();
    for (const name of temporariesOf(await this.names(), file))
      await this.unlink(this.pathOf(name));
    const tmp = this.pathOf(this.temporaryName(file));
    try {
      await this.writeNew(tmp, toReadable(data));
      if (this.serverOffers(sftp, 'posix-rename@openssh.com')) {
        await call<void>((cb) =>
          sftp.ext_openssh_rename(tmp, this.pathOf(file), (err) => cb(err, undefined)),
        );
      } else {
        // Plain SFTP rename refuses an existing target: not atomic, but the best a server
        // without posix-rename allows for a file that is rewritten.
        await this.unlink(this.pathOf(file));
        await call<void>((cb) => sftp.rename(tmp, this.pathOf(file), (err) => cb(err, undefined)));
      }
    } catch (err) {
      await this.unlink(tmp).catch(() => undefined);
      throw this.fail(err, `cannot write ${file}`);
    }
  }

  private async unlink(path: string): Promise<void> {
    const { sftp } = await this.connection();
    await call<void>((cb) => sftp.unlink(path, (err) => cb(err, undefined))).catch((err) => {
      if (sftpCode(err) !== SFTP_NO_SUCH_FILE) throw err;
    });
  }

  async remove(file: string): Promise<void> {
    await this.unlink(this.pathOf(file)).catch((err) => {
      throw this.fail(err, `cannot remove ${file}`);
    });
  }

  async leftovers(after = '0'): Promise<Leftover[]> {
    return leftoversAmong(await this.names(), after);
  }

  async removeLeftover(leftover: Leftover): Promise<void> {
    await this.remove(leftover.ref);
  }

  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    if (!session) return;
    const connected = await session.catch(() => undefined);
    connected?.client.end();
  }
}
