/**
 * The stable high-water mark on MySQL/MariaDB: the highest logId that no transaction still
 * running can commit a row at or below.
 *
 *   1. high := the largest logId over the tables, read in autocommit (a fresh read view).
 *   2. The read-write transactions running now, from information_schema.INNODB_TRX. A
 *      transaction that took a logId <= high took it before (1) finished, so it is among them or
 *      already over.
 *   3. Poll until none of them is listed any more (or give up after maxWaitSeconds: null).
 *      Not when no table shows a logId above its cursor: nothing is to be shipped (caughtUp).
 *
 * Two properties of INNODB_TRX shape this:
 *   - It is a cache that InnoDB refills only when nobody read it for 100 ms
 *     (CACHE_MIN_IDLE_TIME_NS in storage/innobase/trx/trx0i_s.cc), so a read right after another
 *     one can be older than (1). Before (2) we open a transaction of our own (the "witness") and
 *     tag each read with a token in a comment: a cache that lists the witness running the tagged
 *     read was filled by that read, after (1). (The witness alone would not do: a cache filled
 *     during the previous call lists this connection too.) And we poll slower than the cache's
 *     idle time, or it would never be refilled.
 *   - Only read-write transactions have a real trx_id (below 2^48); MariaDB shows the others as
 *     0, MySQL with a made-up id above 2^48. Waiting for those would wait on every idle
 *     connection that merely read something, and they have taken no logId.
 *
 * A change-log trigger runs after its row was written, so its transaction is read-write before
 * it takes a log_id: exact. For a logid column filled by AUTO_INCREMENT, InnoDB hands out the
 * value a few microseconds before the row write makes the transaction read-write; a transaction
 * paused exactly there while another inserts and commits a higher value would be missed.
 * `capture.settleLagSeconds` covers that window (and the case below).
 *
 * Reading INNODB_TRX needs the PROCESS privilege. Without it the mark is the plain maximum and
 * a warning says so once.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { caughtUp } from '../high-water.js';
import type { HighWaterRequest } from '../types.js';
import { run, type Session } from './connection.js';
import { maxAcrossSql } from './sql.js';

/** Slower than the cache's 100 ms idle time, so that each poll can see a refilled cache. */
const POLL_MS = 120;

/** The largest real InnoDB transaction id (ids are 48-bit). */
const MAX_TRX_ID = '281474976710655';

/**
 * Every read-write transaction, and our own (the witness) with the statement it runs. `token`
 * marks the statement, so that a cache filled by it can be told from an older one. `holder`
 * describes the others for the log (thread, start, statement).
 */
export function runningWritersSql(token: string): string {
  return (
    `SELECT /* deltasync ${token} */ trx_id AS id, trx_mysql_thread_id = CONNECTION_ID() AS mine,` +
    ' IF(trx_mysql_thread_id = CONNECTION_ID(), trx_query, NULL) AS query,' +
    " CONCAT('thread ', trx_mysql_thread_id, ' (transaction ', trx_id, ', started ', trx_started," +
    " IFNULL(CONCAT(', running: ', LEFT(trx_query, 80)), ', idle'), ')') AS holder" +
    ' FROM information_schema.INNODB_TRX' +
    ` WHERE trx_mysql_thread_id = CONNECTION_ID() OR (trx_id BETWEEN 1 AND ${MAX_TRX_ID} AND trx_is_read_only = 0)`
  );
}

/** ER_SPECIFIC_ACCESS_DENIED_ERROR: INNODB_TRX without the PROCESS privilege. */
const ER_SPECIFIC_ACCESS_DENIED = 1227;

export interface HighWaterState {
  /** Set once INNODB_TRX was refused; later calls go straight to the plain maximum. */
  trxViewDenied: boolean;
  warn(message: string): void;
}

/** The mark, or null with the transactions that held it back (for the log). */
export interface HighWaterResult {
  high: string | null;
  heldBy?: string;
}

