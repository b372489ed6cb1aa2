/**
 * The core pipeline end to end through the real bins, on SQLite: extract → copy → load, status,
 * simulated deltas, several destinations, and the quiet paths cron relies on.
 */
import { existsSync, readdirSync, readFileSync, rmSync, mkdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runBin, sqliteJob, summaryOf, type SqliteJob } from '../helpers/cli.js';

let job: SqliteJob;
afterEach(() => job?.cleanup());

function cycle(j: SqliteJob): void {
  for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
    const r = runBin(bin, ['-c', j.config]);
    expect(r.stderr, `${bin} stderr`).toBe('');
    expect(r.code, `${bin} exit code`).toBe(0);
  }
}

describe('extract → copy → load', () => {
  it('follows inserts and updates, one delta per run, and does nothing when nothing changed', () => {
    job = sqliteJob();
    for (let i = 1; i <= 7; i++)
      job.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', i, `item ${i}`, i * 10, i);
    cycle(job);
    expect(job.targetRows()).toHaveLength(7);

    job.sourceExec('UPDATE items SET qty = 99, log_id = 8 WHERE id = 2');
    job.sourceExec("INSERT INTO items VALUES (8, '', NULL, 9)");
    cycle(job);
    const rows = job.targetRows() as { id: number; name: string | null; qty: number | null }[];
    expect(rows).toHaveLength(8);
    expect(rows[1]).toMatchObject({ id: 2, qty: 99 });
    expect(rows[7]).toMatchObject({ id: 8, name: '', qty: null });

    const manifests = readdirSync(job.outbox).filter((f) => f.endsWith('.MANIFEST.json'));
    expect(manifests).toEqual([
      'logId00000000000000000007.MANIFEST.json',
      'logId00000000000000000009.MANIFEST.json',
    ]);
    // 7 rows with maxRowsPerPart 3: three parts.
    expect(
      readdirSync(job.outbox).filter((f) => f.startsWith('logId00000000000000000007.items.')),
    ).toHaveLength(3);

    const again = runBin('deltasync-extract', ['-c', job.config]);
    expect(again.code).toBe(0);
    expect(summaryOf(again.stdout)).toMatchObject({ step: 'extract', delta: null, rows: 0 });
    expect(readdirSync(job.outbox).filter((f) => f.endsWith('.MANIFEST.json'))).toHaveLength(2);
    const idle = runBin('deltasync-load', ['-c', job.config]);
    expect(idle.code).toBe(0);
    expect(summaryOf(idle.stdout)).toMatchObject({ step: 'load', deltas: 0, rows: 0 });
  });

  it('prints one summary line per run with rows, bytes and seconds', () => {
    job = sqliteJob();
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    const r = runBin('deltasync-extract', ['-c', job.config]);
    const summary = summaryOf(r.stdout)!;
    expect(summary).toMatchObject({
      step: 'extract',
      delta: 'logId00000000000000000005.MANIFEST.json',
      rows: 1,
      tables: 1,
    });
    expect(summary.bytes).toBeGreaterThan(0);
    expect(typeof summary.seconds).toBe('number');
    expect(summary.maxRssMb).toBeGreaterThan(0);
  });

  it('status shows each step, its logId and what is waiting, as text and --json', () => {
    job = sqliteJob();
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
    const json = runBin('deltasync', ['status', '-c', job.config, '--json']);
    expect(json.code).toBe(0);
    const s = JSON.parse(json.stdout) as {
      job: string;
      steps: { step: string; logId: string; waiting?: number }[];
    };
    expect(s.job).toBe('t');
    expect(s.steps.map((x) => [x.step, x.logId, x.waiting])).toEqual([
      ['extract', '5', undefined],
      ['copy.main', '0', 1],
      ['load', '0', 0],
    ]);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    const text = runBin('deltasync', ['status', '-c', job.config]);
    // step, last logId, last success, last run, waiting, lag (none: nothing applied yet)
    expect(text.stdout).toMatch(/^load\s+0\s+never\s+never\s+1 \(up to 5\)\s+-$/m);
  });
});

/** A job with no source database: one `items` table whose logId column has the given type. */
function simulatedItemsJob(logIdType: 'int' | 'bigint') {
  return sqliteJob({
    source: undefined,
    tables: [
      {
        name: 'items',
        key: ['id'],
        logIdColumn: 'log_id',
        columns: [
          { name: 'id', type: 'bigint' },
          { name: 'name', type: 'text' },
          { name: 'qty', type: 'int' },
          { name: 'log_id', type: logIdType },
        ],
      },
    ],
  });
}

