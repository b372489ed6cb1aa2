/**
 * The whole pipeline through the real bins, engine to engine: every pair of PostgreSQL, MariaDB
 * and SQLite, inserts then updates, the replica's own columns untouched; generated columns on
 * both sides of each engine (the replica computes its own); then, PostgreSQL only,
 * the target-side reflection rules (missing table or key: 78; extra source column: stops or is
 * skipped) and an unreachable target (69).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin, summaryOf } from '../../helpers/cli.js';
import { openDb, servers, type Db, type Engine } from '../../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());
const pgs = dbs.pg;
const open = (engine: Engine, label: string) => openDb(dbs, engine, label);

const DDL: Record<Engine, (extra: string) => string> = {
  pg: (extra) =>
    `CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), seen timestamptz, log_id bigint NOT NULL${extra})`,
  mysql: (extra) =>
    `CREATE TABLE items (id bigint PRIMARY KEY, name text, price decimal(12,2), seen timestamp(6) NULL, log_id bigint NOT NULL${extra}) ENGINE=InnoDB`,
  sqlite: (extra) =>
    `CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC, seen TIMESTAMPTZ, log_id INTEGER NOT NULL${extra})`,
};

/** A rendering of the shared columns every engine agrees on, for comparison. */
const SELECT: Record<Engine, string> = {
  pg: `SELECT id::text, name, price::text, to_char(seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), log_id::text FROM items ORDER BY items.id`,
  mysql: `SELECT CAST(id AS CHAR), name, CAST(price AS CHAR), DATE_FORMAT(CONVERT_TZ(seen, @@session.time_zone, '+00:00'), '%Y-%m-%d %H:%i:%s.%f'), CAST(log_id AS CHAR) FROM items ORDER BY id`,
  sqlite: `SELECT CAST(id AS TEXT), name, printf('%.2f', price), seen, CAST(log_id AS TEXT) FROM items ORDER BY id`,
};

function seen(engine: Engine, iso: string): string {
  // Each engine's literal for the same instant.
  return engine === 'mysql'
    ? `'${iso.replace('T', ' ').replace('Z', '')}'`
    : engine === 'pg'
      ? `'${iso}'`
      : `'${iso.replace('Z', '').replace('T', ' ')}'`;
}

function writeJob(source: Db, target: Db): { config: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-engines-'));
  mkdirSync(join(dir, 'inbox'));
  const config = join(dir, 'job.js');
  writeFileSync(
    config,
    `export default ${JSON.stringify({
      name: 'engines',
      stateDir: join(dir, 'state'),
      source: source.config,
      target: target.config,
      outbox: join(dir, 'outbox'),
      destinations: [{ name: 'r', dir: join(dir, 'inbox') }],
      inbox: join(dir, 'inbox'),
      tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }],
      delta: { maxRowsPerPart: 400, compression: 'gzip' },
    })};\n`,
  );
  return { config, dir };
}

/**
 * extract, copy, load; again while nothing arrived, at most 5 times: on a MariaDB source the
 * stable mark waits for every read-write transaction of the server (INNODB_TRX lists them all),
 * and other test files' long loads into the same server may hold it back past maxWaitSeconds.
 * Held-back rows ship on a later run (README, capture modes); they must all arrive, once.
 */
function cycle(config: string): { rows: number } {
  let rows = 0;
  for (let run = 0; run < 5 && rows === 0; run++) {
    for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
      const r = runBin(bin, ['-c', config]);
      expect(r.code, `${bin}: ${r.stderr}`).toBe(0);
      if (bin === 'deltasync-load') rows = Number(summaryOf(r.stdout)?.rows ?? 0);
    }
  }
  return { rows };
}

function normalise(rows: unknown[][]): string[][] {
  // SQLite keeps the timestamp text as it arrived (a whole second may come without a fraction);
  // render every engine's as "YYYY-MM-DD HH:MM:SS[.ffffff]", no fraction for a whole second.
  return rows.map((r) =>
    r.map((v) =>
      v === null
        ? 'NULL'
        : String(v)
            .replace('T', ' ')
            .replace(/Z$/, '')
            .replace(/^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.0{6}$/, '$1'),
    ),
  );
}

