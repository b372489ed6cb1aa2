/**
 * The retention rules as pure functions: given one location's deltas, the positions of the
 * readers that read there, and the minimums, decide which deltas go and why each of the rest
 * stays. No I/O here, so that every rule is unit-tested without a store (test/unit/prune-plan).
 *
 * The rule (GUIDE.md, "Retention"): delete only what every reader has moved past; always keep
 * the newest `keepDeltas` and anything younger than `keepHours`; a reader that has applied
 * nothing yet needs the newest fullBase delta and everything after it (it starts there), or
 * everything when there is no base. Deltas go oldest first and only as a prefix, so what is left
 * is always one unbroken chain.
 */
import { compareLogIds } from '../../format/logid.js';

/** A delta of the location, as its manifest describes it. */
export interface PlanDelta {
  logId: string;
  /** The manifest's fromLogId: a reader standing there needs this delta next. */
  fromLogId: string;
  manifest: string;
  createdAt: string;
  /** Its part files (the manifest not included). */
  parts: string[];
  /** Bytes of the parts and the manifest. */
  bytes: number;
  fullBase: boolean;
  /** The manifest could not be read: nothing is known of its parts, so it and what follows stay. */
  unreadable?: boolean;
}

/**
 * One reader of the location and where it stands. `destination`: copy publishing to a
 * destination (its state file); `replica`: a replica's acknowledgement; `load`: load's own
 * applied record on this host.
 */
export interface ReaderPosition {
  kind: 'destination' | 'replica' | 'load';
  name: string;
  /** The last logId it has: published (copy) or applied (a replica). '0' for nothing yet. */
  logId: string;
  /** When it got there (state updatedAt, acknowledgement time), for the reason shown. */
  since: string | null;
}

export interface RetentionRules {
  keepDeltas: number;
  /** 0: no age minimum. */
  keepHours: number;
}

export type HoldReason =
  | { kind: 'reader'; reader: ReaderPosition }
  | { kind: 'no-readers' }
  | { kind: 'keepDeltas'; keepDeltas: number }
  | { kind: 'keepHours'; keepHours: number }
  | { kind: 'unreadable'; manifest: string }
  | { kind: 'after-held' };

/** A run of held deltas that stay for the same reason. */
export interface Holding {
  reason: HoldReason;
  deltas: number;
  bytes: number;
  fromLogId: string;
  toLogId: string;
}

export interface PrunePlan {
  /** Deltas to remove, oldest first. */
  remove: PlanDelta[];
  /** Why the rest stays, grouped by reason, in logId order of their first delta. */
  held: Holding[];
  /**
   * The highest logId every reader has passed ('0' when none has): parts of deltas at or below
   * it whose manifest is gone were left by a killed prune and may be removed.
   */
  floor: string;
}

/** The newest fullBase delta's logId, or null. */
export function newestBase(deltas: PlanDelta[]): PlanDelta | null {
  let base: PlanDelta | null = null;
  for (const d of deltas)
    if (d.fullBase && (!base || compareLogIds(d.logId, base.logId) > 0)) base = d;
  return base;
}

/**
 * The reader that still needs `delta`, the one furthest behind, or null. A reader at '0' needs
 * the newest base and what follows (or everything, without a base).
 */
export function readerNeeding(
  delta: PlanDelta,
  readers: ReaderPosition[],
  base: PlanDelta | null,
): ReaderPosition | null {
  let needing: ReaderPosition | null = null;
  for (const r of readers) {
    const needs =
      r.logId === '0' && base
        ? compareLogIds(delta.logId, base.logId) >= 0
        : compareLogIds(delta.logId, r.logId) > 0;
    if (needs && (!needing || compareLogIds(r.logId, needing.logId) < 0)) needing = r;
  }
  return needing;
}

/** The position every reader has passed: the lowest, where a reader at '0' stands just before the base. */
export function readersFloor(readers: ReaderPosition[], base: PlanDelta | null): string {
  if (readers.length === 0) return '0';
  let floor: string | null = null;
  for (const r of readers) {
    const at = r.logId === '0' && base ? base.fromLogId : r.logId;
    if (floor === null || compareLogIds(at, floor) < 0) floor = at;
  }
  return floor!;
}

function sameReason(a: HoldReason, b: HoldReason): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'reader' && b.kind === 'reader')
    return a.reader.kind === b.reader.kind && a.reader.name === b.reader.name;
  return true;
}