describe('simulated deltas', () => {
  it('empty simulated deltas go through copy and load with no source database', () => {
    job = sqliteJob({ source: undefined });
    const sim = runBin('deltasync', ['simulate', '-c', job.config, '--count', '3', '--empty']);
    expect(sim.stderr).toBe('');
    expect(sim.code).toBe(0);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    const load = runBin('deltasync-load', ['-c', job.config]);
    expect(load.code).toBe(0);
    expect(summaryOf(load.stdout)).toMatchObject({ deltas: 3, rows: 0 });
    expect(JSON.parse(readFileSync(join(job.stateDir, 't.load.state.json'), 'utf8')).logId).toBe(
      '3000',
    );
    expect(job.targetRows()).toEqual([]);
  });

  it('synthetic rows land in the replica', () => {
    job = simulatedItemsJob('bigint');
    expect(
      runBin('deltasync', ['simulate', '-c', job.config, '--count', '2', '--rows', '5']).code,
    ).toBe(0);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
    expect(job.targetRows()).toHaveLength(10);
  });

  it('a logId column declared int gets numbers, and the summary counts the bytes written', () => {
    job = simulatedItemsJob('int');
    const sim = runBin('deltasync', ['simulate', '-c', job.config, '--rows', '3']);
    expect(sim.code).toBe(0);
    const manifest = JSON.parse(
      readFileSync(
        join(
          job.outbox,
          readdirSync(job.outbox).find((f) => f.endsWith('.MANIFEST.json'))!,
        ),
        'utf8',
      ),
    );
    const bytes = manifest.tables[0].parts.reduce(
      (n: number, p: { bytes: number }) => n + p.bytes,
      0,
    );
    expect(bytes).toBeGreaterThan(0);
    expect(summaryOf(sim.stdout)).toMatchObject({ rows: 3, bytes });
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
    expect(job.targetRows()).toHaveLength(3);
  });
});

describe('copy to several destinations', () => {
  it('an unwritable destination fails with 69 while the others get every delta', () => {
    job = sqliteJob();
    const second = join(job.dir, 'second');
    const broken = join(job.dir, 'not-mounted');
    writeFileSync(
      job.config,
      readFileSync(job.config, 'utf8').replace(
        '"destinations": [',
        `"destinations": [{ "name": "broken", "dir": ${JSON.stringify(broken)} }, { "name": "second", "dir": ${JSON.stringify(second)} },`,
      ),
    );
    mkdirSync(second);
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
    job.sourceExec("INSERT INTO items VALUES (2, 'b', 2, 6)");
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);

    const r = runBin('deltasync-copy', ['-c', job.config]);
    expect(r.code).toBe(69);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('not-mounted');
    for (const dir of [job.inbox, second]) {
      expect(readdirSync(dir).filter((f) => f.endsWith('.MANIFEST.json'))).toHaveLength(2);
    }
    expect(existsSync(join(job.stateDir, 't.copy.broken.state.json'))).toBe(false);
    expect(
      JSON.parse(readFileSync(join(job.stateDir, 't.copy.second.state.json'), 'utf8')).logId,
    ).toBe('6');

    mkdirSync(broken);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    expect(readdirSync(broken).filter((f) => f.endsWith('.MANIFEST.json'))).toHaveLength(2);
  });

  it('refuses to copy a part damaged in the outbox (65) and publishes nothing of that delta', () => {
    job = sqliteJob();
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
    const part = readdirSync(job.outbox).find((f) => f.endsWith('.copy.gz'))!;
    const bytes = readFileSync(join(job.outbox, part));
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(join(job.outbox, part), bytes);
    const r = runBin('deltasync-copy', ['-c', job.config]);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain(part);
    expect(readdirSync(job.inbox)).toEqual([]);
  });
});

describe('single instance', () => {
  it('a run that finds the lock held exits 75 at once and says nothing', () => {
    job = sqliteJob();
    mkdirSync(job.stateDir, { recursive: true });
    // The test runner itself is a live process: make it the lock's holder.
    writeFileSync(
      join(job.stateDir, 't.load.lock'),
      JSON.stringify({ pid: process.pid, startTime: null, host: hostname(), since: 'now' }),
    );
    const r = runBin('deltasync-load', ['-c', job.config]);
    expect(r.code).toBe(75);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
    const verbose = runBin('deltasync-load', ['-c', job.config, '--verbose']);
    expect(verbose.code).toBe(75);
    expect(verbose.stderr).toContain(`pid ${process.pid}`);
  });

  it('a lock left by a dead process is taken over', () => {
    job = sqliteJob();
    mkdirSync(job.stateDir, { recursive: true });
    // A process that has come and gone leaves a pid nobody holds.
    const deadPid = spawnSync('true').pid;
    writeFileSync(
      join(job.stateDir, 't.extract.lock'),
      JSON.stringify({ pid: deadPid, startTime: '1', host: hostname(), since: 'then' }),
    );
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(existsSync(join(job.stateDir, 't.extract.lock'))).toBe(false);
  });

  it('bin/single-instance wraps any command with the same lock', () => {
    job = sqliteJob();
    const ok = runBin('single-instance', [
      'nightly',
      '--dir',
      job.stateDir,
      '--',
      'sh',
      '-c',
      'exit 3',
    ]);
    expect(ok.code).toBe(3);
    writeFileSync(
      join(job.stateDir, 'nightly.lock'),
      JSON.stringify({ pid: process.pid, startTime: null, host: hostname(), since: 'now' }),
    );
    const held = runBin('single-instance', [
      'nightly',
      '--dir',
      job.stateDir,
      '--',
      'sh',
      '-c',
      'echo ran',
    ]);
    expect(held).toMatchObject({ code: 75, stdout: '', stderr: '' });
    rmSync(join(job.stateDir, 'nightly.lock'));
    expect(
      runBin('single-instance', ['nightly', '--dir', job.stateDir, '--', 'sh', '-c', 'echo ran'])
        .stdout,
    ).toBe('ran\n');
  });
});