/** See the module comment. Must be called outside any transaction. */
export async function stableHighWater(
  session: Session,
  request: HighWaterRequest,
  state: HighWaterState,
): Promise<HighWaterResult> {
  const deadline = Date.now() + request.maxWaitSeconds * 1000;
  const [row] = await run<{ m: unknown }[]>(
    session,
    maxAcrossSql(request.tables),
    undefined,
    request.tables.map((t) => t.table).join(', '),
  );
  const high = row?.m === null || row?.m === undefined ? null : String(row.m);
  if (high === null || state.trxViewDenied || caughtUp(request.tables, high)) return { high };

  await run(session, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY');
  const token = `witness ${randomBytes(8).toString('hex')}`;
  try {
    let watched: Map<string, string> | null = null;
    let last = new Map<string, string>();
    for (;;) {
      const listed = await runningWriters(session, state, token);
      if (listed === 'denied') return { high };
      last = listed.ids;
      if (watched === null) {
        // Until the witness shows running this very read, the cache may predate (1).
        if (listed.witnessed) watched = new Map(listed.ids);
      } else {
        for (const id of watched.keys()) if (!listed.ids.has(id)) watched.delete(id);
      }
      if (watched !== null && watched.size === 0) return { high };
      if (Date.now() + POLL_MS > deadline) {
        const holders = [...(watched ?? last).values()];
        return {
          high: null,
          heldBy:
            holders.length > 0
              ? holders.join('; ')
              : 'INNODB_TRX was never refreshed for this reader (another session reads it more often than every 100 ms)',
        };
      }
      await sleep(POLL_MS);
    }
  } finally {
    if (!session.lostWith) await run(session, 'COMMIT').catch(() => undefined);
  }
}

/**
 * The read-write transactions running now, from a cache filled after this call started, or null
 * without the PROCESS privilege (or when the cache was not refilled within maxWaitSeconds). Must
 * run inside a transaction of our own (it is the witness): gap tracking calls it inside the
 * delta's snapshot, so every transaction listed was running after the snapshot was taken.
 */
export async function freshRunningWriters(
  session: Session,
  state: HighWaterState,
  maxWaitSeconds: number,
): Promise<Set<string> | null> {
  if (state.trxViewDenied) return null;
  const deadline = Date.now() + maxWaitSeconds * 1000;
  const token = `witness ${randomBytes(8).toString('hex')}`;
  for (;;) {
    const listed = await runningWriters(session, state, token);
    if (listed === 'denied') return null;
    if (listed.witnessed) return new Set(listed.ids.keys());
    if (Date.now() + POLL_MS > deadline) return null;
    await sleep(POLL_MS);
  }
}

async function runningWriters(
  session: Session,
  state: HighWaterState,
  token: string,
): Promise<{ witnessed: boolean; ids: Map<string, string> } | 'denied'> {
  let rows: { id: unknown; mine: unknown; query: string | null; holder: string | null }[];
  try {
    rows = await run(session, runningWritersSql(token));
  } catch (err) {
    const cause = (err as { cause?: { errno?: number } }).cause ?? err;
    if ((cause as { errno?: number }).errno !== ER_SPECIFIC_ACCESS_DENIED) throw err;
    state.trxViewDenied = true;
    state.warn(
      `MariaDB/MySQL ${session.where}: cannot read information_schema.INNODB_TRX (the PROCESS privilege is missing): ` +
        'in logid mode the high-water mark is the plain maximum logId and only capture.settleLagSeconds protects ' +
        'rows whose transactions commit late; in changelog mode gaps left by rolled-back transactions stay open; ' +
        'GRANT PROCESS ON *.* to the extract user',
    );
    return 'denied';
  }
  const ids = new Map<string, string>();
  let witnessed = false;
  for (const r of rows) {
    if (Number(r.mine) !== 1) ids.set(String(r.id), r.holder ?? `transaction ${String(r.id)}`);
    else if (r.query?.includes(token)) witnessed = true;
  }
  return { witnessed, ids };
}
