/**
 * Applying deltas to PostgreSQL: the TargetWriter, its transaction and the bookkeeping table.
 * How rows get into a table (COPY, staging, upsert) is `load.ts`.
 *
 * Everything happens inside the one transaction of transaction(fn), together with the applied
 * logId, so a delta lands completely or not at all.
 */
import { ConfigError, DeltaError } from '../../errors.js';
import {
  APPLIED_TABLE,
  type AddedColumnTypes,
  type AppliedRecord,
  type ApplyRowsRequest,
  type ColumnInfo,
  type CopyRowsRequest,
  type DbConfig,
  type DeleteRowsRequest,
  type ReadAllRequest,
  type TargetTransaction,
  type WireRow,
  type TargetColumn,
  type TargetWriter,
} from '../types.js';
import {
  hasUniqueIndex,
  reflectColumns,
  tableExists,
  tableRef,
  type PgColumn,
  type TableRef,
} from './catalog.js';
import { connect, disconnect, run, translateError, type PgConnection } from './connection.js';
import {
  SEQ_COLUMN,
  TableLoader,
  copyPaths,
  copyBatches,
  type CopyPaths,
  type SharedStages,
  copyTextBatches,
  deleteKeys,
} from './load.js';
import { stageColumn } from './stage.js';
import { copyOut, readAllSql } from './read.js';
import { copyDecoder, copyEncoder, quoteIdent } from './types.js';

/** Column types for `load.missingColumns: 'add'` (see AddedColumnTypes). */
const ADDED_COLUMN_TYPES: AddedColumnTypes = {
  int: 'bigint',
  bigint: 'bigint',
  decimal: 'numeric',
  float: 'double precision',
  bool: 'boolean',
  text: 'text',
  binary: 'bytea',
  date: 'date',
  time: 'time',
  timestamp: 'timestamp',
  timestamptz: 'timestamptz',
  json: 'jsonb',
  uuid: 'uuid',
};

/**
 * Session memory for temporary tables (the server's default is 8 MB). A staged batch of about
 * 8 MB of COPY text is 10-12 MB of table: with room for it, the stage is filled and read back in
 * memory rather than written out and read again every batch (1M-row update, with stages in the
 * target's types: the server's CPU about 8% lower).
 */
const STAGE_TEMP_BUFFERS = '32MB';

/**
 * Sizes a fresh session for its stages. Only possible before its first temporary table; a
 * session that already had one (a pooled server connection) keeps its size, and loads the same.
 */
async function connectForStaging(config: DbConfig): Promise<PgConnection> {
  const conn = await connect(config);
  await conn.client.query(`SET temp_buffers = '${STAGE_TEMP_BUFFERS}'`).catch(() => {});
  return conn;
}

/** Shared stages are named `<prefix><backend pid>_<n>` (see PgTarget.sharedStages). */
const SHARED_STAGE_PREFIX = 'deltasync_stage_';
/**
 * Shared stages one transaction may take unless configured (`load.sharedStageBatches`), each a
 * batch of up to 8 MB of COPY text: they hold disk until it ends, so a delta bigger than this
 * (~240 MB of text, ~1.7M rows of the bench's ten columns) loads the rest on one session,
 * whose stage is emptied batch by batch.
 */
const SHARED_STAGE_BATCHES = 32;
/**
 * A table with fewer rows in a delta loads on one session: the second one's setup (connect,
 * probe, a table per batch) costs more than it saves below this (an 8 MB batch is ~55k rows).
 */
const SHARED_STAGE_MIN_ROWS = 50_000;
/** How long dropping the shared stages waits for another session's lock on one. */
const SHARED_STAGE_DROP_WAIT = '5s';

/** Advisory lock class ('delt') serialising loads of one job, whichever host they run on. */
const APPLIED_LOCK_CLASS = 0x64656c74;
/** SQLSTATEs of the replica's constraints refusing a row, and of a missing privilege. */
const FOREIGN_KEY_VIOLATION = '23503';
const INTEGRITY_CONSTRAINT_CLASS = '23';
const INSUFFICIENT_PRIVILEGE = '42501';

