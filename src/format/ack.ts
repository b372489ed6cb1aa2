/**
 * Acknowledgements: what a replica has applied, published by load as `<job>.<replica>.ack.json`
 * next to the deltas in the store it reads from, so that the source side (copy, status, prune)
 * learns it without the replica host opening a port. A small JSON file, replaced on each run.
 * The format is specified in docs/format.md; change both together.
 */
import { z } from 'zod';
import { DeltaError } from '../errors.js';
import { isLogId } from './logid.js';

export const ACK_FORMAT_NAME = 'deltasync-ack';
export const ACK_FORMAT_VERSION = 1;
export const ACK_SUFFIX = '.ack.json';

const NAME = /^[A-Za-z0-9_-]+$/;

const ackSchema = z
  .object({
    format: z.literal(ACK_FORMAT_NAME),
    formatVersion: z.number().int().positive(),
    job: z.string().regex(NAME),
    replica: z.string().regex(NAME),
    /** The toLogId of the last delta the replica committed. */
    logId: z.string().refine(isLogId, 'must be a decimal logId string'),
    /** When load published this acknowledgement (ISO 8601, UTC). */
    time: z.iso.datetime(),
  })
  .loose();

export type Acknowledgement = z.infer<typeof ackSchema>;

/** `<job>.<replica>.ack.json`; both names are letters, digits, `_` and `-`. */
export function ackFileName(job: string, replica: string): string {
  return `${job}.${replica}${ACK_SUFFIX}`;
}

/** The replica an acknowledgement file of `job` is from, or null for any other name. */
export function replicaOfAckFile(job: string, name: string): string | null {
  if (!name.startsWith(`${job}.`) || !name.endsWith(ACK_SUFFIX)) return null;
  const replica = name.slice(job.length + 1, -ACK_SUFFIX.length);
  return NAME.test(replica) ? replica : null;
}

export function makeAck(
  job: string,
  replica: string,
  logId: string,
  time = new Date(),
): Acknowledgement {
  return {
    format: ACK_FORMAT_NAME,
    formatVersion: ACK_FORMAT_VERSION,
    job,
    replica,
    logId,
    time: time.toISOString(),
  };
}

export function serializeAck(ack: Acknowledgement): string {
  return `${JSON.stringify(ack, null, 2)}\n`;
}

/**
 * Parses and validates an acknowledgement's text; its name must match its content, so that a
 * file copied under another replica's name is not believed.
 */
export function parseAck(text: string, fileName: string): Acknowledgement {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new DeltaError(`${fileName}: acknowledgement is not valid JSON`, { file: fileName });
  }
  const version = (raw as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version === 'number' && version > ACK_FORMAT_VERSION) {
    throw new DeltaError(
      `${fileName}: acknowledgement format version ${version} is newer than this deltasync understands (${ACK_FORMAT_VERSION})`,
      { file: fileName, hint: 'upgrade deltasync on this host' },
    );
  }
  const parsed = ackSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    throw new DeltaError(`${fileName}: invalid acknowledgement: ${first}`, { file: fileName });
  }
  const ack = parsed.data;
  if (ackFileName(ack.job, ack.replica) !== fileName) {
    throw new DeltaError(
      `${fileName}: acknowledgement says job '${ack.job}', replica '${ack.replica}', which is not its file name`,
      { file: fileName },
    );
  }
  return ack;
}
