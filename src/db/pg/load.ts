/**
 * Getting wire rows into one PostgreSQL table, inside the caller's transaction.
 *
 * Rows are COPY text in batches of a few MB. For a table with many rows in the delta, where a
 * second session and CREATE on the table's schema are to be had, that session stages each
 * batch in a committed UNLOGGED table while this one moves the previous batch from its stage
 * into the table (loadShared): the server parses rows and writes the table side by side.
 * Otherwise this session does both, and the next batch is read while the server takes the
 * previous one. At most two batches are in memory. A batch lands one of three ways, the
 * cheapest the table allows:
 *
 * - staged (the general case): `COPY` into a temporary table holding just the delta's columns
 *   in the delta's own types (not the target's: COPY would round 0.9949 into numeric(10,2)
 *   quietly; only a column whose values came out of exactly the target's type is staged in it,
 *   see stageColumn), one set-based check that every value of a column the target could round,
 *   truncate or refuse comes back unchanged from the target's type (see StageColumn), then one
 *   `INSERT … SELECT … ON CONFLICT (key) DO UPDATE … WHERE … IS DISTINCT FROM …`. Only the
 *   delta's columns are named, so other columns (the users' own) are never written, and
 *   unchanged rows are not rewritten (no dead tuples). When a statement fails on a value or a
 *   constraint, a slower search names the first offending row (DeltaError, exit 65).
 * - direct, while the table was empty when the load began: `COPY` straight into it (or, from a
 *   shared stage, a plain INSERT … SELECT), under a savepoint. On an initial load this halves
 *   the server's work (1M rows × 10 columns: ~2.5 s against ~1.8 s staging + ~3 s upsert).
 * - replacing, when the table may hold the batch's keys but nothing could tell a delete and an
 *   insert from an update (copyPaths: every column is the delta's, no trigger would fire, no
 *   foreign key points at it unless relaxed): one DELETE removes the rows of the batch's keys
 *   (from a shared stage, or COPYed into a small stage of their own), and the batch goes in by
 *   INSERT … SELECT or COPY, under a savepoint (1M rows that all exist, one session: ~5.7 s
 *   against ~8.5 s for stage and upsert).
 *
 * On the direct and replacing ways, a repeated key or a refused value rolls the batch back to
 * the savepoint and it goes the staged way, as do all later batches. Where a column needs
 * checking, a second connection stages and checks the batch meanwhile (copyChecked); without
 * one, the batch is staged and checked, and an empty table then takes it by a plain INSERT …
 * SELECT instead of the upsert.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { ConfigError, DeltaError } from '../../errors.js';
import { misfitError } from '../misfit.js';
import type { WireRow } from '../types.js';
import type { TableRef } from './catalog.js';
import { disconnect, run, translateError, type PgConnection } from './connection.js';
import type { StageColumn } from './stage.js';
import { quoteIdent, type CopyEncoder } from './types.js';

/** The staging table's extra column numbering rows in arrival order, so the last one wins. */
export const SEQ_COLUMN = '__deltasync_seq';
/** COPY data is written in chunks of about this many characters: few writes, little memory. */
const COPY_CHUNK_CHARS = 256 * 1024;
/** A batch is about this much COPY text (8 MiB kept peak RSS under 200 MB on 1M-row loads). */
const BATCH_CHARS = 8 * 1024 * 1024;
/** The first batch of COPY text (copyTextBatches), then twice that, up to BATCH_CHARS. */
const FIRST_BATCH_BYTES = 1024 * 1024;
/** SQLSTATEs we act on. */
const CARDINALITY_VIOLATION = '21000'; // ON CONFLICT DO UPDATE met one key twice
const INVALID_COLUMN_REFERENCE = '42P10'; // no unique index matches the ON CONFLICT columns

/** COPY text for a run of rows, ready to send. */
export interface CopyBatch {
  chunks: Buffer[];
  rows: number;
  /** The batch's key fields as COPY text lines (keyLines), once worked out for copyReplacing. */
  keys?: Buffer;
}

/**
 * Wire rows -> batches of COPY text. Throws a DeltaError for a row of the wrong width; an error
 * of `rows` propagates as it is. Stops early, closing `rows`, once `stop.stopped` is set.
 */
export async function* copyBatches(
  rows: AsyncIterable<WireRow>,
  encoders: CopyEncoder[],
  table: string,
  stop: { stopped: boolean },
): AsyncGenerator<CopyBatch> {
  const width = encoders.length;
  let chunks: Buffer[] = [];
  let chunk = '';
  let size = 0;
  let seen = 0;
  let first = 0;
  for await (const row of rows) {
    if (stop.stopped) return;
    if (row.length !== width) {
      throw new DeltaError(
        `row ${seen + 1} for table '${table}' has ${row.length} values, expected ${width}`,
      );
    }
    for (let i = 0; i < width - 1; i++) chunk += encoders[i]!(row[i]!) + '\t';
    chunk += encoders[width - 1]!(row[width - 1]!) + '\n';
    seen++;
    if (chunk.length >= COPY_CHUNK_CHARS) {
      // Encoded now: a held string would be a rope of thousands of small pieces, several times
      // its size in memory.
      chunks.push(Buffer.from(chunk));
      size += chunk.length;
      chunk = '';
      // Rows already buffered upstream arrive as microtasks, which would starve the socket
      // callbacks driving the COPY and upsert of the previous batch until this one is full.
      await setImmediatePromise();
      if (size >= BATCH_CHARS) {
        yield { chunks, rows: seen - first };
        chunks = [];
        size = 0;
        first = seen;
      }
    }
  }
  if (chunk.length > 0) chunks.push(Buffer.from(chunk));
  if (chunks.length > 0) yield { chunks, rows: seen - first };
}

/**
 * Format 2: canonical COPY text (chunk boundaries anywhere) -> batches of about BATCH_CHARS
 * bytes of whole lines, with no per-row work beyond counting newlines. A batch is kept whole so
 * that a direct COPY refused half-way can go again the staged way. The first batches are
 * smaller (FIRST_BATCH_BYTES, doubling): the server starts sooner, and while it takes one batch
 * the next is read. An error of `data` (a checksum or row count that did not match) propagates
 * as it is.
 */
