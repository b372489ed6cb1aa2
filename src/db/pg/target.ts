/**
 * Applying deltas to PostgreSQL.
 *
 * applyRows streams the rows with `COPY … FROM STDIN` into a temporary staging table holding
 * just the delta's columns, then upserts them with one `INSERT … SELECT … ON CONFLICT DO
 * UPDATE`. Measured on 1M rows (GUIDE): ~7 s into an empty table against ~9 minutes for one
 * upsert per row; the `IS DISTINCT FROM` guard makes re-applying unchanged rows cheap and leaves
 * no dead tuples. Only the delta's columns are named, so other columns (the users' own) are
 * never written.
 *
 * Everything happens inside the one transaction of transaction(fn), together with the applied
 * logId, so a delta lands completely or not at all.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { ConfigError, DeltaError } from '../../errors.js';
import {
  APPLIED_TABLE,
  type AppliedRecord,
  type ApplyRowsRequest,
  type ColumnInfo,
  type DbConfig,
  type TargetTransaction,
  type TargetWriter,
  type WireRow,
} from '../types.js';
import { reflectColumns, tableExists, tableRef, type PgColumn, type TableRef } from './catalog.js';
import { connect, disconnect, run, translateError, type PgConnection } from './connection.js';
import { copyEncoder, quoteIdent, type CopyEncoder } from './types.js';

/** The staging table's extra column numbering rows in arrival order, so the last one wins. */
const SEQ_COLUMN = '__deltasync_seq';
/** COPY data is written in chunks of about this many characters: few writes, little memory. */
const COPY_CHUNK_CHARS = 256 * 1024;
/**
 * Rows are staged and upserted in batches of about this much COPY text, and the next batch is
 * encoded while the server upserts the previous one: Node and the server work side by side, and
 * at most two batches are held in memory.
 */
const BATCH_CHARS = 8 * 1024 * 1024;
/** Advisory lock class ('delt') serialising loads of one job, whichever host they run on. */
const APPLIED_LOCK_CLASS = 0x64656c74;
/** SQLSTATE: ON CONFLICT DO UPDATE met the same key twice in one statement. */
const CARDINALITY_VIOLATION = '21000';
/** SQLSTATE: no unique index matches the ON CONFLICT columns. */
const INVALID_COLUMN_REFERENCE = '42P10';

/** What the upsert statement needs to know (pure data; exported for tests). */
export interface UpsertPlan {
  target: string;
  stage: string;
  columns: string[];
  key: string[];
  /** Columns whose type has no equality operator (json, …): compared as text. */
  compareAsText: Set<string>;
}

/**
 * `INSERT … SELECT … FROM stage ON CONFLICT (key) DO UPDATE SET … WHERE … IS DISTINCT FROM …`.
 * With `dedupe`, only the last staged row of each key is taken: ON CONFLICT refuses to touch
 * one row twice in a statement, and the last row of a delta is the newest state.
 */
export function upsertSql(plan: UpsertPlan, dedupe: boolean): string {
  const cols = plan.columns.map(quoteIdent).join(', ');
  const keys = plan.key.map(quoteIdent).join(', ');
  const source = dedupe
    ? `SELECT DISTINCT ON (${keys}) ${cols} FROM ${plan.stage} ORDER BY ${keys}, ${quoteIdent(SEQ_COLUMN)} DESC`
    : `SELECT ${cols} FROM ${plan.stage}`;
  const keySet = new Set(plan.key);
  const rest = plan.columns.filter((c) => !keySet.has(c));
  if (rest.length === 0) {
    return `INSERT INTO ${plan.target} (${cols}) ${source} ON CONFLICT (${keys}) DO NOTHING`;
  }
  const set = rest.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(', ');
  const side = (alias: string) =>
    rest
      .map((c) => `${alias}.${quoteIdent(c)}${plan.compareAsText.has(c) ? '::text' : ''}`)
      .join(', ');
  return (
    `INSERT INTO ${plan.target} AS t (${cols}) ${source} ON CONFLICT (${keys}) DO UPDATE SET ${set} ` +
    `WHERE (${side('t')}) IS DISTINCT FROM (${side('EXCLUDED')})`
  );
}

/** COPY text for a run of rows, ready to send. */
export interface CopyBatch {
  chunks: Buffer[];
  rows: number;
}

