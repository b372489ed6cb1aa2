/**
 * Gap tracking for the MariaDB/MySQL change log (SymmetricDS-style): what makes `changelog` mode
 * exact on an engine that has no exportable snapshots. Pure functions; the SQL that feeds them is
 * in `sql.ts`, the reads in `source.ts`, and `test/unit/mysql-gaps.test.ts` pins them.
 *
 * Extract reads inside one snapshot S (`START TRANSACTION WITH CONSISTENT SNAPSHOT`). The
 * change-log ids visible in S are "seen". An id below the highest seen that S does not show is a
 * **gap**: its transaction was still running when S was taken, or it rolled back
 * (AUTO_INCREMENT never hands an id out twice). The cursor keeps the highest id seen and the open
 * gaps; the next extract reads the open gaps again along with the new ids, so a transaction that
 * commits late lands in the first delta whose snapshot sees it, whatever id it took and however
 * long it ran. Nothing waits.
 *
 * A gap is given up only when its transaction can no longer commit:
 *   - When a gap is first seen, extract lists the read-write transactions running just after S
 *     was taken (`information_schema.INNODB_TRX`, read so that the cache is fresh: see
 *     `high-water.ts`): the gap's **watchers**. The change-log trigger runs after its row was
 *     written, so the gap's transaction was read-write before it took the id; it is a watcher,
 *     or it had already ended when the list was read.
 *   - Each later extract keeps only the watchers still listed. Once none is left, every one of
 *     them (the gap's own transaction included) had ended before that list was read, hence before
 *     the *next* extract's snapshot: if that snapshot still does not show the id, the transaction
 *     rolled back, and the gap closes. (Closing one run later than the list shows them gone is
 *     what makes it exact: a watcher may commit between a snapshot and the list read after it.)
 *   - Without the PROCESS privilege there is no list: gaps stay open (`watch: null`) and are read
 *     again every run, so nothing is ever lost, but gaps left by rolled-back transactions are
 *     only dropped beyond MAX_OPEN_GAPS, oldest first, with a warning.
 *
 * A cursor is written as `mysql:120` when no gap is open, otherwise as
 * `mysql:120;101,105-107@4411.4412` (see parseGapCursor). A plain log_id (the form cursors had
 * before gap tracking) is still read: ids at or below it were shipped by the old waiting mark.
 */
import { ConfigError } from '../../errors.js';

/** An inclusive range of log_ids, as decimal strings. */
export type IdRange = [string, string];

/** Gaps first seen together share their watchers. */
export interface GapGroup {
  ids: IdRange[];
  /**
   * Transactions (InnoDB trx_id) that may still commit one of these ids. Empty: all of them had
   * ended before the last extract's list, so an id still not visible now is gone for good. null:
   * unknown (no PROCESS privilege), never closed by proof.
   */
  watch: string[] | null;
}

export interface GapCursor {
  /** The highest log_id seen (every id at or below it was shipped or is a gap). */
  high: string;
  gaps: GapGroup[];
}

/** Beyond this many open gap ids without a way to close them, the oldest are dropped. */
export const MAX_OPEN_GAPS = 10_000;

const DECIMAL = /^\d+$/;

/** The engine's prefix of a position with gaps (the manifest wants `<engine>:<printable>`). */
const PREFIX = 'mysql:';

/**
 * Reads a cursor: a plain log_id (also the old form), or
 * `mysql:<high>;<ranges>@<watchers>;…`, where `<ranges>` is `a` or `a-b` joined by commas, and
 * `<watchers>` are trx_ids joined by dots, empty when all have ended, `?` when unknown.
 */
export function parseGapCursor(text: string): GapCursor {
  if (DECIMAL.test(text)) return { high: text, gaps: [] };
  const bad = () =>
    new ConfigError(
      `the change-log cursor '${text.slice(0, 80)}' was not written by the MariaDB/MySQL reader`,
      {
        hint: 'restore the extract state file, or set the changelog cursor to a plain log_id already shipped (at worst a harmless re-ship)',
      },
    );
  if (!text.startsWith(PREFIX)) throw bad();
  const [high, ...groups] = text.slice(PREFIX.length).split(';');
  if (high === undefined || !DECIMAL.test(high)) throw bad();
  const gaps = groups.map((g): GapGroup => {
    const m = /^([\d,-]+)@(\?|[\d.]*)$/.exec(g);
    if (!m) throw bad();
    const ids = m[1]!.split(',').map((r): IdRange => {
      const [a, b = a] = r.split('-');
      if (!a || !DECIMAL.test(a) || !DECIMAL.test(b!)) throw bad();
      return [a, b!];
    });
    const watch = m[2] === '?' ? null : m[2] === '' ? [] : m[2]!.split('.');
    if (watch && !watch.every((w) => DECIMAL.test(w))) throw bad();
    return { ids, watch };
  });
  return { high, gaps };
}

/**
 * Writes a cursor, always with the engine's prefix: a plain log_id is what deltasync wrote before
 * positions existed, and extract takes it to mean the tables were seeded then (see
 * src/steps/extract/modes/changelog.ts).
 */
export function formatGapCursor(cursor: GapCursor): string {
  const gaps = cursor.gaps.filter((g) => g.ids.length > 0);
  if (gaps.length === 0) return `${PREFIX}${cursor.high}`;
  const group = (g: GapGroup) =>
    `${g.ids.map(([a, b]) => (a === b ? a : `${a}-${b}`)).join(',')}@${g.watch === null ? '?' : g.watch.join('.')}`;
  return `${PREFIX}${cursor.high};${gaps.map(group).join(';')}`;
}