export async function* copyTextBatches(
  data: AsyncIterable<Buffer>,
  stop: { stopped: boolean },
  batchBytes = BATCH_CHARS,
): AsyncGenerator<CopyBatch> {
  let chunks: Buffer[] = [];
  let size = 0;
  let rows = 0;
  let limit = Math.min(FIRST_BATCH_BYTES, batchBytes);
  for await (const chunk of data) {
    if (stop.stopped) return;
    rows += countLines(chunk);
    chunks.push(chunk);
    size += chunk.length;
    if (size < limit) continue;
    // The batch ends after the last whole line; the rest starts the next one.
    const end = chunk.lastIndexOf(NEWLINE) + 1;
    if (end === 0) continue; // a line longer than the chunk: wait for its end
    const rest = chunk.subarray(end);
    chunks[chunks.length - 1] = chunk.subarray(0, end);
    yield { chunks, rows };
    chunks = rest.length > 0 ? [rest] : [];
    size = rest.length;
    rows = 0;
    limit = Math.min(limit * 2, batchBytes);
  }
  if (size > 0) {
    if (chunks[chunks.length - 1]![chunks[chunks.length - 1]!.length - 1] !== NEWLINE) {
      throw new DeltaError('the rows of a part end in the middle of a line');
    }
    yield { chunks, rows };
  }
}

const NEWLINE = 0x0a;
const TAB = 0x09;

/**
 * The fields at `positions` (in that order) of every line of a batch of COPY text, as COPY text
 * lines of their own: the keys of copyReplacing's DELETE. Fields are copied as they are (COPY
 * text escapes a tab inside a value as `\t`, so a raw tab only ever separates fields); a line
 * with too few fields yields empty ones, which the server then refuses like any short line.
 */
export function keyLines(data: Buffer, positions: number[]): Buffer {
  const last = Math.max(...positions);
  const starts = new Array<number>(last + 1).fill(0);
  const ends = new Array<number>(last + 1).fill(0);
  // Keys are usually a small share of a line: start small, grow as needed.
  let out = Buffer.allocUnsafe(Math.max(1024, data.length >> 3));
  let o = 0;
  for (let s = 0; s < data.length;) {
    let e = data.indexOf(NEWLINE, s);
    if (e < 0) e = data.length;
    let f = s;
    for (let i = 0; i <= last; i++) {
      let t = f <= e ? data.indexOf(TAB, f) : e;
      if (t < 0 || t > e) t = e;
      starts[i] = Math.min(f, e);
      ends[i] = t;
      f = t + 1;
    }
    let need = positions.length;
    for (const p of positions) need += ends[p]! - starts[p]!;
    if (o + need > out.length) {
      const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, o + need));
      out.copy(bigger, 0, 0, o);
      out = bigger;
    }
    for (let j = 0; j < positions.length; j++) {
      if (j > 0) out[o++] = TAB;
      o += data.copy(out, o, starts[positions[j]!]!, ends[positions[j]!]!);
    }
    out[o++] = NEWLINE;
    s = e + 1;
  }
  // A copy of its own size, so the spare room is not held while the batch waits its turn.
  return Buffer.from(out.subarray(0, o));
}

