/**
 * Format 2 on MariaDB/MySQL: canonical COPY text (docs/format.md) loaded with `LOAD DATA LOCAL
 * INFILE` with FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n', without
 * parsing rows in JavaScript. The escapes it reads otherwise are fixed in the bytes
 * (copy-escapes.ts); values whose text it reads otherwise (booleans `t`/`f`, binary `\x`hex,
 * timestamps with zone `…+00`) by `SET` expressions on @variables.
 *
 * Into an empty table the lines go straight in (REPLACE: the last line of a key wins), and the
 * value-fit checks of the stage (stage.ts) run in the statement itself: the first line a column
 * would not hold unchanged, or a NULL for a NOT NULL column, is captured in a user variable with
 * its key, so the refusal names table, key, column, value and type as the stage's does.
 */
import { Readable } from 'node:stream';
import type { ResultSetHeader } from 'mysql2';
import { DeltaError, DeltasyncError } from '../../errors.js';
import { misfitError } from '../misfit.js';
import type { ColumnInfo } from '../types.js';
import { run, translateError, type Session } from './connection.js';
import { loadDataChunks } from './copy-escapes.js';
import { DATA_ERRNOS, drained, type ApplyPlan } from './load.js';
import { quoteIdent } from './types.js';

/** The user variable holding the first misfit of a direct load: [column index, value, key…]. */
const MISFIT_VAR = '@deltasync_misfit';

/** MySQL 8's warning that assigning user variables in expressions is deprecated (it works). */
const DEPRECATED_SYNTAX = 1287;

// ---------------------------------------------------------------- the statement

/** What copyLoadSql needs of the plan of the kept columns (in `keep` order). */
export type CopyPlan = Pick<ApplyPlan, 'columns' | 'encoders' | 'key' | 'quiet' | 'stageTypes'>;

/**
 * `LOAD DATA` of COPY text whose lines hold `columns`, into `table` (the stage or the target,
 * whose columns are named as the delta's); columns not in `keep` are read into @dummy.
 * `direct`: straight into the target, REPLACE (the last line of a key wins, as the stage's
 * ordered upsert). Every kept field is then read into a variable, so that when the server
 * refuses a line its values are still there to name; and the checks of what the server would
 * let through quietly are captured in MISFIT_VAR.
 */
export function copyLoadSql(
  table: string,
  columns: ColumnInfo[],
  keep: number[],
  plan: CopyPlan,
  direct: boolean,
): string {
  const kept = new Map(keep.map((index, j) => [index, j]));
  const targets: string[] = [];
  const sets: string[] = [];
  /** Per kept column: the SQL of its value, when it is read into a variable. */
  const values: (string | null)[] = plan.columns.map(() => null);
  columns.forEach((column, index) => {
    const j = kept.get(index);
    if (j === undefined) {
      targets.push('@dummy');
      return;
    }
    const v = `@v${index}`;
    const expression = setExpression(column, v, plan.encoders[j]!.viaUnsigned);
    if (expression === null && !direct) {
      targets.push(quoteIdent(plan.columns[j]!.name));
      return;
    }
    targets.push(v);
    values[j] = expression ?? v;
  });
  const capture = direct ? captureExpression(plan, values) : null;
  plan.columns.forEach((column, j) => {
    const value = values[j];
    if (value === null) return;
    if (capture && column.name === plan.key[0]) {
      // The capture rides on the first key column's assignment, made first.
      sets.unshift(`${quoteIdent(column.name)} = IF(${capture} IS NULL, ${value}, ${value})`);
    } else {
      sets.push(`${quoteIdent(column.name)} = ${value}`);
    }
  });
  return (
    `LOAD DATA LOCAL INFILE 'deltasync-copy' ${direct ? 'REPLACE ' : ''}INTO TABLE ${table}` +
    ` CHARACTER SET utf8mb4` +
    ` FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'` +
    ` (${targets.join(', ')})` +
    (sets.length > 0 ? ` SET ${sets.join(', ')}` : '')
  );
}

