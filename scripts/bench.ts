/**
 * The throughput benchmark behind GUIDE.md's bars, measured in one run on this machine:
 *
 *   1. a raw `COPY … TO STDOUT | COPY … FROM STDIN` pipe between two PostgreSQL databases;
 *   2. deltasync end to end into an empty PostgreSQL replica (bins run as cron runs them);
 *   3. the same after touching every source row (an upsert into a full replica);
 *   4. raw `LOAD DATA LOCAL INFILE` into MariaDB against deltasync loading the same deltas;
 *   5. a cycle with nothing to do.
 *
 * Usage: npm run bench -- [--rows N] [--part-rows N] [--json] [--no-mysql] [--keep]
 *
 * Everything it creates (databases, temp dirs) is dropped at the end, on failure and on Ctrl-C
 * too, unless --keep. Progress goes to stderr; the figures to stdout. Exit code 1 when a replica
 * does not match its source, a case misses its bar, or anything fails.
 */
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_TABLES, writeJobConfig, type BenchJob } from './bench/config.js';
import {
  createMysqlDatabase,
  mysqlAggregates,
  mysqlServerVersion,
  rawLoadData,
} from './bench/mysql.js';
import {
  createPgDatabase,
  createPgTable,
  pgCheckpoint,
  pgExportTsv,
  pgFingerprint,
  pgQuery,
  pgServerVersion,
  rawPgPipe,
} from './bench/pg.js';
import {
  benchMain,
  COMMON_OPTIONS,
  commonValues,
  PG_ADMIN_URL,
  progressTo,
  timedStep,
} from './bench/main.js';
import type { Releasers } from './bench/releasers.js';
import { formatReport, makeCase, type BenchReport, type Check } from './bench/report.js';
import type { StepName, StepResult } from './bench/run-step.js';
import {
  COLUMNS,
  PG_AGGREGATES,
  PG_EXPORT_FOR_MYSQL,
  PG_SOURCE_INDEX,
  pgFillSql,
  pgUpdateSql,
  TABLE,
} from './bench/table.js';

const MYSQL_ADMIN_URL = process.env.DELTASYNC_BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

/** GUIDE.md (issue 13): end to end within 1.6x the raw pipe for new rows. */
const INSERT_BAR = 1.6;
/** GUIDE.md: an upsert of every row within 2.5x the raw pipe. */
const UPDATE_BAR = 2.5;
/** GUIDE.md: a MariaDB replica loads within 1.5x raw LOAD DATA. */
const MYSQL_BAR = 1.5;
/** Issue 13: a cron run with nothing to do under 0.4 s per step. */
const IDLE_STEP_SECONDS = 0.4;
/** GUIDE.md: peak memory under 200 MB on any delta size, for every step. */
const PEAK_RSS_MB = 200;

interface Options {
  rows: number;
  partRows: number;
  json: boolean;
  mysql: boolean;
  keep: boolean;
}

const USAGE = `usage: npm run bench -- [--rows N] [--part-rows N] [--json] [--no-mysql] [--keep]
  --rows N        source rows (default 100000)
  --part-rows N   delta.maxRowsPerPart (default 200000)
  --json          print the figures as one JSON object
  --no-mysql      skip the MariaDB half
  --keep          keep the databases and temp dir for inspection
env: DELTASYNC_BENCH_PG_URL, DELTASYNC_BENCH_MYSQL_URL (admin connections)`;

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: { ...COMMON_OPTIONS, 'no-mysql': { type: 'boolean', default: false } },
    strict: true,
  });
  if (values.help) return null;
  return { ...commonValues(values, 100_000), mysql: !values['no-mysql'] };
}

const progress = progressTo('bench');

/** Runs extract, copy and/or load with one config, saying how each went. */
async function runSteps(
  steps: StepName[],
  configFile: string,
  label: string,
): Promise<StepResult[]> {
  const results: StepResult[] = [];
  for (const step of steps) results.push(await timedStep(progress, step, configFile, label));
  return results;
}

