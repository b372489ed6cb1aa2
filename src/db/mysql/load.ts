/**
 * The two ways rows reach a MySQL/MariaDB table, both upserts that write only the delta's
 * columns and let the last of several rows with one key win:
 *
 *   - `infile`: the rows stream as tab-separated text through `LOAD DATA LOCAL INFILE` into a
 *     temporary staging table, then one `INSERT … SELECT … ON DUPLICATE KEY UPDATE` moves them.
 *   - `insert`: multi-row `INSERT … VALUES … ON DUPLICATE KEY UPDATE` statements of a few MB,
 *     the next one built while the server runs the previous one.
 *
 * Both pull rows from the iterable only as fast as the server takes them, and neither ever holds
 * more than a batch in memory.
 */
import { Readable } from 'node:stream';
import type { ResultSetHeader } from 'mysql2';
import { DeltaError, DeltasyncError } from '../../errors.js';
import { misfitError } from '../misfit.js';
import type { ColumnInfo, WireRow } from '../types.js';
import { run, translateError, type Session } from './connection.js';
import { quoteIdent, type WriteEncoder } from './types.js';

/** What both strategies need to know about one applyRows call. */
export interface ApplyPlan {
  /** The quoted target table. */
  table: string;
  /** The table name as configured, for messages. */
  tableName: string;
  columns: ColumnInfo[];
  /** Each column's type in the staging table (see stage.ts). */
  stageTypes: string[];
  /** Each column's COLUMN_TYPE in the target, for messages. */
  targetTypes: string[];
  /**
   * Per column, a condition on the staged value `s.<column>` that is true when the target column
   * would round, truncate or refuse it (see misfitCondition), or null when it cannot.
   */
  misfits: (string | null)[];
  /** Per column, the part of `misfits` the server lets through quietly (see stageColumn). */
  quiet: (string | null)[];
  /** Per column, whether the target column is NOT NULL. */
  notNull: boolean[];
  /** The key columns. */
  key: string[];
  /** The target's unique indexes other than the key's (MariaDB checks them row by row). */
  otherUniques: { name: string; columns: string[] }[];
  encoders: WriteEncoder[];
  /** The `ON DUPLICATE KEY UPDATE …` clause. */
  onDuplicate: string;
}

export type LoadStrategy = 'infile' | 'insert';

/** Builds the ON DUPLICATE KEY UPDATE clause: every non-key column takes the new row's value. */
export function onDuplicateClause(columns: string[], key: string[]): string {
  const keys = new Set(key);
  const updated = columns.filter((c) => !keys.has(c));
  // With nothing but key columns there is nothing to update; a no-op assignment keeps it an upsert.
  const assignments = (updated.length > 0 ? updated : [key[0]!]).map(
    (c) => `${quoteIdent(c)} = VALUES(${quoteIdent(c)})`,
  );
  return `ON DUPLICATE KEY UPDATE ${assignments.join(', ')}`;
}

function checkWidth(plan: ApplyPlan, row: WireRow, index: number): void {
  if (!Array.isArray(row) || row.length !== plan.columns.length) {
    throw new DeltaError(
      `table ${plan.tableName}: row ${index + 1} has ${Array.isArray(row) ? row.length : 'no'} values, expected ${plan.columns.length}`,
    );
  }
}

// ---------------------------------------------------------------- multi-row INSERT

/**
 * A statement is sent once it reaches this many characters: well under the server's default
 * max_allowed_packet (16 MB); 2 and 4 MB statements were not reliably faster and took more memory.
 */
const INSERT_BATCH_CHARS = 1024 * 1024;

/** Upserts with multi-row INSERT statements; returns the number of rows. */
export async function applyByInsert(
  session: Session,
  plan: ApplyPlan,
  rows: AsyncIterable<WireRow>,
  batchChars = INSERT_BATCH_CHARS,
): Promise<number> {
  const head = `INSERT INTO ${plan.table} (${plan.columns.map((c) => quoteIdent(c.name)).join(', ')}) VALUES `;
  const tail = ' ' + plan.onDuplicate;
  const { encoders } = plan;
  let count = 0;
  let values = '';
  // At most one statement runs while the next is built; its outcome is checked before the
  // next is sent, and before returning or rethrowing.
  const sent: { statement: Promise<unknown> } = { statement: Promise.resolve() };
  const send = async (sql: string) => {
    await sent.statement;
    sent.statement = run(session, sql, undefined, plan.tableName);
    sent.statement.catch(() => undefined);
  };
  try {
    for await (const row of rows) {
      checkWidth(plan, row, count);
      let tuple = values.length === 0 ? '(' : ',(';
      for (let i = 0; i < encoders.length; i++) {
        if (i > 0) tuple += ',';
        tuple += encoders[i]!.literal(row[i]!);
      }
      values += tuple + ')';
      count++;
      if (values.length >= batchChars) {
        await send(head + values + tail);
        values = '';
      }
    }
    if (values.length > 0) await send(head + values + tail);
  } catch (err) {
    // The caller rolls back next: let the statement in flight finish first.
    await sent.statement.catch(() => undefined);
    throw err;
  }
  await sent.statement;
  return count;
}