const PAIRS: [Engine, Engine][] = [
  ['pg', 'pg'],
  ['pg', 'mysql'],
  ['mysql', 'pg'],
  ['mysql', 'mysql'],
  ['sqlite', 'pg'],
  ['sqlite', 'mysql'],
  ['pg', 'sqlite'],
  ['mysql', 'sqlite'],
  ['sqlite', 'sqlite'],
];

const needs = (e: Engine) => dbs.available(e);

describe.each(PAIRS)('%s → %s through the bins', (from, to) => {
  it.skipIf(!needs(from) || !needs(to))(
    'inserts then updates arrive equal; the replica’s own column is left alone',
    async () => {
      const source = await open(from, `src${from}`);
      const target = await open(to, `dst${to}`);
      const job = writeJob(source, target);
      try {
        await source.exec(DDL[from](''));
        await target.exec(DDL[to](', note varchar(100)'));
        const values = Array.from({ length: 1000 }, (_, i) => {
          const id = i + 1;
          const when =
            from === 'sqlite'
              ? `'2026-03-0${(i % 9) + 1} 10:11:12.${String(i).padStart(6, '0')}'`
              : seen(from, `2026-03-0${(i % 9) + 1}T10:11:12.${String(i).padStart(6, '0')}Z`);
          return `(${id}, ${i % 7 === 0 ? 'NULL' : `'name ${id} ☃'`}, ${id}.25, ${when}, ${id})`;
        });
        await source.exec(
          `INSERT INTO items (id, name, price, seen, log_id) VALUES ${values.join(', ')}`,
        );
        expect(cycle(job.config).rows).toBe(1000);
        await target.exec(`UPDATE items SET note = 'kept' WHERE id <= 10`);

        await source.exec(
          `UPDATE items SET name = '', price = 0.5, log_id = id + 5000 WHERE id % 10 = 0`,
        );
        expect(cycle(job.config).rows).toBe(100);

        const got = normalise(await target.rows(SELECT[to]));
        const want = normalise(await source.rows(SELECT[from]));
        // Compare row by row so that a failure names the first differing row.
        expect(got.length).toBe(want.length);
        for (let i = 0; i < want.length; i++) expect(got[i], `row ${i + 1}`).toEqual(want[i]);
        const notes = await target.rows(`SELECT note FROM items WHERE id <= 10 ORDER BY id`);
        expect(notes.map((r) => r[0])).toEqual(Array(10).fill('kept'));
      } finally {
        await source.close();
        await target.close();
        rmSync(job.dir, { recursive: true, force: true });
      }
    },
  );
});

/** The same table with a column the server computes, per engine (the key: an identity on pg). */
const GENERATED_DDL: Record<Engine, { source: string; target: string }> = {
  pg: {
    source: `CREATE TABLE items (id bigint PRIMARY KEY, name text, label text GENERATED ALWAYS AS (upper(name)) STORED, log_id bigint NOT NULL)`,
    target: `CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, label text GENERATED ALWAYS AS (upper(name)) STORED, log_id bigint NOT NULL)`,
  },
  mysql: {
    source: `CREATE TABLE items (id bigint PRIMARY KEY, name varchar(100), label varchar(100) AS (upper(name)) STORED, log_id bigint NOT NULL) ENGINE=InnoDB`,
    target: `CREATE TABLE items (id bigint PRIMARY KEY, name varchar(100), label varchar(100) AS (upper(name)) VIRTUAL, log_id bigint NOT NULL) ENGINE=InnoDB`,
  },
  sqlite: {
    source: `CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, label TEXT GENERATED ALWAYS AS (upper(name)) STORED, log_id INTEGER NOT NULL)`,
    target: `CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, label TEXT GENERATED ALWAYS AS (upper(name)) VIRTUAL, log_id INTEGER NOT NULL)`,
  },
};

// SQLite as a source leaves its generated columns out of the delta; a PostgreSQL source ships
// them, so the SQLite replica is fed from PostgreSQL.
const GENERATED_PAIRS: [Engine, Engine][] = [
  ['pg', 'pg'],
  ['mysql', 'mysql'],
  ['pg', 'sqlite'],
];