async function bench(options: Options, releasers: Releasers): Promise<BenchReport> {
  const n = options.rows;
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name, ok, detail });
    progress(`check ${ok ? 'ok' : 'FAILED'}: ${name}: ${detail}`);
  };
  const sameRows = async (name: string, replicaUrl: string, sourceUrl: string): Promise<void> => {
    const [want, got] = await Promise.all([pgFingerprint(sourceUrl), pgFingerprint(replicaUrl)]);
    check(
      name,
      want === got,
      want === got ? `${n} rows, same fingerprint` : `source ${want}, replica ${got}`,
    );
  };

  const tmp = await mkdtemp(join(tmpdir(), 'dsbench-'));
  releasers.add(`temp dir ${tmp}`, () => rm(tmp, { recursive: true, force: true }));

  // ---- PostgreSQL: source, raw-pipe target, deltasync target.
  const postgres = await pgServerVersion(PG_ADMIN_URL);
  const mariadb = options.mysql ? await mysqlServerVersion(MYSQL_ADMIN_URL) : null;
  const srcUrl = await createPgDatabase(PG_ADMIN_URL, 'src', releasers);
  const rawUrl = await createPgDatabase(PG_ADMIN_URL, 'raw', releasers);
  const dstUrl = await createPgDatabase(PG_ADMIN_URL, 'dst', releasers);
  await Promise.all([createPgTable(srcUrl), createPgTable(rawUrl), createPgTable(dstUrl)]);
  progress(`filling the source with ${n} rows`);
  const fillStart = process.hrtime.bigint();
  await pgQuery(srcUrl, pgFillSql(n), PG_SOURCE_INDEX, `VACUUM ANALYZE ${TABLE}`);
  const fillSeconds = Number(process.hrtime.bigint() - fillStart) / 1e9;

  // ---- 1. The raw pipe.
  await pgCheckpoint(PG_ADMIN_URL);
  const pgPipeSeconds = await rawPgPipe(srcUrl, rawUrl);
  progress(`raw pipe PG -> PG: ${pgPipeSeconds.toFixed(2)} s`);
  await sameRows('raw pipe copied every row', rawUrl, srcUrl);
  const pgRaw = { name: 'raw PG pipe', seconds: pgPipeSeconds };

  // ---- 2. deltasync into an empty replica.
  const dirs = {
    state: join(tmp, 'state'),
    stateMysql: join(tmp, 'state-mysql'),
    outbox: join(tmp, 'outbox'),
    inbox: join(tmp, 'inbox'),
    inboxMysql: join(tmp, 'inbox-mysql'),
  };
  await Promise.all(Object.values(dirs).map((d) => mkdir(d, { recursive: true })));
  const pgJob: BenchJob = {
    name: 'bench',
    stateDir: dirs.state,
    source: { client: 'pg', connection: srcUrl },
    target: { client: 'pg', connection: dstUrl },
    outbox: dirs.outbox,
    destinations: [{ name: 'replica', dir: dirs.inbox }],
    inbox: dirs.inbox,
    tables: BENCH_TABLES,
    delta: { maxRowsPerPart: options.partRows, compression: 'gzip' },
  };
  const pgConfig = await writeJobConfig(join(tmp, 'bench-pg.mjs'), pgJob);

  // The MariaDB replica loads the very same deltas from an inbox of its own: the inbox is
  // snapshotted after each copy, outside the timings, before the PostgreSQL load consumes it.
  const snapshotInbox = () => cp(dirs.inbox, dirs.inboxMysql, { recursive: true, force: true });

  await pgCheckpoint(PG_ADMIN_URL);
  const insertSteps = await runSteps(['extract', 'copy'], pgConfig, 'insert');
  if (options.mysql) await snapshotInbox();
  insertSteps.push(...(await runSteps(['load'], pgConfig, 'insert')));
  await sameRows('deltasync insert: replica = source', dstUrl, srcUrl);
  const cases = [makeCase('pg-insert', 'insert PG -> PG', insertSteps, pgRaw, INSERT_BAR)];

  // ---- 4a. MariaDB: raw LOAD DATA against deltasync load of the same rows.
  let mysqlRaw: { name: string; seconds: number } | undefined;
  let exportTsvSeconds: number | undefined;
  let mysqlConfig: string | undefined;
  let mysqlDstUrl: string | undefined;
  if (options.mysql) {
    const mysqlRawUrl = await createMysqlDatabase(MYSQL_ADMIN_URL, 'raw', releasers);
    mysqlDstUrl = await createMysqlDatabase(MYSQL_ADMIN_URL, 'dst', releasers);
    const tsv = join(tmp, 'bench_rows.tsv');
    exportTsvSeconds = await pgExportTsv(srcUrl, PG_EXPORT_FOR_MYSQL, tsv);
    const loadDataSeconds = await rawLoadData(mysqlRawUrl, tsv);
    await rm(tsv, { force: true });
    progress(`raw LOAD DATA into MariaDB: ${loadDataSeconds.toFixed(2)} s`);
    mysqlRaw = { name: 'raw LOAD DATA', seconds: loadDataSeconds };
    const sourceAggregates = await pgAggregates(srcUrl);
    await sameAggregates(check, 'raw LOAD DATA loaded every row', mysqlRawUrl, sourceAggregates);

    mysqlConfig = await writeJobConfig(join(tmp, 'bench-mysql.mjs'), {
      ...pgJob,
      stateDir: dirs.stateMysql,
      source: undefined,
      target: { client: 'mysql', connection: mysqlDstUrl },
      destinations: [{ name: 'replica', dir: dirs.inboxMysql }],
      inbox: dirs.inboxMysql,
    });
    const steps = await runSteps(['load'], mysqlConfig, 'insert -> MariaDB');
    await sameAggregates(
      check,
      'deltasync insert -> MariaDB: replica = source',
      mysqlDstUrl,
      sourceAggregates,
    );
    cases.push(makeCase('mysql-insert', 'insert -> MariaDB', steps, mysqlRaw, MYSQL_BAR));
  }

  // ---- 3. Every row changed: an upsert into a full replica.
  progress('updating every source row');
  const updateStart = process.hrtime.bigint();
  await pgQuery(srcUrl, pgUpdateSql(n), `VACUUM ANALYZE ${TABLE}`);
  const updateSeconds = Number(process.hrtime.bigint() - updateStart) / 1e9;
  await pgCheckpoint(PG_ADMIN_URL);
  const updateSteps = await runSteps(['extract', 'copy'], pgConfig, 'update');
  if (options.mysql) await snapshotInbox();
  updateSteps.push(...(await runSteps(['load'], pgConfig, 'update')));
  await sameRows('deltasync update: replica = source', dstUrl, srcUrl);
  cases.push(makeCase('pg-update', 'update PG -> PG', updateSteps, pgRaw, UPDATE_BAR));

  // ---- 4b. The same update into MariaDB (no bar is set for it: reported for information).
  if (options.mysql && mysqlConfig && mysqlDstUrl && mysqlRaw) {
    const steps = await runSteps(['load'], mysqlConfig, 'update -> MariaDB');
    await sameAggregates(
      check,
      'deltasync update -> MariaDB: replica = source',
      mysqlDstUrl,
      await pgAggregates(srcUrl),
    );
    cases.push(makeCase('mysql-update', 'update -> MariaDB', steps, mysqlRaw));
  }

  // ---- 5. Nothing to do: what every quiet cron run costs.
  const idleSteps = await runSteps(['extract', 'copy', 'load'], pgConfig, 'idle');
  cases.push(makeCase('idle', 'nothing to do', idleSteps));
  const slowest = Math.max(...idleSteps.map((s) => s.seconds));
  check(
    `idle cycle: each step under ${IDLE_STEP_SECONDS} s`,
    slowest < IDLE_STEP_SECONDS,
    `slowest ${slowest.toFixed(2)} s`,
  );

  const measured = cases.flatMap((c) => c.steps.map((s) => ({ c, s })));
  const heaviest = measured.reduce((a, b) => ((b.s.peakRssMb ?? 0) > (a.s.peakRssMb ?? 0) ? b : a));
  const peak = heaviest.s.peakRssMb;
  check(
    `every step's peak RSS under ${PEAK_RSS_MB} MB`,
    peak !== null && peak < PEAK_RSS_MB,
    peak === null
      ? 'not measured'
      : `highest ${peak.toFixed(0)} MB (${heaviest.c.title}, ${heaviest.s.step})`,
  );

  const ok = checks.every((c) => c.ok) && cases.every((c) => c.withinBar !== false);
  return {
    rows: n,
    columns: COLUMNS.length,
    maxRowsPerPart: options.partRows,
    postgres,
    mariadb,
    cores: availableParallelism(),
    setup: { fillSeconds, updateSeconds, exportTsvSeconds },
    raw: { pgPipeSeconds, mysqlLoadDataSeconds: mysqlRaw?.seconds },
    cases,
    checks,
    ok,
  };
}

async function pgAggregates(url: string): Promise<string[]> {
  return ((await pgQuery(url, PG_AGGREGATES))[0] ?? []).map(String);
}

async function sameAggregates(
  check: (name: string, ok: boolean, detail: string) => void,
  name: string,
  mysqlUrl: string,
  want: string[],
): Promise<void> {
  const got = await mysqlAggregates(mysqlUrl);
  const same = got.length === want.length && got.every((v, i) => v === want[i]);
  check(
    name,
    same,
    same
      ? `${want[0]} rows, same aggregates`
      : `source [${want.join(', ')}], replica [${got.join(', ')}]`,
  );
}

process.exitCode = await benchMain({
  name: 'bench',
  usage: USAGE,
  parse: parseOptions,
  run: bench,
  format: formatReport,
});