function countLines(chunk: Buffer): number {
  let n = 0;
  for (let i = chunk.indexOf(NEWLINE); i >= 0; i = chunk.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

/** What the upsert statement needs to know (pure data; exported for tests). */
export interface UpsertPlan {
  target: string;
  stage: string;
  columns: string[];
  key: string[];
  /** Columns whose type has no equality operator (json, …): compared as text. */
  compareAsText: Set<string>;
  /**
   * Columns staged in the delta's own type rather than the target's (see StageColumn), with the
   * target's type to cast them to on the way in; a checked cast cannot round.
   */
  casts?: Map<string, string>;
  /**
   * What orders the stage's rows as the delta has them (default: its SEQ_COLUMN). A shared
   * stage, written by one COPY into a new table, has no such column: its rows' ctid, the order
   * COPY wrote them in.
   */
  order?: string;
  /**
   * A written column is `GENERATED ALWAYS AS IDENTITY`: the INSERTs say OVERRIDING SYSTEM VALUE,
   * or PostgreSQL refuses the delta's values (COPY takes them as they are).
   */
  overriding?: boolean;
}

/** The stage's columns as the target takes them (see UpsertPlan.casts), for a SELECT list. */
function selectedColumns(plan: UpsertPlan): string {
  const casts = plan.casts ?? new Map<string, string>();
  return plan.columns
    .map((c) => {
      const to = casts.get(c);
      return to ? `CAST(${quoteIdent(c)} AS ${to}) AS ${quoteIdent(c)}` : quoteIdent(c);
    })
    .join(', ');
}

/** What an INSERT into the plan's target says before its SELECT (see UpsertPlan.overriding). */
function insertInto(plan: UpsertPlan, alias = ''): string {
  const columns = plan.columns.map(quoteIdent).join(', ');
  const overriding = plan.overriding ? ' OVERRIDING SYSTEM VALUE' : '';
  return `INSERT INTO ${plan.target}${alias} (${columns})${overriding}`;
}

/**
 * `INSERT … SELECT … FROM stage ON CONFLICT (key) DO UPDATE SET … WHERE … IS DISTINCT FROM …`.
 * With `dedupe`, only the last staged row of each key is taken: ON CONFLICT refuses to touch
 * one row twice in a statement, and the last row of a delta is the newest state.
 */
export function upsertSql(plan: UpsertPlan, dedupe: boolean): string {
  const keys = plan.key.map(quoteIdent).join(', ');
  const seq = plan.order ?? quoteIdent(SEQ_COLUMN);
  const selected = selectedColumns(plan);
  const source = dedupe
    ? `SELECT DISTINCT ON (${keys}) ${selected} FROM ${plan.stage} ORDER BY ${keys}, ${seq} DESC`
    : `SELECT ${selected} FROM ${plan.stage}`;
  const keySet = new Set(plan.key);
  const rest = plan.columns.filter((c) => !keySet.has(c));
  if (rest.length === 0) {
    return `${insertInto(plan)} ${source} ON CONFLICT (${keys}) DO NOTHING`;
  }
  const set = rest.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(', ');
  const side = (alias: string) =>
    rest
      .map((c) => `${alias}.${quoteIdent(c)}${plan.compareAsText.has(c) ? '::text' : ''}`)
      .join(', ');
  return (
    `${insertInto(plan, ' AS t')} ${source} ON CONFLICT (${keys}) DO UPDATE SET ${set} ` +
    `WHERE (${side('t')}) IS DISTINCT FROM (${side('EXCLUDED')})`
  );
}

/** How batches may reach a table without the stage and the upsert (see TableLoader). */
export interface CopyPaths {
  /** The table's schema, quoted as needed: where shared stages go (see SharedStages). */
  schema?: string;
  /** The table is empty: COPY straight into it. */
  direct: boolean;
  /** The table may have rows: delete a batch's keys, then COPY the batch in (see copyReplacing). */
  replace: boolean;
  /**
   * The table's rules on INSERT or UPDATE that would fire in this transaction: PostgreSQL
   * refuses `INSERT … ON CONFLICT` on such a table, so the upsert cannot be used.
   */
  upsertRules: string[];
}

/** The paths of a loader that only stages and checks (on the second session). */
const STAGE_ONLY: CopyPaths = { direct: false, replace: false, upsertRules: [] };

/**
 * Which COPY paths the table allows. Both need a plain or partitioned table without rules (COPY
 * ignores rules and cannot write into views) and every delta column written (the caller's part).
 * `replace` deletes and re-inserts rows where the upsert would update them, so it is taken only
 * where nobody can tell the difference: a plain table without children (a DELETE would reach
 * them, the COPY would not) or row security, whose every column is in the delta (no users'
 * column or identity value to reset), with no trigger that would fire, and no foreign key
 * pointing at it unless foreign keys are relaxed (a referencing row would block the DELETE or be
 * cascaded away with it).
 */
export async function copyPaths(
  conn: PgConnection,
  table: TableRef,
  columns: string[],
  relaxed: boolean,
): Promise<CopyPaths> {
  // Under session_replication_role = replica only ALWAYS and REPLICA triggers (and rules) fire.
  const firing = relaxed ? "('A', 'R')" : "('O', 'A')";
  const { rows } = await run<{
    schema: string;
    copyable: boolean | null;
    empty: boolean;
    replace: boolean | null;
    upsert_rules: string[] | null;
  }>(
    conn,
    `SELECT c.relnamespace::regnamespace::text AS schema,
            c.relkind IN ('r', 'p') AND NOT c.relhasrules AS copyable,
            NOT EXISTS (SELECT 1 FROM ${table.sql}) AS empty,
            c.relkind = 'r' AND NOT c.relhassubclass AND NOT c.relrowsecurity
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                             WHERE tgrelid = c.oid AND NOT tgisinternal AND tgenabled IN ${firing})
            AND ($3 OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                                    WHERE confrelid = c.oid AND contype = 'f'))
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                             WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped
                               AND attgenerated = '' AND NOT (attname = ANY ($2::text[])))
            AS replace,
            ARRAY(SELECT r.rulename::text FROM pg_catalog.pg_rewrite r
                   WHERE r.ev_class = c.oid AND r.ev_type IN ('2', '3')
                     AND r.ev_enabled IN ${firing} ORDER BY 1) AS upsert_rules
       FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`,
    [table.sql, columns, relaxed],
    table.name,
  );
  const r = rows[0];
  const upsertRules = r?.upsert_rules ?? [];
  if (!r?.copyable) return { schema: r?.schema, direct: false, replace: false, upsertRules };
  return { schema: r.schema, direct: r.empty, replace: r.replace === true, upsertRules };
}

/**
 * A move from a shared stage must take every staged row: fewer means this transaction did not
 * see the stager's commit (it should always: load's transaction is READ COMMITTED), and
 * carrying on would lose rows quietly.
 */
function expectMoved(moved: number | null, rows: number, stage: string): void {
  if (moved !== rows) {
    throw new Error(`moved ${moved ?? 0} of the ${rows} rows staged in ${stage}`);
  }
}

/**
 * A staged row's place in the delta, from its order column as text: a number, or a ctid
 * `(block,offset)` (offsets stay below 2^16).
 */
function rowOrdinal(order: string): bigint {
  const tid = /^\((\d+),(\d+)\)$/.exec(order);
  return tid ? (BigInt(tid[1]!) << 16n) + BigInt(tid[2]!) : BigInt(order);
}

/** `first`, then the rest of `batches`. */
async function* prepend(
  first: CopyBatch,
  batches: AsyncGenerator<CopyBatch>,
): AsyncGenerator<CopyBatch> {
  yield first;
  yield* batches;
}

/** Starts producing the next batch; a failure is handled where the promise is awaited. */
function prefetch(batches: AsyncGenerator<CopyBatch>): Promise<IteratorResult<CopyBatch>> {
  const next = batches.next();
  next.catch(() => {}); // not unhandled while the current batch is still being applied
  return next;
}

/** SQLSTATE classes of a value or a constraint the target refused (data exception, integrity). */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return code.startsWith('22') || code.startsWith('23');
}

/**
 * True when the value (as text) does not survive a cast to the target's type and back to the
 * stage's unchanged, or the cast fails. Per row and slow: only run to name the first offending
 * row once a set-based statement has failed.
 */
const MISFIT_FUNCTION = `CREATE OR REPLACE FUNCTION pg_temp.deltasync_misfit(v text, target text, stage text)
  RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE differs boolean := false;
BEGIN
  IF v IS NULL THEN RETURN false; END IF;
  IF stage IS NULL THEN
    EXECUTE format('SELECT $1::%s IS NULL', target) INTO differs USING v;
  ELSIF target LIKE 'character(%' THEN
    EXECUTE format('SELECT rtrim(($1::%s)::text, '' '') IS DISTINCT FROM rtrim($1, '' '')', target)
      INTO differs USING v;
  ELSE
    EXECUTE format('SELECT (($1::%s)::%s)::%s IS DISTINCT FROM $1::%s', stage, target, stage, stage)
      INTO differs USING v;
  END IF;
  RETURN differs;
EXCEPTION WHEN others THEN RETURN true;
END $f$`;

/** character(n) (bpchar), as format_type() prints it; not `character varying`. */
function isBlankPadded(targetType: string): boolean {
  return targetType === 'character' || targetType.startsWith('character(');
}

/** The first staged row a column cannot take, as found by a check. */
interface Misfit {
  key: string[];
  column: string;
  value: string | null;
  seq: string;
}

/** What a TableLoader needs: the upsert, the table, and how each delta column is staged. */
export interface LoadPlan extends UpsertPlan {
  table: TableRef;
  /**
   * Every column of the batches' lines, in line order: `columns` (the ones written) plus, in
   * format 2, delta columns the target does not take, which are staged as text and left there.
   */
  stageColumns: StageColumn[];
  /** The temporary table of a batch's keys, for copyReplacing's DELETE. */
  keyStage: string;
}

/**
 * Names for stages that every session can read (see TableLoader.loadShared): committed UNLOGGED
 * tables beside the target table. The target remembers each name, to drop what a rolled-back
 * load leaves behind.
 */
export interface SharedStages {
  /**
   * A new table name, schema-qualified and quoted; undefined once the transaction has staged
   * as much as it may (the stages take disk until it ends).
   */
  next(): string | undefined;
}

/** SQLSTATE of a missing privilege (here: CREATE on the target table's schema). */
const INSUFFICIENT_PRIVILEGE = '42501';

/** Loads batches of rows into one table (see the module comment). */
export class TableLoader {
  private stageReady = false;
  /** The stage the check, the moves and the upsert read: the plan's, or a shared one. */
  private stage: string;
  /** What orders its rows as the delta has them (see UpsertPlan.order). */
  private order = quoteIdent(SEQ_COLUMN);
  private keyStageReady = false;
  private direct: boolean;
  private replace: boolean;
  /** Where the key columns sit in a line (copyReplacing). */
  private readonly keyPositions: number[];
  /** enable_hashjoin and enable_mergejoin as they were, restored after each DELETE. */
  private joinSettings?: { hash: string; merge: string };

  /** The loader on a second connection that stages and checks batches (see load). */
  private checker?: TableLoader;
  /** True once the checker connection could not be opened. */
  private checkerFailed = false;

  /**
   * `openChecker`, when given, opens a second connection to the same database: then a table
   * that is empty and has checked columns is still COPYed into straight (see load).
   */
  constructor(
    private readonly conn: PgConnection,
    private readonly plan: LoadPlan,
    paths: CopyPaths,
    private readonly openChecker?: () => Promise<PgConnection>,
    private readonly shared?: SharedStages,
  ) {
    this.checked = plan.stageColumns.some((c) => c.check === 'roundtrip');
    this.stage = plan.stage;
    this.direct = paths.direct;
    this.replace = paths.replace;
    const line = plan.stageColumns.map((c) => c.name);
    this.keyPositions = plan.key.map((k) => line.indexOf(k));
  }

  /**
   * Whether some column needs its values proven to fit. COPY straight into the table would
   * round what the check exists to catch, so the proof must come from the delta's own values:
   * without a checker connection the batch is staged, checked, and moved by a plain
   * INSERT … SELECT while the table was empty.
   */
  private readonly checked: boolean;

  /** Consumes every batch; returns the number of rows. */
  async load(batches: AsyncGenerator<CopyBatch>, stop: { stopped: boolean }): Promise<number> {
    const stager = await this.openStager();
    if (!stager) return this.loadOneSession(batches, stop, 0);
    const shared = await this.loadShared(stager, batches, stop);
    if (!shared.rest) return shared.count;
    return shared.count + (await this.loadOneSession(shared.rest, stop, shared.count));
  }

  /** The one-session way (see the module comment); `before`: rows loaded before these. */
  private async loadOneSession(
    batches: AsyncGenerator<CopyBatch>,
    stop: { stopped: boolean },
    before: number,
  ): Promise<number> {
    let count = before;
    try {
      const keyed = this.withKeys(batches);
      let next = prefetch(keyed);
      for (let batch = await next; !batch.done; batch = await next) {
        // The next batch is read (decompressed, counted, keyed) while this one is applied,
        // from when the server has a longer statement in hand (see copyReplacing).
        let started = false;
        const readNext = (): void => {
          if (started) return;
          started = true;
          next = prefetch(keyed);
        };
        await this.apply(batch.value, count, readNext);
        readNext();
        count += batch.value.rows;
      }
    } catch (err) {
      stop.stopped = true;
      await batches.return(undefined).catch(() => {});
      throw err;
    } finally {
      // Its transaction only held a temporary stage: ending the session drops it.
      if (this.checker) await disconnect(this.checker.conn);
    }
    if (this.stageReady) await run(this.conn, `DROP TABLE ${this.plan.stage}`);
    if (this.keyStageReady) await run(this.conn, `DROP TABLE ${this.plan.keyStage}`);
    return count - before;
  }

  /**
   * A second connection that stages batches where this one can read them, with the first
   * stage created already; undefined when there is none to be had (no shared stages offered,
   * the replica at its connection limit, no CREATE privilege on the schema): then this
   * connection stages, or COPYs straight, as it always could.
   */
  private async openStager(): Promise<{ loader: TableLoader; first: string } | undefined> {
    if (!this.shared || !this.openChecker) return undefined;
    const first = this.shared.next();
    if (first === undefined) return undefined;
    const conn = await this.openChecker().catch(() => undefined);
    if (!conn) return undefined;
    const loader = new TableLoader(conn, this.plan, STAGE_ONLY);
    try {
      // Its commits only make stages visible: nothing there needs to survive a crash.
      await run(conn, 'SET synchronous_commit = off');
      await loader.createSharedStage(first);
      return { loader, first };
    } catch (err) {
      await disconnect(conn);
      // run() has made it an operator's error by now; the cause keeps the SQLSTATE.
      const e = err as { code?: string; cause?: { code?: string } };
      if ((e.code ?? e.cause?.code) === INSUFFICIENT_PRIVILEGE) return undefined;
      throw translateError(err, this.conn, this.plan.table.name);
    }
  }

  /**
   * The two-connection pipeline. The stager COPYs each batch into a committed UNLOGGED table
   * of its own and proves its values fit (checkFit); meanwhile this connection moves the
   * previous batch from its stage into the table, inside the load's transaction, by the
   * cheapest way open (applyShared). The parsing of the rows (about half the server's work of
   * a COPY) so runs beside the writing of the table, on the other core: 1M new rows ~2.7 s
   * against ~3 s for one COPY; 1M changed rows ~4.7 s against ~6.5 s. The target drops the
   * stages when the transaction ends (a DROP inside it would wait for any session that has
   * locked a stage, a pg_dump say, and fail the load). Once the transaction's stages are spent,
   * `rest` holds the batches still to load, for the one-session way.
   */
  private async loadShared(
    stager: { loader: TableLoader; first: string },
    batches: AsyncGenerator<CopyBatch>,
    stop: { stopped: boolean },
  ): Promise<{ count: number; rest?: AsyncGenerator<CopyBatch> }> {
    let count = 0;
    let staging: Promise<string> | undefined;
    let rest: AsyncGenerator<CopyBatch> | undefined;
    try {
      let batch = await batches.next();
      if (!batch.done) staging = stager.loader.stageShared(stager.first, batch.value, 0);
      while (staging) {
        const next = prefetch(batches); // read while the stager COPYs
        const staged = await staging;
        staging = undefined;
        const following = await next;
        const rows = batch.value!.rows;
        if (!following.done) {
          const name = this.shared!.next();
          if (name === undefined) {
            rest = prepend(following.value, batches);
          } else {
            staging = stager.loader.stageShared(name, following.value, count + rows, true);
            staging.catch(() => {}); // awaited next round, or in finally
          }
        }
        await this.applyShared(staged, rows);
        count += rows;
        batch = following;
      }
    } catch (err) {
      stop.stopped = true;
      await batches.return(undefined).catch(() => {});
      throw err;
    } finally {
      await staging?.catch(() => {});
      await disconnect(stager.loader.conn);
    }
    return { count, rest };
  }

  /**
   * Creates a shared stage: the delta's line columns in their stage types. No order column: the
   * rows' ctid keeps their order (see UpsertPlan.order), and an identity column's sequence made
   * every stage dearer to create and to fill (8 MB batches: ~10-30 ms each).
   */
  private async createSharedStage(name: string): Promise<void> {
    const columns = this.plan.stageColumns.map((c) => `${quoteIdent(c.name)} ${c.stageType}`);
    await run(
      this.conn,
      `CREATE UNLOGGED TABLE ${name} (${columns.join(', ')})`,
      [],
      this.plan.table.name,
    );
  }

  /** (On the stager.) COPYs a batch into a new shared stage and checks it; returns its name. */
  private async stageShared(
    name: string,
    batch: CopyBatch,
    before: number,
    create = false,
  ): Promise<string> {
    // One transaction, for the check's savepoints; its commit shows the stage to the load's.
    await run(this.conn, 'BEGIN');
    try {
      if (create) await this.createSharedStage(name);
      this.stage = name;
      this.order = 'ctid';
      await this.fillAndCheck(batch, before);
      await run(this.conn, 'COMMIT');
    } catch (err) {
      await this.conn.client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    return name;
  }

  /**
   * Moves a shared stage's rows into the table: straight while it was empty, replacing rows
   * where copyPaths allows it, else the upsert. A stage this transaction cannot see would
   * lose rows quietly, so the rows moved are counted.
   */
  private async applyShared(stage: string, rows: number): Promise<void> {
    this.stage = stage;
    this.order = 'ctid';
    let moved = false;
    if (this.direct) moved = await this.insertDirectly(rows);
    else if (this.replace) moved = await this.replaceFromStage(rows);
    if (!moved) await this.upsert();
  }

  /** One batch, by the cheapest path still open (see the module comment). */
  private async apply(batch: CopyBatch, before: number, readNext: () => void): Promise<void> {
    if (this.direct || !this.replace || this.checked) readNext();
    if (this.checked) {
      if ((this.direct || this.replace) && this.openChecker && !this.checkerFailed) {
        return this.copyChecked(batch, before);
      }
    } else if (this.direct) {
      if (await this.copyDirectly(batch)) return;
    } else if (this.replace) {
      if (await this.copyReplacing(batch, readNext)) return;
    }
    return this.copyStaged(batch, before);
  }

  /**
   * Works out each batch's keys as it is read, while the server applies the previous batch,
   * when copyReplacing will want them.
   */
  private async *withKeys(batches: AsyncGenerator<CopyBatch>): AsyncGenerator<CopyBatch> {
    for await (const batch of batches) {
      if (this.replace && !this.direct) {
        // One buffer for the batch from here on: the pieces it was read in are let go.
        const data = batch.chunks.length === 1 ? batch.chunks[0]! : Buffer.concat(batch.chunks);
        batch.chunks = [data];
        batch.keys = keyLines(data, this.keyPositions);
      }
      yield batch;
    }
  }

  private get columnList(): string {
    return this.plan.columns.map(quoteIdent).join(', ');
  }

  /** COPYs a batch into the (so far empty) table; false when a key collided. */
  private async copyDirectly(batch: CopyBatch): Promise<boolean> {
    this.direct = await this.underSavepoint('deltasync_direct', () =>
      this.copyIn(`COPY ${this.plan.target} (${this.columnList}) FROM STDIN`, batch),
    );
    return this.direct;
  }

  /**
   * Runs `work` under a savepoint: true when it went through; false, rolled back to the
   * savepoint, when the server refused a value or found a key twice (the staged way handles
   * the one and names the row of the other). Other errors propagate.
   */
  private async underSavepoint(name: string, work: () => Promise<unknown>): Promise<boolean> {
    await run(this.conn, `SAVEPOINT ${name}`);
    try {
      await work();
    } catch (err) {
      if (!isDataError(err)) throw this.translate(err);
      await run(this.conn, `ROLLBACK TO SAVEPOINT ${name}`);
      return false;
    }
    await run(this.conn, `RELEASE SAVEPOINT ${name}`);
    return true;
  }

  /**
   * A table that may hold some of the batch's keys, when the upsert's result can be had more
   * cheaply (copyPaths says when nobody can tell the difference): one DELETE of the batch's
   * keys, then a COPY of the batch straight into the table, under a savepoint. A server
   * rewrites a row either way, but this way it skips the stage (a second COPY) and the
   * upsert's per-row conflict handling: 1M rows that all exist, ~5.7 s against ~8.5 s. A
   * repeated key or a refused value rolls the batch back to the savepoint and it goes the staged
   * way, as do all later batches; false then.
   */
  private async copyReplacing(batch: CopyBatch, readNext: () => void): Promise<boolean> {
    const { keyStage, target, table } = this.plan;
    const keys = this.plan.key.map(quoteIdent);
    if (!this.keyStageReady) {
      await run(
        this.conn,
        `CREATE TEMPORARY TABLE ${keyStage} ON COMMIT DROP AS SELECT ${keys.join(', ')} FROM ${target} WITH NO DATA`,
        [],
        table.name,
      );
      if (keys.length > 1) await this.readJoinSettings();
      this.keyStageReady = true;
    } else {
      await run(this.conn, `TRUNCATE ${keyStage}`);
    }
    this.replace = await this.underSavepoint('deltasync_replace', async () => {
      await this.copyIn(`COPY ${keyStage} (${keys.join(', ')}) FROM STDIN`, {
        chunks: [batch.keys ?? keyLines(Buffer.concat(batch.chunks), this.keyPositions)],
        rows: batch.rows,
      });
      const deleted = this.conn.client.query(this.deleteKeysSql(keys));
      // Node's share of the next batch is done while the server deletes, not while it is
      // waiting for this batch's keys.
      readNext();
      await deleted;
      await this.copyIn(`COPY ${target} (${this.columnList}) FROM STDIN`, batch);
    });
    return this.replace;
  }

  /** enable_hashjoin and enable_mergejoin as they are, to set back after each DELETE. */
  private async readJoinSettings(): Promise<void> {
    const { rows } = await run<{ hash: string; merge: string }>(
      this.conn,
      "SELECT current_setting('enable_hashjoin') AS hash, current_setting('enable_mergejoin') AS merge",
    );
    this.joinSettings = rows[0]!;
  }

  /**
   * The DELETE of the staged keys. A batch's keys are a small part of a big table: probing the
   * key index once per key beats the hash join over the whole table that an unanalysed temporary
   * table invites (every batch would read the table through). One key column: `= ANY` of the
   * keys as an array, an index scan whatever the planner thinks of the stage (1M rows in 60k-row
   * batches, ~1.4 s against ~1.6 s for the join below). Several: a join with hash and merge
   * joins switched off for the statement, then set back as they were.
   */
  private deleteKeysSql(keys: string[], keyStage = this.plan.keyStage): string {
    const { target } = this.plan;
    if (keys.length === 1) {
      const k = keys[0]!;
      return `DELETE FROM ${target} WHERE ${k} = ANY (ARRAY(SELECT ${k} FROM ${keyStage}))`;
    }
    const { hash, merge } = this.joinSettings!;
    const match = keys.map((k) => `t.${k} = k.${k}`).join(' AND ');
    return `SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
      DELETE FROM ${target} AS t USING ${keyStage} AS k WHERE ${match};
      SET LOCAL enable_hashjoin = ${hash}; SET LOCAL enable_mergejoin = ${merge}`;
  }

  /**
   * Checked columns on a COPY path: the proof that every value fits needs only the delta's
   * values, so the checker connection stages and checks the batch while this one COPYs it into
   * the table (straight, or replacing), side by side on the server (an initial load then costs
   * one COPY, not a COPY, a check and an INSERT). A value that does not fit throws the same
   * DeltaError as the staged way, and the caller's transaction rolls the COPY back. A repeated
   * key goes the staged way.
   */
  private async copyChecked(batch: CopyBatch, before: number): Promise<void> {
    if (!this.checker) {
      // A replica at its connection limit still loads, the staged way.
      const conn = await this.openChecker!().catch(() => undefined);
      if (!conn) {
        this.checkerFailed = true;
        return this.copyStaged(batch, before);
      }
      this.checker = new TableLoader(conn, this.plan, STAGE_ONLY);
      await run(conn, 'BEGIN'); // for the stage's ON COMMIT DROP and the check's savepoints
    }
    const checked = this.checker.stageAndCheck(batch, before);
    checked.catch(() => {}); // awaited below, after the COPY
    const copy = this.direct ? this.copyDirectly(batch) : this.copyReplacing(batch, () => {});
    const copied = await copy.catch(async (err: unknown) => {
      await checked.catch(() => {});
      throw err;
    });
    await checked;
    if (!copied) await this.copyStaged(batch, before);
  }

  /** Puts a batch into the (emptied) stage and proves its values fit; `before` as copyStaged. */
  async stageAndCheck(batch: CopyBatch, before: number): Promise<void> {
    const { stage, table } = this.plan;
    this.stage = stage;
    this.order = quoteIdent(SEQ_COLUMN);
    if (this.stageReady) {
      await run(this.conn, `TRUNCATE ${stage}`);
    } else {
      // The stage holds the delta's own types (see StageColumn); ON COMMIT DROP cleans up
      // after a failure.
      const columns = this.plan.stageColumns.map((c) => `${quoteIdent(c.name)} ${c.stageType}`);
      await run(
        this.conn,
        `CREATE TEMPORARY TABLE ${stage} (${columns.join(', ')},
           ${quoteIdent(SEQ_COLUMN)} bigint GENERATED ALWAYS AS IDENTITY (CACHE 10000)) ON COMMIT DROP`,
        [],
        table.name,
      );
      this.stageReady = true;
    }
    await this.fillAndCheck(batch, before);
  }

  /**
   * COPYs a batch's lines into the (empty) stage, naming the row of a value the server refuses
   * to parse, and proves the values fit (checkFit).
   */
  private async fillAndCheck(batch: CopyBatch, before: number): Promise<void> {
    const lineColumns = this.plan.stageColumns.map((c) => quoteIdent(c.name)).join(', ');
    try {
      await this.copyIn(`COPY ${this.stage} (${lineColumns}) FROM STDIN`, batch);
    } catch (err) {
      throw this.refusedLine(err, before);
    }
    await this.checkFit();
  }

  /** `before`: the rows of the table's earlier batches, to number a refused line. */
  private async copyStaged(batch: CopyBatch, before: number): Promise<void> {
    await this.stageAndCheck(batch, before);
    if (!(this.direct && (await this.insertDirectly()))) await this.upsert();
  }

  /**
   * Moves the checked stage into the (so far empty) table with a plain INSERT, cheaper than the
   * upsert; false when a key repeats (the rows then go the upsert's way, as do later batches).
   */
  private async insertDirectly(rows?: number): Promise<boolean> {
    this.direct = await this.underSavepoint('deltasync_direct', async () => {
      const result = await this.conn.client.query(this.insertFromStageSql);
      if (rows !== undefined) expectMoved(result.rowCount, rows, this.stage);
    });
    return this.direct;
  }

  /**
   * (Shared stage.) Deletes the rows whose keys the stage holds, then inserts the stage's rows,
   * under a savepoint; false, and the upsert's way from then on, when a key repeats or a value
   * is refused (see copyReplacing).
   */
  private async replaceFromStage(rows: number): Promise<boolean> {
    const keys = this.plan.key.map(quoteIdent);
    if (keys.length > 1 && !this.joinSettings) await this.readJoinSettings();
    this.replace = await this.underSavepoint('deltasync_replace', async () => {
      await this.conn.client.query(this.deleteKeysSql(keys, this.stage));
      const result = await this.conn.client.query(this.insertFromStageSql);
      expectMoved(result.rowCount, rows, this.stage);
    });
    return this.replace;
  }

  /** `INSERT INTO target (columns) SELECT … FROM stage`, cast to the target's types. */
  private get insertFromStageSql(): string {
    return `${insertInto(this.plan)} SELECT ${selectedColumns(this.plan)} FROM ${this.stage}`;
  }

  private misfitError(m: Misfit): DeltaError {
    const column = this.plan.stageColumns.find((c) => c.name === m.column)!;
    return misfitError({
      table: this.plan.table.name,
      key: this.plan.key,
      values: m.key,
      column: m.column,
      value: m.value,
      targetType: column.targetType,
    });
  }

  /**
   * Proves, in one set-based statement over the batch, that every value of a roundtrip-checked
   * column comes back unchanged from the target's type (issue 9: never quietly different). When
   * a cast fails outright (out of range), the slow search names the row.
   */
  private async checkFit(): Promise<void> {
    const checked = this.plan.stageColumns.filter((c) => c.check === 'roundtrip');
    if (checked.length === 0) return;
    const conds = checked.map((c) => {
      const q = quoteIdent(c.name);
      // character(n) pads with spaces and drops them again when read as text: trailing spaces
      // are not part of its values, so they are compared without them.
      if (isBlankPadded(c.targetType))
        return `(${q} IS NOT NULL AND rtrim(CAST(CAST(${q} AS ${c.targetType}) AS text), ' ') IS DISTINCT FROM rtrim(${q}, ' '))`;
      return `(${q} IS NOT NULL AND CAST(CAST(${q} AS ${c.targetType}) AS ${c.stageType}) IS DISTINCT FROM ${q})`;
    });
    const keys = this.plan.key.map((k) => `CAST(${quoteIdent(k)} AS text)`).join(', ');
    const which = checked.map((_c, i) => `WHEN ${conds[i]} THEN ${i}`).join(' ');
    const value = checked
      .map((c, i) => `WHEN ${conds[i]} THEN CAST(${quoteIdent(c.name)} AS text)`)
      .join(' ');
    const sql =
      `SELECT ARRAY[${keys}] AS key, CASE ${which} END AS col, CASE ${value} END AS value ` +
      `FROM ${this.stage} WHERE ${conds.join(' OR ')} ORDER BY ${this.order} LIMIT 1`;
    await run(this.conn, 'SAVEPOINT deltasync_check');
    let found: { key: string[]; col: number; value: string } | undefined;
    try {
      found = (await this.conn.client.query(sql)).rows[0];
    } catch (err) {
      if (!isDataError(err)) throw this.translate(err);
      await run(this.conn, 'ROLLBACK TO SAVEPOINT deltasync_check');
      const misfit = await this.findMisfit();
      if (misfit) throw this.misfitError(misfit);
      throw this.translate(err);
    }
    await run(this.conn, 'RELEASE SAVEPOINT deltasync_check');
    if (found) {
      throw this.misfitError({
        key: found.key,
        column: checked[found.col]!.name,
        value: found.value,
        seq: '0',
      });
    }
  }

  /**
   * The first staged row (in delta order) that a column cannot take: a value that does not
   * survive the cast, or a NULL in a NOT NULL column. Row by row; only after a failure.
   */
  private async findMisfit(): Promise<Misfit | undefined> {
    await run(this.conn, MISFIT_FUNCTION);
    const { rows: notNull } = await run<{ name: string }>(
      this.conn,
      `SELECT attname AS name FROM pg_catalog.pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attnotnull`,
      [this.plan.table.sql],
    );
    const notNullNames = new Set(notNull.map((r) => r.name));
    const keys = this.plan.key.map((k) => `CAST(${quoteIdent(k)} AS text)`).join(', ');
    const seq = this.order;
    let first: Misfit | undefined;
    const written = new Set(this.plan.columns);
    for (const c of this.plan.stageColumns.filter((s) => written.has(s.name))) {
      const q = quoteIdent(c.name);
      const conds: string[] = [];
      if (notNullNames.has(c.name)) conds.push(`${q} IS NULL`);
      if (c.check !== 'none') {
        const stage = c.check === 'roundtrip' ? `'${c.stageType}'` : 'NULL';
        const target = `'${c.targetType.replaceAll("'", "''")}'`;
        conds.push(`pg_temp.deltasync_misfit(CAST(${q} AS text), ${target}, ${stage})`);
      }
      if (conds.length === 0) continue;
      const { rows } = await run<{ key: string[]; value: string | null; seq: string }>(
        this.conn,
        `SELECT ARRAY[${keys}] AS key, CAST(${q} AS text) AS value, ${seq}::text AS seq
           FROM ${this.stage} WHERE ${conds.join(' OR ')} ORDER BY ${seq} LIMIT 1`,
      );
      const r = rows[0];
      if (r && (!first || rowOrdinal(r.seq) < rowOrdinal(first.seq)))
        first = { key: r.key, column: c.name, value: r.value, seq: r.seq };
    }
    return first;
  }

  /**
   * A COPY into the stage that the server refused for a value (a delta whose text does not parse
   * as its declared type, or as a replica-only type such as an enum): a DeltaError naming the
   * table, the row's line and the column, like every other refused value. Other errors pass.
   */
  private refusedLine(err: unknown, before: number): unknown {
    const e = (err as { cause?: unknown }).cause ?? err;
    if (!isDataError(e)) return err;
    const { message, where } = e as { message: string; where?: string };
    const at = /line (\d+)(?:, column ([^:]+))?/.exec(where ?? '');
    const line = at ? ` row ${before + Number(at[1])} of the delta` : '';
    const column = at?.[2] ? `: column ${at[2]}` : '';
    return new DeltaError(`table '${this.plan.table.name}'${line}${column}: ${message}`, {
      hint: "the value does not parse as the column's type: fix the source value (or the replica column's type); nothing was applied",
      cause: e,
    });
  }

  private async copyIn(sql: string, batch: CopyBatch): Promise<void> {
    try {
      await pipeline(Readable.from(batch.chunks), this.conn.client.query(copyFrom(sql)));
    } catch (err) {
      throw translateError(err, this.conn, this.plan.table.name);
    }
  }

  /** Upserts the staged rows; only when a key repeats does it pay for deduplicating them. */
  private async upsert(): Promise<void> {
    await run(this.conn, 'SAVEPOINT deltasync_upsert');
    try {
      try {
        await this.conn.client.query(
          upsertSql({ ...this.plan, stage: this.stage, order: this.order }, false),
        );
      } catch (err) {
        if ((err as { code?: string }).code !== CARDINALITY_VIOLATION) throw err;
        await run(this.conn, 'ROLLBACK TO SAVEPOINT deltasync_upsert');
        await this.conn.client.query(
          upsertSql({ ...this.plan, stage: this.stage, order: this.order }, true),
        );
      }
    } catch (err) {
      if (!isDataError(err)) throw this.translate(err);
      // A value or a NULL the target refused: name the row, if it is one of those.
      await run(this.conn, 'ROLLBACK TO SAVEPOINT deltasync_upsert');
      const misfit = await this.findMisfit();
      if (misfit) throw this.misfitError(misfit);
      throw this.translate(err);
    }
    await run(this.conn, 'RELEASE SAVEPOINT deltasync_upsert');
  }

  private translate(err: unknown): unknown {
    // 42P10 is also COPY's "column … is a generated column": only ON CONFLICT's is about the key.
    const e = err as { code?: string; message?: string };
    if (e.code === INVALID_COLUMN_REFERENCE && e.message?.includes('ON CONFLICT')) {
      return new ConfigError(
        `target table '${this.plan.table.name}' has no primary key or unique index on (${this.plan.key.join(', ')})`,
        { hint: 'add one, or fix the key in the job configuration', cause: err },
      );
    }
    return translateError(err, this.conn, this.plan.table.name);
  }
}

/**
 * Deletes the rows whose keys are given: the keys are COPYed into a temporary table, then one
 * `DELETE … USING` removes the matching rows. With `notIn` (a base table) it deletes the rows
 * whose keys are not given instead. Returns the number of rows deleted.
 */
export async function deleteKeys(
  conn: PgConnection,
  table: TableRef,
  stage: string,
  key: string[],
  batches: AsyncGenerator<CopyBatch>,
  notIn = false,
): Promise<number> {
  const cols = key.map(quoteIdent).join(', ');
  await run(
    conn,
    `CREATE TEMPORARY TABLE ${stage} ON COMMIT DROP AS SELECT ${cols} FROM ${table.sql} WITH NO DATA`,
    [],
    table.name,
  );
  for await (const batch of batches) {
    try {
      await pipeline(
        Readable.from(batch.chunks),
        conn.client.query(copyFrom(`COPY ${stage} (${cols}) FROM STDIN`)),
      );
    } catch (err) {
      throw translateError(err, conn, table.name);
    }
  }
  const where = key.map((k) => `t.${quoteIdent(k)} = s.${quoteIdent(k)}`).join(' AND ');
  if (notIn) await run(conn, `ANALYZE ${stage}`); // so the planner hashes the keys
  const result = await run(
    conn,
    notIn
      ? `DELETE FROM ${table.sql} t WHERE NOT EXISTS (SELECT 1 FROM ${stage} s WHERE ${where})`
      : `DELETE FROM ${table.sql} t USING ${stage} s WHERE ${where}`,
    [],
    table.name,
  );
  await run(conn, `DROP TABLE ${stage}`);
  return result.rowCount ?? 0;
}