// ---------------------------------------------------------------- LOAD DATA LOCAL INFILE

/** Rows are sent in chunks of about this many characters… */
const INFILE_CHUNK_CHARS = 256 * 1024;
/** …and no packet is larger than this, however long one row is. */
export const INFILE_MAX_PACKET = 1024 * 1024;
export const STAGE = quoteIdent('deltasync_stage');
/** Orders the staged rows, so that the last of several rows with one key wins. */
const SEQ = quoteIdent('deltasync_seq');

/** Resolves when the socket can take more, or has closed (the query then fails on its own). */
export function drained(
  socket: NodeJS.WritableStream & { writableNeedDrain?: boolean },
): Promise<void> {
  if (!socket.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.removeListener('drain', done);
      socket.removeListener('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/**
 * The rows as LOAD DATA text. The driver writes each chunk straight to the socket without
 * asking, so the generator waits for the socket to drain before it makes the next one; and it
 * only ever emits whole lines, so when the rows fail mid-way what reached the server is a
 * clean prefix that the caller's rollback discards.
 */
function tsvStream(
  plan: ApplyPlan,
  rows: AsyncIterable<WireRow>,
  socket: NodeJS.WritableStream,
  counter: { rows: number },
): Readable {
  const { encoders } = plan;
  async function* chunks(): AsyncGenerator<Buffer> {
    let text = '';
    const flush = async function* () {
      const bytes = Buffer.from(text, 'utf8');
      text = '';
      for (let offset = 0; offset < bytes.length; offset += INFILE_MAX_PACKET) {
        await drained(socket);
        yield bytes.subarray(offset, offset + INFILE_MAX_PACKET);
      }
    };
    for await (const row of rows) {
      checkWidth(plan, row, counter.rows);
      let line = '';
      for (let i = 0; i < encoders.length; i++) {
        if (i > 0) line += '\t';
        line += encoders[i]!.field(row[i]!);
      }
      text += line + '\n';
      counter.rows++;
      if (text.length >= INFILE_CHUNK_CHARS) yield* flush();
    }
    if (text.length > 0) yield* flush();
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** Fills the staging table with LOAD DATA LOCAL INFILE; returns the number of rows. */
async function stageByInfile(
  session: Session,
  plan: ApplyPlan,
  rows: AsyncIterable<WireRow>,
): Promise<number> {
  const names = plan.columns.map((c) => quoteIdent(c.name));
  const targets: string[] = [];
  const sets: string[] = [];
  plan.encoders.forEach((encoder, i) => {
    if (!encoder.viaHex && !encoder.viaUnsigned) {
      targets.push(names[i]!);
      return;
    }
    targets.push(`@v${i}`);
    sets.push(`${names[i]} = ${encoder.viaHex ? `UNHEX(@v${i})` : `CAST(@v${i} AS UNSIGNED)`}`);
  });
  const counter = { rows: 0 };
  const socket = (session.core as unknown as { stream: NodeJS.WritableStream }).stream;
  let source: Readable | undefined;
  const loadSql =
    `LOAD DATA LOCAL INFILE 'deltasync-rows' INTO TABLE ${STAGE} CHARACTER SET utf8mb4` +
    ` FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'` +
    ` (${targets.join(', ')})` +
    (sets.length > 0 ? ` SET ${sets.join(', ')}` : '');
  let header: ResultSetHeader;
  try {
    [header] = await session.conn.query<ResultSetHeader>({
      sql: loadSql,
      infileStreamFactory: () => (source = tsvStream(plan, rows, socket, counter)),
    });
  } catch (err) {
    // The rows' own error (a bad checksum, say) is the one the caller must see.
    throw translateError(session.lostWith ?? err, session.where, plan.tableName, session);
  } finally {
    source?.destroy();
  }
  // LOCAL implies IGNORE: the server turns bad values into warnings and carries on, so a
  // warning here is a value that did not fit its staging column, which an INSERT would refuse.
  if (header.warningStatus > 0) await refuseWarnings(session, plan);
  return counter.rows;
}

/** MariaDB/MySQL errors of a value or a constraint the target refused. */
export const DATA_ERRNOS = new Set([
  1048, // column cannot be null
  1261, // a line has too few fields (LOAD DATA)
  1262, // a line has too many fields (LOAD DATA)
  1263, // NULL for a NOT NULL column (LOAD DATA)
  1062, // duplicate entry
  1264, // out of range
  1265, // data truncated
  1292, // incorrect datetime/number value
  1366, // incorrect string value
  1406, // data too long
  1451, // a child row references it (foreign key)
  1452, // no parent row (foreign key)
  3819, // check constraint (MySQL)
  4025, // check constraint (MariaDB)
]);

/** `(id, region)=(3, eu)`, the way PostgreSQL writes keys in its messages. */
function describeKey(plan: ApplyPlan, values: unknown[]): string {
  return `(${plan.key.join(', ')})=(${values.map((v) => (v === null ? 'NULL' : String(v))).join(', ')})`;
}

/**
 * The first staged row (in delta order) that a column cannot take unchanged, or a NULL in a NOT
 * NULL column, as a DeltaError naming table, key, column, value and the column's type; or null.
 * `withNulls`: NULLs are only looked for once the write failed (a NOT NULL column refuses them
 * loudly; looking first would cost every load a scan).
 */
async function findMisfit(
  session: Session,
  plan: ApplyPlan,
  withNulls: boolean,
): Promise<DeltaError | null> {
  const conds = plan.columns.map((c, i) => {
    const parts: string[] = [];
    if (plan.misfits[i]) parts.push(plan.misfits[i]!);
    if (withNulls && plan.notNull[i]) parts.push(`s.${quoteIdent(c.name)} IS NULL`);
    return parts.length > 0 ? `(${parts.join(' OR ')})` : null;
  });
  const checked = conds.flatMap((c, i) => (c ? [i] : []));
  if (checked.length === 0) return null;
  const which = checked.map((i) => `WHEN ${conds[i]} THEN ${i}`).join(' ');
  const keys = plan.key.map((k) => `CAST(s.${quoteIdent(k)} AS CHAR) AS ${quoteIdent(`k_${k}`)}`);
  const [found] = await run<Record<string, unknown>[]>(
    session,
    `SELECT ${keys.join(', ')}, CASE ${which} END AS deltasync_col FROM ${STAGE} AS s` +
      ` WHERE ${checked.map((i) => conds[i]).join(' OR ')} ORDER BY s.${SEQ} LIMIT 1`,
    undefined,
    plan.tableName,
  );
  if (!found) return null;
  const index = Number(found.deltasync_col);
  const column = plan.columns[index]!;
  const [value] = await run<{ v: string | null }[]>(
    session,
    `SELECT CAST(s.${quoteIdent(column.name)} AS CHAR) AS v FROM ${STAGE} AS s WHERE ${plan.key
      .map((k) => `CAST(s.${quoteIdent(k)} AS CHAR) = ?`)
      .join(' AND ')} ORDER BY s.${SEQ} LIMIT 1`,
    plan.key.map((k) => found[`k_${k}`]),
  );
  const targetType = plan.targetTypes[index]!;
  // Staged decimals carry 30 digits of scale: show the value as the delta had it.
  const shown =
    column.type === 'decimal' && value?.v
      ? value.v.replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '')
      : value?.v;
  return misfitError({
    table: plan.tableName,
    key: plan.key,
    values: plan.key.map((k) => found[`k_${k}`]),
    column: column.name,
    value: shown ?? null,
    targetType,
  });
}

/**
 * A staged row taking a value of a unique index (other than the key's) that another row of the
 * target holds: InnoDB checks unique indexes row by row and cannot defer them, and ON DUPLICATE
 * KEY UPDATE would then update that other row. Two rows of one delta swapping values (Sakila's
 * store managers) end here too, unless the other row moved away earlier in the delta.
 */
async function refuseUniqueClash(session: Session, plan: ApplyPlan): Promise<void> {
  for (const unique of plan.otherUniques) {
    const on = unique.columns.map((c) => `s.${quoteIdent(c)} = t.${quoteIdent(c)}`).join(' AND ');
    const sameKey = (a: string, b: string) =>
      plan.key.map((k) => `${a}.${quoteIdent(k)} <=> ${b}.${quoteIdent(k)}`).join(' AND ');
    const movedAway = unique.columns
      .map((c) => `NOT (s2.${quoteIdent(c)} <=> t.${quoteIdent(c)})`)
      .join(' OR ');
    const keys = plan.key.map((k) => `CAST(s.${quoteIdent(k)} AS CHAR) AS ${quoteIdent(`s_${k}`)}`);
    const held = plan.key.map((k) => `CAST(t.${quoteIdent(k)} AS CHAR) AS ${quoteIdent(`t_${k}`)}`);
    const values = unique.columns.map(
      (c) => `CAST(s.${quoteIdent(c)} AS CHAR) AS ${quoteIdent(`u_${c}`)}`,
    );
    const [clash] = await run<Record<string, unknown>[]>(
      session,
      `SELECT ${[...keys, ...held, ...values].join(', ')} FROM ${STAGE} AS s JOIN ${plan.table} AS t ON ${on}` +
        ` WHERE NOT (${sameKey('s', 't')}) AND NOT EXISTS (SELECT 1 FROM ${STAGE} AS s2` +
        ` WHERE ${sameKey('s2', 't')} AND s2.${SEQ} < s.${SEQ} AND (${movedAway}))` +
        ` ORDER BY s.${SEQ} LIMIT 1`,
      undefined,
      plan.tableName,
    );
    if (!clash) continue;
    const row = describeKey(
      plan,
      plan.key.map((k) => clash[`s_${k}`]),
    );
    const other = describeKey(
      plan,
      plan.key.map((k) => clash[`t_${k}`]),
    );
    const value = `(${unique.columns.join(', ')})=(${unique.columns.map((c) => String(clash[`u_${c}`])).join(', ')})`;
    throw new DeltaError(
      `table '${plan.tableName}' row ${row}: unique index ${unique.name} value ${value} is held by row ${other} on the replica until later in the delta (or for good)`,
      {
        hint: 'MariaDB/MySQL check unique indexes row by row and cannot defer them: drop or relax that unique index on the replica, or apply the swap by hand; nothing was applied',
      },
    );
  }
}

/**
 * Upserts through a staging table in the delta's own types: filled by LOAD DATA LOCAL INFILE or
 * multi-row INSERTs, checked (values the target would round or refuse, unique clashes), then
 * moved by one `INSERT … SELECT … ON DUPLICATE KEY UPDATE`. Returns the number of rows.
 */
export async function applyStaged(
  session: Session,
  plan: ApplyPlan,
  rows: AsyncIterable<WireRow>,
  strategy: LoadStrategy,
  stageEngine = 'InnoDB',
): Promise<number> {
  return applyStagedWith(
    session,
    plan,
    () =>
      strategy === 'infile'
        ? stageByInfile(session, plan, rows)
        : applyByInsert(session, { ...plan, table: STAGE, onDuplicate: '' }, rows),
    stageEngine,
  );
}

/**
 * The same, with the stage (STAGE, the plan's columns in its own types plus SEQ) filled by
 * `fill`, which returns the number of rows: format 2 fills it from COPY text (copy.ts).
 */
export async function applyStagedWith(
  session: Session,
  plan: ApplyPlan,
  fill: () => Promise<number>,
  stageEngine = 'InnoDB',
): Promise<number> {
  const names = plan.columns.map((c) => quoteIdent(c.name));
  const definitions = names.map((n, i) => `${n} ${plan.stageTypes[i]} NULL`);
  await run(session, `DROP TEMPORARY TABLE IF EXISTS ${STAGE}`);
  await run(
    session,
    `CREATE TEMPORARY TABLE ${STAGE} (${SEQ} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, ${definitions.join(', ')}) ENGINE=${stageEngine}`,
  );
  try {
    const count = await fill();
    const misfit = await findMisfit(session, plan, false);
    if (misfit) throw misfit;
    await refuseUniqueClash(session, plan);
    try {
      await run(
        session,
        `INSERT INTO ${plan.table} (${names.join(', ')}) SELECT ${names.join(', ')} FROM ${STAGE} ORDER BY ${SEQ} ${plan.onDuplicate}`,
        undefined,
        plan.tableName,
      );
    } catch (err) {
      const errno = (err as { errno?: number; cause?: { errno?: number } }).errno;
      const cause = (err as { cause?: { errno?: number; sqlMessage?: string } }).cause;
      if (!DATA_ERRNOS.has(errno ?? cause?.errno ?? 0)) throw err;
      const named = await findMisfit(session, plan, true);
      if (named) throw named;
      const reason = (cause?.sqlMessage ?? (err as Error).message).split('\n')[0];
      throw new DeltaError(`table '${plan.tableName}': the replica refused a row: ${reason}`, {
        hint: 'fix the replica constraint or the source data; nothing was applied',
        cause: err,
      });
    }
    return count;
  } finally {
    if (!session.lostWith) {
      await run(session, `DROP TEMPORARY TABLE IF EXISTS ${STAGE}`).catch(() => undefined);
    }
  }
}

async function refuseWarnings(session: Session, plan: ApplyPlan): Promise<never> {
  const warnings = await run<{ Message: string }[]>(session, 'SHOW WARNINGS LIMIT 3');
  throw new DeltasyncError(
    `table ${plan.tableName}: values do not fit the target columns: ${warnings.map((w) => w.Message).join('; ')}`,
    { hint: 'widen the target columns or fix the source data; nothing was applied' },
  );
}