/**
 * Wire rows -> batches of COPY text, each row ending with its sequence number. Throws a
 * DeltaError for a row of the wrong width; an error of `rows` propagates as it is. Stops early,
 * closing `rows`, once `stop.stopped` is set.
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
  let seq = 0;
  let first = 0;
  for await (const row of rows) {
    if (stop.stopped) return;
    if (row.length !== width) {
      throw new DeltaError(
        `row ${seq + 1} for table '${table}' has ${row.length} values, expected ${width}`,
      );
    }
    for (let i = 0; i < width; i++) chunk += encoders[i]!(row[i]!) + '\t';
    chunk += seq++ + '\n';
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
        yield { chunks, rows: seq - first };
        chunks = [];
        size = 0;
        first = seq;
      }
    }
  }
  if (chunk.length > 0) chunks.push(Buffer.from(chunk));
  if (chunks.length > 0) yield { chunks, rows: seq - first };
}

function checkColumns(
  req: ApplyRowsRequest,
  table: TableRef,
  columns: PgColumn[] | null,
): PgColumn[] {
  if (!columns) {
    throw new ConfigError(`target table '${table.name}' does not exist`, {
      hint: 'create it on the replica before loading',
    });
  }
  const byName = new Map(columns.map((c) => [c.name, c]));
  const missing = req.columns.filter((c) => !byName.has(c.name)).map((c) => c.name);
  if (missing.length > 0) {
    throw new ConfigError(`target table '${table.name}' has no column ${missing.join(', ')}`, {
      hint: 'add the columns or map them to existing ones',
    });
  }
  const names = new Set(req.columns.map((c) => c.name));
  const badKey = req.key.filter((k) => !names.has(k));
  if (req.key.length === 0 || badKey.length > 0) {
    throw new ConfigError(
      `key (${req.key.join(', ')}) of table '${table.name}' must be among the delta's columns`,
    );
  }
  if (names.has(SEQ_COLUMN)) throw new ConfigError(`column name ${SEQ_COLUMN} is reserved`);
  return req.columns.map((c) => byName.get(c.name)!);
}

/** Starts producing the next batch; a failure is handled where the promise is awaited. */
function prefetch(batches: AsyncGenerator<CopyBatch>): Promise<IteratorResult<CopyBatch>> {
  const next = batches.next();
  next.catch(() => {}); // not unhandled while the current batch is still being applied
  return next;
}

class PgTransaction implements TargetTransaction {
  constructor(private readonly writer: PgTarget) {}

  appliedLogId(job: string): Promise<string | null> {
    return this.writer.readApplied(job, true);
  }

  applyRows(request: ApplyRowsRequest): Promise<number> {
    return this.writer.applyRows(request);
  }

  async recordApplied(record: AppliedRecord): Promise<void> {
    await run(
      this.writer.conn,
      `INSERT INTO ${this.writer.applied.sql} AS a (job, log_id, delta) VALUES ($1, $2, $3)
       ON CONFLICT (job) DO UPDATE
       SET log_id = EXCLUDED.log_id, delta = EXCLUDED.delta, applied_at = now()`,
      [record.job, record.logId, record.delta],
      APPLIED_TABLE,
    );
  }
}

class PgTarget implements TargetWriter {
  readonly engine = 'pg' as const;
  readonly applied: TableRef;
  private stages = 0;
  private inTransaction = false;

  constructor(
    readonly conn: PgConnection,
    private readonly schema: string | undefined,
  ) {
    this.applied = tableRef(APPLIED_TABLE, schema);
  }

  async columns(table: string): Promise<ColumnInfo[] | null> {
    const columns = await reflectColumns(this.conn, tableRef(table, this.schema));
    return columns?.map(({ name, type, nativeType }) => ({ name, type, nativeType })) ?? null;
  }

  async prepare(): Promise<void> {
    await run(
      this.conn,
      `CREATE TABLE IF NOT EXISTS ${this.applied.sql} (
         job text PRIMARY KEY,
         log_id text NOT NULL,
         delta text,
         applied_at timestamptz DEFAULT now())`,
    );
  }

  appliedLogId(job: string): Promise<string | null> {
    return this.readApplied(job, false);
  }

  /** Reads the job's applied logId; inside a transaction, first locks the job till commit. */
  async readApplied(job: string, lock: boolean): Promise<string | null> {
    if (lock) {
      await run(this.conn, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [
        APPLIED_LOCK_CLASS,
        job,
      ]);
    }
    // Checked first: a failed SELECT on a missing table would abort the transaction.
    if (!(await tableExists(this.conn, this.applied))) return null;
    const { rows } = await run<{ log_id: string }>(
      this.conn,
      `SELECT log_id FROM ${this.applied.sql} WHERE job = $1`,
      [job],
    );
    return rows[0]?.log_id ?? null;
  }