/** Why `delta` (the i-th of n, oldest first) must stay, or null when it may go. */
function holdReason(
  delta: PlanDelta,
  index: number,
  count: number,
  readers: ReaderPosition[],
  base: PlanDelta | null,
  rules: RetentionRules,
  now: Date,
): HoldReason | null {
  if (delta.unreadable) return { kind: 'unreadable', manifest: delta.manifest };
  if (readers.length === 0) return { kind: 'no-readers' };
  const reader = readerNeeding(delta, readers, base);
  if (reader) return { kind: 'reader', reader };
  if (index >= count - rules.keepDeltas)
    return { kind: 'keepDeltas', keepDeltas: rules.keepDeltas };
  if (rules.keepHours > 0) {
    const created = Date.parse(delta.createdAt);
    // A createdAt that does not parse cannot prove the delta old enough.
    if (!Number.isFinite(created) || now.getTime() - created < rules.keepHours * 3_600_000)
      return { kind: 'keepHours', keepHours: rules.keepHours };
  }
  return null;
}

/**
 * Decides what goes. `deltas` may come in any order; `readers` are every reader of the location
 * (none known: nothing goes).
 */
export function planPrune(
  deltas: PlanDelta[],
  readers: ReaderPosition[],
  rules: RetentionRules,
  now: Date,
): PrunePlan {
  const sorted = [...deltas].sort((a, b) => compareLogIds(a.logId, b.logId));
  const base = newestBase(sorted);
  const remove: PlanDelta[] = [];
  const held: Holding[] = [];
  let holding = false;
  for (const [i, delta] of sorted.entries()) {
    let reason = holdReason(delta, i, sorted.length, readers, base, rules, now);
    // Only a prefix goes; a later delta that could go on its own stays behind an earlier one.
    if (!reason && holding) reason = { kind: 'after-held' };
    if (!reason) {
      remove.push(delta);
      continue;
    }
    holding = true;
    const last = held.at(-1);
    if (last && sameReason(last.reason, reason)) {
      last.deltas += 1;
      last.bytes += delta.bytes;
      last.toLogId = delta.logId;
    } else {
      held.push({
        reason,
        deltas: 1,
        bytes: delta.bytes,
        fromLogId: delta.logId,
        toLogId: delta.logId,
      });
    }
  }
  return { remove, held, floor: readersFloor(readers, base) };
}

/** "2 days ago", "5 hours ago", "3 minutes ago", "just now". */
export function ago(since: string | null, now: Date): string | null {
  if (!since) return null;
  const ms = now.getTime() - Date.parse(since);
  if (!Number.isFinite(ms)) return null;
  const units: [number, string][] = [
    [86_400_000, 'day'],
    [3_600_000, 'hour'],
    [60_000, 'minute'],
  ];
  for (const [size, unit] of units) {
    const n = Math.floor(ms / size);
    if (n >= 1) return `${n} ${unit}${n === 1 ? '' : 's'} ago`;
  }
  return 'just now';
}

function readerPhrase(r: ReaderPosition, now: Date): string {
  const when = ago(r.since, now);
  const at = when ? `logId ${r.logId}, ${when}` : `logId ${r.logId}`;
  switch (r.kind) {
    case 'destination':
      return r.logId === '0'
        ? `destination '${r.name}', where copy has published nothing yet`
        : `destination '${r.name}', where copy has published nothing since ${at}`;
    case 'replica':
    case 'load':
      return r.logId === '0'
        ? `replica '${r.name}', which has applied nothing yet`
        : `replica '${r.name}', which has applied nothing since ${at}`;
  }
}

/** One line a human reads in `prune --dry-run` and `status`. */
export function describeHolding(h: Holding, now: Date): string {
  const what = `holding ${h.deltas} delta${h.deltas === 1 ? '' : 's'} (${h.bytes} bytes)`;
  const r = h.reason;
  switch (r.kind) {
    case 'reader':
      return `${what} for ${readerPhrase(r.reader, now)}`;
    case 'no-readers':
      return `${what}: no reader has reported a position here (no acknowledgement yet)`;
    case 'keepDeltas':
      return `${what}: the newest ${r.keepDeltas} are always kept (retention.keepDeltas)`;
    case 'keepHours':
      return `${what}: younger than ${r.keepHours} hours (retention.keepHours)`;
    case 'unreadable':
      return `${what}: ${r.manifest} cannot be read, so it and what follows stay`;
    case 'after-held':
      return `${what}: they follow deltas that stay (deltas go oldest first)`;
  }
}
