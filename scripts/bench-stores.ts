/**
 * The per-store benchmark (issue 10): what copying and loading one large delta costs through each
 * kind of store. One PostgreSQL source table is extracted once into a local outbox; then, for a
 * directory, an SFTP server and an S3 gateway in turn, the real `deltasync-copy` pushes that delta
 * there and the real `deltasync-load` pulls it from there into a fresh PostgreSQL replica, which
 * must then equal the source.
 *
 * SFTP and S3 are the CI services (scripts/ci-sshd.sh, scripts/ci-radosgw.sh): both on loopback,
 * so the figures are the store code's and the servers' cost, not a network's. A store whose
 * service is not running is skipped with a line saying so.
 *
 * Usage: npm run bench:stores -- [--rows N] [--part-rows N] [--stores dir,sftp,s3] [--json] [--keep]
 *
 * Everything it creates (databases, temp dirs, the SFTP directory, the S3 objects and bucket) is
 * removed at the end, on failure and on Ctrl-C too, unless --keep. Progress goes to stderr; the
 * figures to stdout. Exit code 1 when a replica differs from its source or anything fails.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_TABLES, writeJobConfig, type BenchJob } from './bench/config.js';
import {
  createPgDatabase,
  createPgTable,
  pgCheckpoint,
  pgFingerprint,
  pgQuery,
  pgServerVersion,
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
import { formatStoreReport, type StoreCase, type StoreReport } from './bench/report.js';
import { setUpStore, STORE_KINDS, type StoreKind } from './bench/stores.js';
import { COLUMNS, PG_SOURCE_INDEX, pgFillSql, TABLE } from './bench/table.js';

interface Options {
  rows: number;
  partRows: number;
  stores: StoreKind[];
  json: boolean;
  keep: boolean;
}

const USAGE = `usage: npm run bench:stores -- [--rows N] [--part-rows N] [--stores dir,sftp,s3] [--json] [--keep]
  --rows N        source rows (default 1000000)
  --part-rows N   delta.maxRowsPerPart (default 200000)
  --stores LIST   which stores, comma-separated (default dir,sftp,s3)
  --json          print the figures as one JSON object
  --keep          keep the databases, temp dirs and store locations for inspection
env: DELTASYNC_BENCH_PG_URL (admin connection), DELTASYNC_CI_DIR (the CI services' env files)`;

function storeList(value: string | undefined): StoreKind[] {
  if (value === undefined) return STORE_KINDS;
  const kinds = value.split(',').map((s) => s.trim());
  const unknown = kinds.filter((k) => !(STORE_KINDS as string[]).includes(k));
  if (unknown.length > 0 || kinds.length === 0)
    throw new Error(`--stores takes ${STORE_KINDS.join(', ')}; got '${value}'`);
  return kinds as StoreKind[];
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: { ...COMMON_OPTIONS, stores: { type: 'string' } },
    strict: true,
  });
  if (values.help) return null;
  return { ...commonValues(values, 1_000_000), stores: storeList(values.stores) };
}

const progress = progressTo('bench:stores');

/** Copies the outbox's delta to one store and loads it from there into a fresh replica. */
async function benchStore(
  kind: StoreKind,
  base: BenchJob,
  sourceUrl: string,
  tmp: string,
  releasers: Releasers,
): Promise<StoreCase> {
  const store = await setUpStore(kind, releasers);
  if ('skip' in store) {
    progress(`${kind}: SKIPPED: ${store.skip}`);
    return { store: kind, where: null, skipped: store.skip };
  }
  const result: StoreCase = { store: kind, where: store.spec.url };
  try {
    const replicaUrl = await createPgDatabase(PG_ADMIN_URL, `dst_${kind}`, releasers);
    await createPgTable(replicaUrl);
    // Its own state dir: copy starts from nothing at this destination, load from nothing.
    const stateDir = join(tmp, `state-${kind}`);
    await mkdir(stateDir);
    const config = await writeJobConfig(join(tmp, `bench-${kind}.mjs`), {
      ...base,
      stateDir,
      target: { client: 'pg', connection: replicaUrl },
      destinations: [{ name: kind, ...store.spec }],
      inbox: store.spec,
    });
    await pgCheckpoint(PG_ADMIN_URL);
    result.copy = await timedStep(progress, 'copy', config, kind);
    await pgCheckpoint(PG_ADMIN_URL);
    result.load = await timedStep(progress, 'load', config, kind);
    const [want, got] = await Promise.all([pgFingerprint(sourceUrl), pgFingerprint(replicaUrl)]);
    result.same = want === got;
    progress(
      `${kind}: replica ${result.same ? 'equals the source' : `DIFFERS: source ${want}, replica ${got}`}`,
    );
  } catch (err) {
    result.failed = (err as Error).message;
    progress(`${kind}: FAILED: ${result.failed}`);
  }
  return result;
}

async function bench(options: Options, releasers: Releasers): Promise<StoreReport> {
  const tmp = await mkdtemp(join(tmpdir(), 'dsbench-stores-'));
  releasers.add(`temp dir ${tmp}`, () => rm(tmp, { recursive: true, force: true }));

  const postgres = await pgServerVersion(PG_ADMIN_URL);
  const sourceUrl = await createPgDatabase(PG_ADMIN_URL, 'src', releasers);
  await createPgTable(sourceUrl);
  progress(`filling the source with ${options.rows} rows`);
  const fillStart = process.hrtime.bigint();
  await pgQuery(sourceUrl, pgFillSql(options.rows), PG_SOURCE_INDEX, `VACUUM ANALYZE ${TABLE}`);
  const fillSeconds = Number(process.hrtime.bigint() - fillStart) / 1e9;

  const base: BenchJob = {
    name: 'bench',
    stateDir: join(tmp, 'state-extract'),
    source: { client: 'pg', connection: sourceUrl },
    outbox: join(tmp, 'outbox'),
    tables: BENCH_TABLES,
    delta: { maxRowsPerPart: options.partRows, compression: 'gzip' },
  };
  await Promise.all([mkdir(base.stateDir), mkdir(base.outbox)]);
  const extractConfig = await writeJobConfig(join(tmp, 'bench-extract.mjs'), base);
  await pgCheckpoint(PG_ADMIN_URL);
  const extract = await timedStep(progress, 'extract', extractConfig, 'outbox');
  const bytes = extract.summary.bytes ?? 0;

  const stores: StoreCase[] = [];
  for (const kind of options.stores) {
    stores.push(await benchStore(kind, base, sourceUrl, tmp, releasers));
  }
  return {
    rows: options.rows,
    columns: COLUMNS.length,
    maxRowsPerPart: options.partRows,
    postgres,
    cores: availableParallelism(),
    setup: { fillSeconds },
    extract,
    bytes,
    stores,
    ok: stores.every((s) => s.skipped !== undefined || s.same === true),
  };
}

process.exitCode = await benchMain({
  name: 'bench:stores',
  usage: USAGE,
  parse: parseOptions,
  run: bench,
  format: formatStoreReport,
});