  async applyRows(req: ApplyRowsRequest): Promise<number> {
    const table = tableRef(req.table, this.schema);
    const targetColumns = checkColumns(req, table, await reflectColumns(this.conn, table));
    const stage = `pg_temp.${quoteIdent(`deltasync_stage_${++this.stages}`)}`;
    const names = req.columns.map((c) => c.name);
    const cols = names.map(quoteIdent).join(', ');
    await run(
      this.conn,
      `CREATE TEMPORARY TABLE ${stage} ON COMMIT DROP AS
       SELECT ${cols}, NULL::bigint AS ${quoteIdent(SEQ_COLUMN)} FROM ${table.sql} WITH NO DATA`,
      [],
      req.table,
    );
    const plan: UpsertPlan = {
      target: table.sql,
      stage,
      columns: names,
      key: req.key,
      compareAsText: new Set(
        targetColumns.filter((c) => c.fallback || c.typname === 'json').map((c) => c.name),
      ),
    };
    const copySql = `COPY ${stage} (${cols}, ${quoteIdent(SEQ_COLUMN)}) FROM STDIN`;

    const stop = { stopped: false };
    const encoders = req.columns.map((c) => copyEncoder(c.type));
    const batches = copyBatches(req.rows, encoders, req.table, stop);
    let count = 0;
    try {
      let next = prefetch(batches);
      for (let batch = await next; !batch.done; batch = await next) {
        next = prefetch(batches); // encoded while this batch is sent and upserted
        if (count > 0) await run(this.conn, `TRUNCATE ${stage}`);
        await this.copyIn(copySql, batch.value.chunks, req.table);
        await this.upsert(plan);
        count += batch.value.rows;
      }
    } catch (err) {
      stop.stopped = true;
      await batches.return(undefined).catch(() => {});
      throw err;
    }
    await run(this.conn, `DROP TABLE ${stage}`);
    return count;
  }

  private async copyIn(sql: string, chunks: Buffer[], table: string): Promise<void> {
    try {
      await pipeline(Readable.from(chunks), this.conn.client.query(copyFrom(sql)));
    } catch (err) {
      throw translateError(err, this.conn, table);
    }
  }

  /** Upserts the staged rows; only when a key repeats does it pay for deduplicating them. */
  private async upsert(plan: UpsertPlan): Promise<void> {
    await run(this.conn, 'SAVEPOINT deltasync_upsert');
    try {
      await this.conn.client.query(upsertSql(plan, false));
    } catch (err) {
      if ((err as { code?: string }).code !== CARDINALITY_VIOLATION) {
        throw this.upsertError(err, plan);
      }
      await run(this.conn, 'ROLLBACK TO SAVEPOINT deltasync_upsert');
      await run(this.conn, upsertSql(plan, true));
    }
    await run(this.conn, 'RELEASE SAVEPOINT deltasync_upsert');
  }

  private upsertError(err: unknown, plan: UpsertPlan): unknown {
    if ((err as { code?: string }).code === INVALID_COLUMN_REFERENCE) {
      return new ConfigError(
        `target table ${plan.target} has no primary key or unique index on (${plan.key.join(', ')})`,
        { hint: 'add one, or fix the key in the job configuration', cause: err },
      );
    }
    return translateError(err, this.conn, plan.target);
  }

  async transaction<T>(fn: (tx: TargetTransaction) => Promise<T>): Promise<T> {
    if (this.inTransaction) throw new Error('PostgreSQL target transactions do not nest');
    this.inTransaction = true;
    try {
      await run(this.conn, 'BEGIN');
      try {
        const result = await fn(new PgTransaction(this));
        await run(this.conn, 'COMMIT');
        return result;
      } catch (err) {
        // On a lost connection there is nothing to roll back: the server already did.
        await this.conn.client.query('ROLLBACK').catch(() => {});
        throw translateError(err, this.conn);
      }
    } finally {
      this.inTransaction = false;
    }
  }

  async close(): Promise<void> {
    await disconnect(this.conn);
  }
}

/** Opens a writer; throws UnavailableError when PostgreSQL cannot be reached. */
export async function openPgTarget(config: DbConfig): Promise<TargetWriter> {
  return new PgTarget(await connect(config), config.schema);
}