/**
 * Relaxes the replica's foreign keys for the rest of the transaction, as PostgreSQL's own logical
 * replication applier does: rows of one delta that reference each other (a manager and their
 * report, Sakila's store and staff) then apply in any order. `session_replication_role = replica`
 * also keeps the replica's ordinary triggers and ON DELETE/UPDATE actions from firing (the source
 * already ran its own and shipped their effects). It needs a superuser or, from PostgreSQL 15,
 * `GRANT SET ON PARAMETER session_replication_role TO <loader>`; without it load goes on with
 * deferrable constraints deferred, and a delta whose rows need the relaxing stops with a
 * ConfigError naming the grant (see constraintError).
 */
async function relaxForeignKeys(conn: PgConnection): Promise<boolean> {
  // Deferrable constraints wait for the commit too: two rows of one delta may swap the values
  // of a unique column (Sakila's store managers), which only holds once both are written.
  await run(conn, 'SET CONSTRAINTS ALL DEFERRED');
  await run(conn, 'SAVEPOINT deltasync_relax');
  try {
    await conn.client.query('SET LOCAL session_replication_role = replica');
    await run(conn, 'RELEASE SAVEPOINT deltasync_relax');
    return true;
  } catch (err) {
    if ((err as { code?: string }).code !== INSUFFICIENT_PRIVILEGE) throw err;
    await run(conn, 'ROLLBACK TO SAVEPOINT deltasync_relax');
    return false;
  }
}

/** A replica constraint that refused a row, as the operator's error (exit 78 or 65). */
function constraintError(err: unknown, conn: PgConnection, relaxed: boolean): unknown {
  const e = err as { code?: string; table?: string; constraint?: string; detail?: string };
  if (typeof e?.code !== 'string' || !e.code.startsWith(INTEGRITY_CONSTRAINT_CLASS)) return err;
  const where = `table '${e.table ?? '?'}'${e.constraint ? ` constraint ${e.constraint}` : ''}`;
  const detail = e.detail ? `: ${e.detail.replace(/\s+/g, ' ')}` : '';
  if (e.code === FOREIGN_KEY_VIOLATION && !relaxed) {
    return new ConfigError(
      `${where} refused a row of the delta${detail}; rows of one delta that reference each other need the replica's foreign keys relaxed`,
      {
        hint: `GRANT SET ON PARAMETER session_replication_role TO ${conn.client.user ?? '<loader>'} (PostgreSQL 15+; or load as a superuser, or make the constraint DEFERRABLE); nothing was applied`,
        cause: err,
      },
    );
  }
  return new DeltaError(`${where} refused a row of the delta${detail}`, {
    hint:
      e.code === '23505'
        ? 'if two rows swap values of a unique column, make that constraint DEFERRABLE on the replica; nothing was applied'
        : 'fix the replica constraint or the source data; nothing was applied',
    cause: err,
  });
}