describe('configuration errors', () => {
  it('a bad config exits 78 with one line naming the file and the key', () => {
    job = sqliteJob();
    writeFileSync(
      job.config,
      "export default { name: 'bad name!', tables: [{ name: 'items' }], surprise: 1 };\n",
    );
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.code).toBe(78);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(job.config);
    expect(lines[0]).toMatch(/name: /);
    expect(lines[0]).toMatch(/tables\.0\.key/);
    expect(lines[0]).toMatch(/surprise/);
  });

  it('a config missing what the step needs exits 78', () => {
    job = sqliteJob({ target: undefined });
    const r = runBin('deltasync-load', ['-c', job.config]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('target: required by load');
  });

  it('a missing config file exits 78; an unknown flag exits 64', () => {
    expect(runBin('deltasync-load', ['-c', '/nonexistent/job.js']).code).toBe(78);
    expect(runBin('deltasync-load', ['-c', 'x', '--frobnicate']).code).toBe(64);
  });

  it('an unreachable source exits 69 and leaves the state alone', () => {
    job = sqliteJob();
    rmSync(job.source);
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.code).toBe(69);
    expect(r.stderr).toContain('source.sqlite');
    expect(existsSync(join(job.stateDir, 't.extract.state.json'))).toBe(false);
  });
});

describe('batch limit and after-load hook', () => {
  it('a backlog larger than maxRowsPerDelta becomes several deltas in one run, each within the limit', () => {
    job = sqliteJob({ delta: { maxRowsPerPart: 4, compression: 'gzip', maxRowsPerDelta: 10 } });
    for (let i = 1; i <= 25; i++)
      job.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', i, `item ${i}`, i, i);
    const r = runBin('deltasync-extract', ['-c', job.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(summaryOf(r.stdout)).toMatchObject({ deltas: 3, rows: 25 });
    const manifests = readdirSync(job.outbox)
      .filter((f) => f.endsWith('.MANIFEST.json'))
      .map((f) => JSON.parse(readFileSync(join(job.outbox, f), 'utf8')));
    expect(manifests.map((m) => [m.fromLogId, m.toLogId, m.tables[0].rows])).toEqual([
      ['0', '10', 10],
      ['10', '20', 10],
      ['20', '25', 5],
    ]);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
    expect(job.targetRows()).toHaveLength(25);
  });

  it('a failing hook exits 70 but the deltas stay committed and are not applied again', () => {
    job = sqliteJob({
      afterLoad: { command: 'echo "refresh failed for $DELTASYNC_LOGID" >&2; exit 3' },
    });
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
    expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
    const r = runBin('deltasync-load', ['-c', job.config]);
    expect(r.code).toBe(70);
    expect(r.stderr).toContain(
      'after-load hook failed for logId00000000000000000005.MANIFEST.json: hook command exited with 3',
    );
    expect(r.stdout).toContain('refresh failed for 5');
    expect(job.targetRows()).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(job.stateDir, 't.load.state.json'), 'utf8')).logId).toBe(
      '5',
    );
    const again = runBin('deltasync-load', ['-c', job.config]);
    expect(again.code).toBe(0);
    expect(summaryOf(again.stdout)).toMatchObject({ deltas: 0 });
  });
});

describe('after-load hook SQL', () => {
  it('runs on the replica after each delta with {logId} and {rows} filled in', () => {
    job = sqliteJob({
      afterLoad: { sql: "INSERT INTO audit (log_id, rows) VALUES ('{logId}', {rows})" },
    });
    const db = new Database(job.target);
    db.exec('CREATE TABLE audit (log_id TEXT, rows INTEGER)');
    db.close();
    job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5)");
    job.sourceExec("INSERT INTO items VALUES (2, 'b', 1, 6)");
    for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
      const r = runBin(bin, ['-c', job.config]);
      expect(r.code, r.stderr).toBe(0);
    }
    const check = new Database(job.target, { readonly: true });
    expect(check.prepare('SELECT log_id, rows FROM audit').all()).toEqual([
      { log_id: '6', rows: 2 },
    ]);
    check.close();
  });
});