/** The type to CAST a value to for the stage's checks: the stage type, as CAST spells it. */
function castType(stageType: string): string {
  if (stageType === 'BIGINT' || stageType === 'TINYINT') return 'SIGNED';
  if (stageType.startsWith('LONGTEXT') || stageType.startsWith('CHAR(')) {
    return 'CHAR CHARACTER SET utf8mb4';
  }
  if (stageType === 'LONGBLOB') return 'BINARY';
  return stageType; // DECIMAL(65,n), DOUBLE, DATE, TIME(6), DATETIME(6)
}

/**
 * Keeps in MISFIT_VAR, once per load, the first line whose value a column would not hold
 * unchanged and the server would take quietly (the stage's conditions, on the line's value cast
 * to the stage type), as JSON [column index, value, key values…]; null while none.
 */
function captureExpression(plan: CopyPlan, values: (string | null)[]): string | null {
  const keyValues = plan.key.map((k) => values[plan.columns.findIndex((c) => c.name === k)]!);
  const whens: string[] = [];
  plan.columns.forEach((column, j) => {
    const value = values[j];
    const quiet = plan.quiet[j];
    if (value === null || !quiet) return;
    const staged = `CAST(${value} AS ${castType(plan.stageTypes[j]!)})`;
    const condition = quiet.split(`s.${quoteIdent(column.name)}`).join(staged);
    // Binary values are shown as the line has them (`\x…`), not as bytes.
    const shown =
      column.type === 'binary' ? value.replace(/^UNHEX\(SUBSTRING\((@v\d+), 3\)\)$/, '$1') : value;
    whens.push(`WHEN ${condition} THEN JSON_ARRAY(${j}, ${shown}, ${keyValues.join(', ')})`);
  });
  if (whens.length === 0) return null;
  return `(${MISFIT_VAR} := COALESCE(${MISFIT_VAR}, CASE ${whens.join(' ')} END))`;
}

/** How a field read into `v` becomes the column's value, or null when it is read as it is. */
function setExpression(column: ColumnInfo, v: string, viaUnsigned: boolean): string | null {
  switch (column.type) {
    case 'bool':
      // Anything but t/f becomes a warning, which refuses the load, not a quiet 0.
      return `CASE ${v} WHEN 't' THEN 1 WHEN 'f' THEN 0 ELSE CAST(${v} AS SIGNED) END`;
    case 'binary':
      // `\x0aff` (LOAD DATA has unescaped `\\x`): the hex after the prefix.
      return `UNHEX(SUBSTRING(${v}, 3))`;
    case 'timestamptz':
      // Canonical text is the UTC wall clock and `+00`; the session's time zone is UTC. Another
      // zone stays in the text, which the server then refuses.
      return `IF(RIGHT(${v}, 3) = '+00', LEFT(${v}, CHAR_LENGTH(${v}) - 3), ${v})`;
    case 'bigint':
    case 'int':
      // A BIT column would take the digits' bytes.
      return viaUnsigned ? `CAST(${v} AS UNSIGNED)` : null;
    default:
      return null;
  }
}

// ---------------------------------------------------------------- running it

/** MariaDB names the column `db`.`table`.`column` in some messages: the column is enough. */
function cleanMessage(message: string): string {
  return message.replace(/`[^`]*`\.`[^`]*`\.`([^`]*)`/g, "'$1'");
}

function refusal(plan: ApplyPlan, message: string, cause?: unknown): DeltaError {
  const row = /at row (\d+)/.exec(message);
  const where = row ? `line ${row[1]} of its rows in the delta` : 'a row of the delta';
  return new DeltaError(
    `table '${plan.tableName}': the replica cannot take ${where}: ${cleanMessage(message).replace(/ at row \d+$/, '')}`,
    {
      hint: 'widen the replica column or fix the source value (MariaDB/MySQL store no NaN or infinities); nothing was applied',
      cause,
    },
  );
}

/** The misfit a direct load captured, as the stage's DeltaError; or null. */
async function capturedMisfit(session: Session, plan: ApplyPlan): Promise<DeltaError | null> {
  const [row] = await run<{ m: string | null }[]>(session, `SELECT ${MISFIT_VAR} AS m`);
  if (!row?.m) return null;
  const [index, value, ...keyValues] = JSON.parse(row.m) as [number, unknown, ...unknown[]];
  return misfitError({
    table: plan.tableName,
    key: plan.key,
    values: keyValues,
    column: plan.columns[index]!.name,
    value: value === null ? null : String(value),
    targetType: plan.targetTypes[index]!,
  });
}

/** Errors of one value and the column they name: `column 'c'` or `column `db`.`t`.`c``. */
const VALUE_ERRNOS = new Set([1048, 1264, 1265, 1292, 1366, 1406]);
const NAMED_COLUMN = /column (?:`[^`]*`\.`[^`]*`\.`([^`]*)`|'([^']*)')/i;