describe.each(GENERATED_PAIRS)('%s → %s: generated columns on both sides', (from, to) => {
  it.skipIf(!needs(from) || !needs(to))(
    'the replica computes its own (load leaves the delta’s values out), inserts and updates',
    async () => {
      const source = await open(from, `gensrc${from}`);
      const target = await open(to, `gendst${to}`);
      const job = writeJob(source, target);
      const select = `SELECT ${to === 'pg' ? 'id::text' : 'CAST(id AS CHAR)'}, name, label FROM items ORDER BY id`;
      try {
        await source.exec(GENERATED_DDL[from].source);
        await target.exec(GENERATED_DDL[to].target);
        await source.exec(
          `INSERT INTO items (id, name, log_id) VALUES (1, 'one', 1), (2, NULL, 2), (3, 'three', 3)`,
        );
        expect(cycle(job.config).rows).toBe(3);
        await source.exec(`UPDATE items SET name = 'uno', log_id = 4 WHERE id = 1`);
        await source.exec(`INSERT INTO items (id, name, log_id) VALUES (4, 'four', 5)`);
        expect(cycle(job.config).rows).toBe(2);
        const got = (await target.rows(select)).map((r) =>
          r.map((v) => (v === null ? null : String(v))),
        );
        expect(got).toEqual([
          ['1', 'uno', 'UNO'],
          ['2', null, null],
          ['3', 'three', 'THREE'],
          ['4', 'four', 'FOUR'],
        ]);
      } finally {
        await source.close();
        await target.close();
        rmSync(job.dir, { recursive: true, force: true });
      }
    },
  );
});

describe.skipIf(!pgs.available)('PostgreSQL only: target reflection through load', () => {
  async function setup(targetDdl: string) {
    const source = await open('pg', 'reflsrc');
    const target = await open('pg', 'refldst');
    const job = writeJob(source, target);
    await source.exec(DDL.pg(', extra text'));
    await source.exec(
      `INSERT INTO items (id, name, price, log_id, extra) VALUES (1, 'a', 1, 1, 'x'), (2, 'b', 2, 2, 'y')`,
    );
    if (targetDdl) await target.exec(targetDdl);
    for (const bin of ['deltasync-extract', 'deltasync-copy'])
      expect(runBin(bin, ['-c', job.config]).code).toBe(0);
    return {
      source,
      target,
      job,
      async done() {
        await source.close();
        await target.close();
        rmSync(job.dir, { recursive: true, force: true });
      },
    };
  }

  it('a missing target table exits 78 naming it', async () => {
    const s = await setup('');
    try {
      const r = runBin('deltasync-load', ['-c', s.job.config]);
      expect(r.code).toBe(78);
      expect(r.stderr).toContain("target table 'items' does not exist");
    } finally {
      await s.done();
    }
  });

  it('a target without the key column exits 78', async () => {
    const s = await setup('CREATE TABLE items (name text, log_id bigint)');
    try {
      const r = runBin('deltasync-load', ['-c', s.job.config]);
      expect(r.code).toBe(78);
      expect(r.stderr).toContain("no key column 'id'");
    } finally {
      await s.done();
    }
  });

  it('a source column the target lacks stops the load by default (78), or is skipped', async () => {
    const s = await setup(DDL.pg(''));
    try {
      const stop = runBin('deltasync-load', ['-c', s.job.config]);
      expect(stop.code, stop.stderr).toBe(78);
      expect(stop.stderr).toContain(`ALTER TABLE "items" ADD COLUMN "extra" text`);
      const config = readFileSync(s.job.config, 'utf8');
      writeFileSync(
        s.job.config,
        config.replace(/\};\n$/, ", load: { missingColumns: 'skip' } };\n"),
      );
      const r = runBin('deltasync-load', ['-c', s.job.config]);
      expect(r.code, r.stderr).toBe(0);
      const warnings = r.stdout.split('\n').filter((l) => l.includes('has no such column'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('"column":"extra"');
      expect(await s.target.rows('SELECT id::text, name FROM items ORDER BY id')).toEqual([
        ['1', 'a'],
        ['2', 'b'],
      ]);
    } finally {
      await s.done();
    }
  });

  it('an unreachable target exits 69 and the state does not move', async () => {
    const s = await setup(DDL.pg(''));
    try {
      writeFileSync(
        s.job.config,
        (await import('node:fs'))
          .readFileSync(s.job.config, 'utf8')
          .replace(
            /"target":\{[^}]*\}/,
            '"target":{"client":"pg","connection":"postgres://postgres@127.0.0.1:1/nowhere"}',
          ),
      );
      const r = runBin('deltasync-load', ['-c', s.job.config]);
      expect(r.code).toBe(69);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toContain('password');
    } finally {
      await s.done();
    }
  });
});