/** How many ids the ranges hold. */
export function countIds(ranges: IdRange[]): bigint {
  return ranges.reduce((n, [a, b]) => n + BigInt(b) - BigInt(a) + 1n, 0n);
}

/** The ranges without the given ids (which need not be in them). */
export function withoutIds(ranges: IdRange[], ids: Iterable<string>): IdRange[] {
  const drop = [...new Set(ids)].map(BigInt).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const out: IdRange[] = [];
  for (const [from, to] of ranges) {
    let a = BigInt(from);
    const b = BigInt(to);
    for (const d of drop) {
      if (d < a || d > b) continue;
      if (d > a) out.push([a.toString(), (d - 1n).toString()]);
      a = d + 1n;
    }
    if (a <= b) out.push([a.toString(), b.toString()]);
  }
  return out;
}

/** Every open gap id range of the cursor, for the SQL that reads them again. */
export function openRanges(cursor: GapCursor): IdRange[] {
  return cursor.gaps.flatMap((g) => g.ids);
}

/** What one extract saw inside its snapshot. */
export interface GapObservation {
  /** The highest log_id this delta ships up to (the visible maximum, or less under a row limit). */
  high: string;
  /** The ids in (previous high, high] that the snapshot does not show. */
  holes: IdRange[];
  /** Open gap ids the snapshot shows now: they ship in this delta. */
  filled: string[];
  /**
   * Read-write transactions listed just after the snapshot was taken (InnoDB trx_ids), or null
   * when they cannot be read (no PROCESS privilege).
   */
  running: Set<string> | null;
}

export interface GapAdvance {
  cursor: GapCursor;
  /** Gap ranges given up: their transactions rolled back. */
  closed: IdRange[];
  /** Open gap ranges dropped without proof (no PROCESS privilege, more than MAX_OPEN_GAPS). */
  dropped: IdRange[];
}

/** The cursor after a delta: see the module comment for when a gap closes. */
export function advanceGaps(previous: GapCursor, seen: GapObservation): GapAdvance {
  const closed: IdRange[] = [];
  const gaps: GapGroup[] = [];
  for (const group of previous.gaps) {
    const ids = withoutIds(group.ids, seen.filled);
    if (ids.length === 0) continue;
    if (group.watch !== null && group.watch.length === 0) {
      // Every watcher had ended before this snapshot, which still does not show these ids.
      closed.push(...ids);
      continue;
    }
    // A gap without watchers (PROCESS was missing) gets the list read now, like a new gap: its
    // transaction is running now or had ended before this list was read.
    const watch =
      seen.running === null
        ? group.watch
        : group.watch === null
          ? [...seen.running].sort(compareDecimal)
          : group.watch.filter((w) => seen.running!.has(w));
    gaps.push({ ids, watch });
  }
  if (seen.holes.length > 0) {
    gaps.push({
      ids: seen.holes,
      watch: seen.running === null ? null : [...seen.running].sort(compareDecimal),
    });
  }
  const dropped = capOpenGaps(gaps);
  const high = compareDecimal(seen.high, previous.high) > 0 ? seen.high : previous.high;
  return { cursor: { high, gaps: merge(gaps) }, closed, dropped };
}

/** Drops the oldest unprovable gap ids beyond MAX_OPEN_GAPS (in place); returns them. */
function capOpenGaps(gaps: GapGroup[]): IdRange[] {
  const dropped: IdRange[] = [];
  let open = gaps.filter((g) => g.watch === null).reduce((n, g) => n + countIds(g.ids), 0n);
  for (const group of gaps) {
    while (open > BigInt(MAX_OPEN_GAPS) && group.watch === null && group.ids.length > 0) {
      const [from, to] = group.ids[0]!;
      const excess = open - BigInt(MAX_OPEN_GAPS);
      const size = BigInt(to) - BigInt(from) + 1n;
      if (size <= excess) {
        dropped.push(group.ids.shift()!);
        open -= size;
      } else {
        const cut = BigInt(from) + excess - 1n;
        dropped.push([from, cut.toString()]);
        group.ids[0] = [(cut + 1n).toString(), to];
        open -= excess;
      }
    }
  }
  return dropped;
}

/** Groups with the same watchers become one; empty groups go. */
function merge(gaps: GapGroup[]): GapGroup[] {
  const byWatch = new Map<string, GapGroup>();
  for (const g of gaps) {
    if (g.ids.length === 0) continue;
    const k = JSON.stringify(g.watch);
    const found = byWatch.get(k);
    if (found) found.ids = [...found.ids, ...g.ids].sort((a, b) => compareDecimal(a[0], b[0]));
    else byWatch.set(k, { ids: g.ids, watch: g.watch });
  }
  return [...byWatch.values()];
}

/** Whether the observation needs the list of running transactions (some gap is or will be open). */
export function needsRunning(previous: GapCursor, holes: IdRange[], filled: string[]): boolean {
  if (holes.length > 0) return true;
  return previous.gaps.some(
    (g) => (g.watch === null || g.watch.length > 0) && withoutIds(g.ids, filled).length > 0,
  );
}

/** Orders decimal strings by value. */
export function compareDecimal(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
