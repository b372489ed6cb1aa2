/**
 * scripts/soak: a real workload from a client we did not write. Sets up pgbench's tables in a
 * throwaway PostgreSQL source, seeds a throwaway replica, installs deltasync's change capture on
 * them, then runs `pgbench` for a bounded time while extract, copy and load run in a loop (as cron
 * would, only faster), catches up, and runs `deltasync verify`. Exit 0 only if verify reports the
 * replica equal to the source.
 *
 *   scripts/soak [--seconds 60] [--clients 4] [--scale 1] [--keep]
 *
 * pgbench_history has no key (it is append-only), so it is not replicated; the three keyed tables
 * are. Traffic goes to 127.0.0.1 only.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL =
  process.env.DELTASYNC_SOAK_PG_URL ??
  process.env.DELTASYNC_TEST_PG_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres';
const TABLES = ['pgbench_branches', 'pgbench_tellers', 'pgbench_accounts'];
const KEYS: Record<string, string> = {
  pgbench_branches: 'bid',
  pgbench_tellers: 'tid',
  pgbench_accounts: 'aid',
};

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i === -1) return fallback;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} needs a positive number`);
  return n;
}

function withDb(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

function bin(
  name: string,
  args: string[],
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', name), ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function step(name: string, config: string): void {
  const r = bin(name, ['-c', config]);
  // 75: the previous loop iteration still holds the lock; not possible here, but harmless.
  if (r.code !== 0 && r.code !== 75)
    throw new Error(`${name} exited ${r.code}: ${r.stderr.trim()}`);
}

async function main(): Promise<number> {
  const seconds = arg('seconds', 60);
  const clients = arg('clients', 4);
  const scale = arg('scale', 1);
  const keep = process.argv.includes('--keep');
  const tag = `${process.pid}_${Date.now() % 100000}`;
  const srcDb = `soak_src_${tag}`;
  const dstDb = `soak_dst_${tag}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-soak-'));
  try {
    await admin.query(`CREATE DATABASE ${srcDb}`);
    await admin.query(`CREATE DATABASE ${dstDb}`);
    const srcUrl = withDb(ADMIN_URL, srcDb);
    const dstUrl = withDb(ADMIN_URL, dstDb);

    console.log(`soak: pgbench -i -s ${scale} into ${srcDb}`);
    const init = spawnSync('pgbench', ['-i', '-q', '-s', String(scale), srcUrl], {
      encoding: 'utf8',
    });
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);

    // Seed the replica with the initial rows, as an operator would (pg_dump, or COPY like this).
    const src = new pg.Client({ connectionString: srcUrl });
    const dst = new pg.Client({ connectionString: dstUrl });
    await src.connect();
    await dst.connect();
    await dst.query(`
      CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
      CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
      CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));`);
    for (const t of TABLES) {
      const { rows } = await src.query(`SELECT * FROM ${t}`);
      for (let i = 0; i < rows.length; i += 5000) {
        const chunk = rows.slice(i, i + 5000);
        const cols = Object.keys(chunk[0] as object);
        const values: unknown[] = [];
        const tuples = chunk.map(
          (r, j) =>
            `(${cols.map((c, k) => (values.push((r as Record<string, unknown>)[c]), `$${j * cols.length + k + 1}`)).join(',')})`,
        );
        await dst.query(`INSERT INTO ${t} (${cols.join(',')}) VALUES ${tuples.join(',')}`, values);
      }
    }

    mkdirSync(join(dir, 'inbox'));
    const config = join(dir, 'soak.js');
    writeFileSync(
      config,
      `export default ${JSON.stringify(
        {
          name: 'soak',
          stateDir: join(dir, 'state'),
          source: { client: 'pg', connection: srcUrl },
          target: { client: 'pg', connection: dstUrl },
          outbox: join(dir, 'outbox'),
          destinations: [{ name: 'replica', dir: join(dir, 'inbox') }],
          inbox: join(dir, 'inbox'),
          tables: TABLES.map((name) => ({ name, key: [KEYS[name]], mode: 'changelog' })),
          delta: { maxRowsPerPart: 20000, maxRowsPerDelta: 50000 },
          log: { file: join(dir, 'soak.log') },
        },
        null,
        2,
      )};\n`,
    );
    const capture = bin('deltasync', ['capture', '--apply', '-c', config]);
    if (capture.code !== 0) throw new Error(`capture --apply failed: ${capture.stderr}`);

    console.log(`soak: pgbench -T ${seconds} -c ${clients} while extract → copy → load loop`);
    const bench = spawn(
      'pgbench',
      ['-n', '-T', String(seconds), '-c', String(clients), '-j', '2', srcUrl],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let benchOut = '';
    bench.stdout.on('data', (d: Buffer) => (benchOut += d.toString()));
    bench.stderr.on('data', (d: Buffer) => (benchOut += d.toString()));
    const benchDone = new Promise<number | null>((done) => bench.on('close', done));
    let running = true;
    void benchDone.then(() => (running = false));
    let loops = 0;
    while (running) {
      for (const s of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) step(s, config);
      loops++;
      await new Promise((r) => setTimeout(r, 500));
    }
    const benchCode = await benchDone;
    if (benchCode !== 0) throw new Error(`pgbench failed (${benchCode}): ${benchOut}`);
    const tps = /tps = ([\d.]+)/.exec(benchOut)?.[1];
    // Catch up: everything pgbench committed is now behind a stable high-water mark.
    for (let i = 0; i < 2; i++)
      for (const s of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) step(s, config);
    const { rows: changes } = await src.query('SELECT count(*)::int AS n FROM deltasync_changelog');
    await src.end();
    await dst.end();

    const verify = bin('deltasync', ['verify', '-c', config]);
    console.log(
      `soak: ${loops} loops during pgbench (${tps ?? '?'} tps), ${changes[0].n} changes captured`,
    );
    console.log(verify.stdout.trim());
    if (verify.code !== 0) {
      console.error(`soak: verify exited ${verify.code}: ${verify.stderr.trim()}`);
      return 1;
    }
    console.log('soak: the replica matches the source');
    return 0;
  } finally {
    if (!keep) {
      await admin.query(`DROP DATABASE IF EXISTS ${srcDb} WITH (FORCE)`).catch(() => undefined);
      await admin.query(`DROP DATABASE IF EXISTS ${dstDb} WITH (FORCE)`).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    } else {
      console.log(`soak: kept ${srcDb}, ${dstDb} and ${dir}`);
    }
    await admin.end();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`soak failed: ${err.message}`);
    process.exit(1);
  },
);