function checkColumns(
  req: { key: string[]; columns: ColumnInfo[] },
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

class PgTransaction implements TargetTransaction {
  constructor(private readonly writer: PgTarget) {}

  appliedLogId(job: string): Promise<string | null> {
    return this.writer.readApplied(job, true);
  }

  applyRows(request: ApplyRowsRequest): Promise<number> {
    return this.writer.applyRows(request);
  }

  copyRows(request: CopyRowsRequest): Promise<number> {
    return this.writer.copyRows(request);
  }

  async executeDdl(sql: string): Promise<void> {
    await run(this.writer.conn, sql);
  }

  async relaxForeignKeys(): Promise<void> {
    this.writer.relaxed = await relaxForeignKeys(this.writer.conn);
  }

  deleteRows(request: DeleteRowsRequest): Promise<number> {
    return this.writer.deleteRows(request, false);
  }

  deleteRowsNotIn(request: DeleteRowsRequest): Promise<number> {
    return this.writer.deleteRows(request, true);
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
  /**
   * Shared stages to drop when the open transaction ends: its own (see sharedStages), and any
   * an earlier one could not drop.
   */
  private readonly sharedStageNames: string[] = [];
  /** Shared stages the open transaction has taken, of sharedStageBatches. */
  private sharedStagesUsed = 0;
  private readonly sharedStageBatches: number;
  private inTransaction = false;
  /** Whether the open transaction relaxed foreign keys (see relaxForeignKeys). */
  relaxed = false;

  private readonly schema: string | undefined;

  constructor(
    readonly conn: PgConnection,
    /** To open the load's checker connection (see TableLoader). */
    private readonly config: DbConfig,
  ) {
    this.schema = config.schema;
    this.applied = tableRef(APPLIED_TABLE, this.schema);
    this.sharedStageBatches = config.sharedStageBatches ?? SHARED_STAGE_BATCHES;
  }

  readonly ddlInTransaction = true;

  addColumnSql(table: string, column: ColumnInfo): string {
    return `ALTER TABLE ${tableRef(table, this.schema).sql} ADD COLUMN ${quoteIdent(column.name)} ${ADDED_COLUMN_TYPES[column.type]}`;
  }

  async columns(table: string): Promise<TargetColumn[] | null> {
    const columns = await reflectColumns(this.conn, tableRef(table, this.schema));
    return (
      columns?.map(({ name, type, nativeType, generated }) => ({
        name,
        type,
        nativeType,
        ...(generated ? { generated } : {}),
      })) ?? null
    );
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
    await this.dropOrphanedStages();
  }

  /**
   * Drops the shared stages of loads whose session is gone (killed, crashed: nothing else
   * leaves them): UNLOGGED tables named after a backend that no longer exists.
   */
  private async dropOrphanedStages(): Promise<void> {
    const { rows } = await run<{ name: string }>(
      this.conn,
      `SELECT format('%I.%I', n.nspname, c.relname) AS name
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relpersistence = 'u'
          AND c.relname ~ ('^' || $1 || '[0-9]+_[0-9]+$')
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                           WHERE a.pid = substring(c.relname FROM '([0-9]+)_[0-9]+$')::int)`,
      [SHARED_STAGE_PREFIX],
    );
    for (const { name } of rows) {
      await this.conn.client.query(`DROP TABLE IF EXISTS ${name}`).catch(() => {});
    }
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
    const loader = await this.loader(req.table, req.key, req.columns, null, req);
    const stop = { stopped: false };
    const encoders = req.columns.map((c) => copyEncoder(c.type));
    return loader.load(copyBatches(req.rows, encoders, req.table, stop), stop);
  }

  /**
   * Format 2: the part bytes go to COPY as they are, in batches of whole lines (load.ts): into
   * the table while it is empty and every delta column is written, else into the stage and on
   * by the same checks and upsert as applyRows.
   */
  async copyRows(req: CopyRowsRequest): Promise<number> {
    const loader = await this.loader(req.table, req.key, req.columns, req.keep, req);
    const stop = { stopped: false };
    return loader.load(copyTextBatches(req.data, stop), stop);
  }

  /**
   * A loader for `columns` (the delta's, in line order), of which `keep` (indexes; null: all)
   * are written. Refuses a missing table, column or unique key before anything is sent.
   */
  private async loader(
    name: string,
    key: string[],
    columns: ColumnInfo[],
    keep: number[] | null,
    { keepUnchanged = false, expectedRows }: { keepUnchanged?: boolean; expectedRows?: number },
  ): Promise<TableLoader> {
    const table = tableRef(name, this.schema);
    const kept = keep ? keep.map((i) => columns[i]!) : columns;
    const targetColumns = checkColumns(
      { key, columns: kept },
      table,
      await reflectColumns(this.conn, table),
    );
    if (!(await hasUniqueIndex(this.conn, table, key))) {
      throw new ConfigError(
        `target table '${name}' has no primary key or unique index on (${key.join(', ')})`,
        { hint: 'add one (not partial, not deferrable), or fix the key in the job configuration' },
      );
    }
    const written = kept.map((c, i) =>
      stageColumn(c.name, c.type, targetColumns[i]!, c.nativeType),
    );
    const byName = new Map(written.map((c) => [c.name, c]));
    // A skipped column is staged as text (any COPY field parses as text) and never read.
    const stageColumns = columns.map(
      (c) =>
        byName.get(c.name) ?? {
          name: c.name,
          stageType: 'text',
          targetType: 'text',
          check: 'none' as const,
        },
    );
    if (columns.some((c) => c.name === SEQ_COLUMN)) {
      throw new ConfigError(`column name ${SEQ_COLUMN} is reserved`);
    }
    const paths = await this.copyPaths(table, columns, kept, keepUnchanged);
    return new TableLoader(
      this.conn,
      {
        table,
        target: table.sql,
        stage: `pg_temp.${quoteIdent(`deltasync_stage_${++this.stages}`)}`,
        columns: kept.map((c) => c.name),
        key,
        compareAsText: new Set(
          targetColumns.filter((c) => c.fallback || c.typname === 'json').map((c) => c.name),
        ),
        casts: new Map(
          written.filter((c) => c.stageType !== c.targetType).map((c) => [c.name, c.targetType]),
        ),
        stageColumns,
        keyStage: `pg_temp.${quoteIdent(`deltasync_keys_${this.stages}`)}`,
        overriding: targetColumns.some((c) => c.identityAlways),
      },
      paths,
      () => connectForStaging(this.config),
      paths.schema === undefined || (expectedRows ?? Infinity) < SHARED_STAGE_MIN_ROWS
        ? undefined
        : this.sharedStages(paths.schema),
    );
  }

  /**
   * Shared stages beside the target table, named after this session's backend (so a later load
   * can tell a crashed load's leftovers: see prepare) and remembered, to be dropped whatever
   * becomes of the transaction.
   */
  private sharedStages(schema: string): SharedStages {
    return {
      next: () => {
        if (this.sharedStagesUsed >= this.sharedStageBatches) return undefined;
        this.sharedStagesUsed++;
        const name = `${schema}.${quoteIdent(`${SHARED_STAGE_PREFIX}${this.conn.pid}_${++this.stages}`)}`;
        this.sharedStageNames.push(name);
        return name;
      },
    };
  }

  /**
   * Drops the shared stages of the transaction that just ended, waiting a few seconds at most
   * for a session that has locked one (a pg_dump): what is left is tried again when the next
   * transaction ends, or dropped by a later load's prepare once this session is gone.
   */
  private async dropSharedStages(): Promise<void> {
    const names = this.sharedStageNames.splice(0);
    if (names.length === 0) return;
    try {
      await this.conn.client.query(
        `BEGIN; SET LOCAL lock_timeout = '${SHARED_STAGE_DROP_WAIT}'; ` +
          `SET LOCAL client_min_messages = warning; DROP TABLE IF EXISTS ${names.join(', ')}; COMMIT`,
      );
    } catch {
      await this.conn.client.query('ROLLBACK').catch(() => {});
      this.sharedStageNames.push(...names);
    }
  }

  /**
   * The COPY paths open to a load of `kept` of `columns`. A skipped column cannot be left out
   * of a COPY of whole lines: staged then. Rows that must stay unless changed are not replaced.
   */
  private async copyPaths(
    table: TableRef,
    columns: ColumnInfo[],
    kept: ColumnInfo[],
    keepUnchanged: boolean,
  ): Promise<CopyPaths> {
    const paths = await copyPaths(
      this.conn,
      table,
      kept.map((c) => c.name),
      this.relaxed,
    );
    if (paths.upsertRules.length > 0) throw this.rulesError(table, paths.upsertRules);
    if (kept.length !== columns.length) return { ...paths, direct: false, replace: false };
    return keepUnchanged ? { ...paths, replace: false } : paths;
  }

  /**
   * A table with rules on INSERT or UPDATE (the pagila schema routes payments into monthly
   * tables with them): its rows go in by the upsert, which PostgreSQL refuses there. Relaxed,
   * a load writes as a replication applier and only rules enabled ALWAYS or REPLICA fire.
   */
  private rulesError(table: TableRef, rules: string[]): ConfigError {
    const named = `target table '${table.name}' has rules on INSERT or UPDATE (${rules.join(', ')}), and PostgreSQL refuses the upsert load writes with (INSERT … ON CONFLICT) on such a table`;
    const each = rules.length > 1 ? ', and so on for each' : '';
    const disable = `disable them on the replica (ALTER TABLE ${table.sql} DISABLE RULE ${quoteIdent(rules[0]!)}${each})`;
    const hint = this.relaxed
      ? `these rules are enabled ALWAYS or REPLICA, so they fire for load too: ${disable}, or ENABLE them (fire only outside replication); nothing was applied`
      : `GRANT SET ON PARAMETER session_replication_role TO ${this.conn.client.user ?? '<loader>'} (PostgreSQL 15+), or load as a superuser: load then writes as a replication applier, which the replica's rules leave alone as its triggers do; or ${disable}; nothing was applied`;
    return new ConfigError(named, { hint });
  }

  /** Deletes the rows with the given keys, or with `notIn` every row whose key is not given. */
  async deleteRows(req: DeleteRowsRequest, notIn: boolean): Promise<number> {
    const table = tableRef(req.table, this.schema);
    const columns = await reflectColumns(this.conn, table);
    if (!columns) throw new ConfigError(`target table '${req.table}' does not exist`);
    const names = new Set(columns.map((c) => c.name));
    const missing = req.key.filter((k) => !names.has(k.name)).map((k) => k.name);
    if (missing.length > 0) {
      throw new ConfigError(`target table '${req.table}' has no column ${missing.join(', ')}`);
    }
    const stop = { stopped: false };
    const encoders = req.key.map((k) => copyEncoder(k.type));
    return deleteKeys(
      this.conn,
      table,
      `pg_temp.${quoteIdent(`deltasync_delete_${++this.stages}`)}`,
      req.key.map((k) => k.name),
      copyBatches(req.rows, encoders, req.table, stop),
      notIn,
    );
  }

  /** Every row ordered by key, in one statement (so one snapshot), for verify. */
  async *readAll(req: ReadAllRequest): AsyncGenerator<WireRow> {
    const decoders = req.columns.map((c) => copyDecoder(c.type));
    const sql = readAllSql(req, tableRef(req.table, this.schema));
    for await (const rows of copyOut(this.conn, sql, decoders, req.table)) {
      for (const row of rows) yield row;
    }
  }

  async execute(sql: string): Promise<void> {
    await run(this.conn, sql);
  }

  async transaction<T>(fn: (tx: TargetTransaction) => Promise<T>): Promise<T> {
    if (this.inTransaction) throw new Error('PostgreSQL target transactions do not nest');
    this.inTransaction = true;
    try {
      // Explicitly: the shared stages a second connection commits must be visible to each
      // statement of this transaction, whatever default_transaction_isolation says.
      await run(this.conn, 'BEGIN ISOLATION LEVEL READ COMMITTED');
      this.sharedStagesUsed = 0;
      try {
        this.relaxed = false;
        const result = await fn(new PgTransaction(this));
        // Deferred constraints are checked here: a refusal is the delta's, not a lost server.
        await this.conn.client.query('COMMIT');
        return result;
      } catch (err) {
        // On a lost connection there is nothing to roll back: the server already did.
        await this.conn.client.query('ROLLBACK').catch(() => {});
        throw translateError(constraintError(err, this.conn, this.relaxed), this.conn);
      }
    } finally {
      this.inTransaction = false;
      await this.dropSharedStages();
    }
  }

  async close(): Promise<void> {
    await disconnect(this.conn);
  }
}

/** Opens a writer; throws UnavailableError when PostgreSQL cannot be reached. */
export async function openPgTarget(config: DbConfig): Promise<TargetWriter> {
  return new PgTarget(await connectForStaging(config), config);
}