/**
 * The line a direct load's error names, as the stage's DeltaError: every field was read into a
 * variable, and the variables still hold that line (the server stops at it). Null when the
 * error names no column of the plan.
 */
async function refusedLine(
  session: Session,
  plan: ApplyPlan,
  keep: number[],
  errno: number,
  message: string,
): Promise<DeltaError | null> {
  const named = VALUE_ERRNOS.has(errno) ? NAMED_COLUMN.exec(message) : null;
  const index = named ? plan.columns.findIndex((c) => c.name === (named[1] ?? named[2])) : -1;
  if (index < 0) return null;
  // A kept column's variable is @v + its place in the line (copyLoadSql).
  const variables = [
    index,
    ...plan.key.map((k) => plan.columns.findIndex((c) => c.name === k)),
  ].map((j) => `@v${keep[j]}`);
  const [row] = await run<Record<string, unknown>[]>(
    session,
    `SELECT ${variables.map((v, i) => `${v} AS c${i}`).join(', ')}`,
  );
  if (!row) return null;
  return misfitError({
    table: plan.tableName,
    key: plan.key,
    values: plan.key.map((_, i) => row[`c${i + 1}`]),
    column: plan.columns[index]!.name,
    value: errno === 1048 || row.c0 === null ? null : String(row.c0),
    targetType: plan.targetTypes[index]!,
  });
}

/**
 * Runs `sql` (from copyLoadSql) with the data as its file; returns the number of lines. A line
 * the direct load's checks caught, a value the server reads with a warning (LOCAL turns errors
 * into warnings unless REPLACE) or an error refuses the load with a one-line DeltaError.
 * `direct`: the `keep` of a direct load's copyLoadSql.
 */
export async function loadCopyText(
  session: Session,
  plan: ApplyPlan,
  sql: string,
  data: AsyncIterable<Buffer>,
  direct?: number[],
): Promise<number> {
  if (direct) await run(session, `SET ${MISFIT_VAR} = NULL`);
  const socket = (session.core as unknown as { stream: NodeJS.WritableStream }).stream;
  async function* paced(): AsyncGenerator<Buffer> {
    for await (const chunk of loadDataChunks(data)) {
      // The driver writes each chunk to the socket without asking: wait until it can take more.
      await drained(socket);
      yield chunk;
    }
  }
  let source: Readable | undefined;
  let header: ResultSetHeader;
  try {
    [header] = await session.conn.query<ResultSetHeader>({
      sql,
      infileStreamFactory: () => (source = Readable.from(paced(), { objectMode: false })),
    });
  } catch (err) {
    // The data's own error (a bad checksum, say) is the one the caller must see.
    const cause = session.lostWith ?? err;
    if (cause instanceof DeltasyncError || session.lostWith) {
      throw translateError(cause, session.where, plan.tableName, session);
    }
    const errno = (cause as { errno?: number }).errno;
    if (errno !== undefined && DATA_ERRNOS.has(errno)) {
      const message = (cause as { sqlMessage?: string }).sqlMessage ?? '';
      const misfit = direct
        ? ((await capturedMisfit(session, plan)) ??
          (await refusedLine(session, plan, direct, errno, message)))
        : null;
      throw misfit ?? refusal(plan, message, cause);
    }
    throw translateError(cause, session.where, plan.tableName, session);
  } finally {
    source?.destroy();
  }
  const misfit = direct ? await capturedMisfit(session, plan) : null;
  if (misfit) throw misfit;
  if (header.warningStatus > 0) {
    const warnings = await run<{ Code: number; Message: string }[]>(session, 'SHOW WARNINGS');
    const first = warnings.find((w) => Number(w.Code) !== DEPRECATED_SYNTAX);
    if (first) throw refusal(plan, first.Message);
  }
  const records = /Records: (\d+)/.exec(header.info ?? '');
  return records ? Number(records[1]) : header.affectedRows;
}
