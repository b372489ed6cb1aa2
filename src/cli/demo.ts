/**
 * `npm run demo` / `deltasync demo`: a replica following its source, end to end, on SQLite.
 * Builds ./var/demo from scratch, runs the real entrypoints as a cron job would, changes some
 * rows, runs them again, and shows the status and whether the replica matches the source.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const CONFIG = join(ROOT, 'conf/demo.js');
const DIR = join(ROOT, 'var/demo');

const SCHEMA = `
  CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, log_id INTEGER NOT NULL);
  CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC NOT NULL, log_id INTEGER NOT NULL);
  CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
    product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL, ordered_at DATETIME NOT NULL,
    log_id INTEGER NOT NULL);
`;

/** The source's changes take their logIds from one counter, as a logId-mode source must. */
function makeSource(path: string): Database.Database {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(
    `${SCHEMA} CREATE TABLE log_seq (last INTEGER NOT NULL); INSERT INTO log_seq VALUES (0);`,
  );
  return db;
}

function nextLogId(db: Database.Database): number {
  return (db.prepare('UPDATE log_seq SET last = last + 1 RETURNING last').get() as { last: number })
    .last;
}

function initialRows(db: Database.Database): void {
  const customer = db.prepare('INSERT INTO customers VALUES (?, ?, ?, ?)');
  const product = db.prepare('INSERT INTO products VALUES (?, ?, ?, ?)');
  const order = db.prepare('INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)');
  db.transaction(() => {
    ['Ada Lovelace', 'Grace Hopper', 'Edsger Dijkstra', 'Barbara Liskov', 'Ken Thompson'].forEach(
      (name, i) =>
        customer.run(
          i + 1,
          name,
          `${name.split(' ')[0]!.toLowerCase()}@example.com`,
          nextLogId(db),
        ),
    );
    [
      ['Keyboard', '49.90'],
      ['Monitor', '219.00'],
      ['Cable', '4.99'],
    ].forEach(([name, price], i) => product.run(i + 1, name, price, nextLogId(db)));
    for (let i = 1; i <= 8; i++)
      order.run(i, (i % 5) + 1, (i % 3) + 1, i, `2026-11-0${(i % 9) + 1} 10:00:00`, nextLogId(db));
  })();
}

function someChanges(db: Database.Database): void {
  db.transaction(() => {
    db.prepare('UPDATE customers SET email = ?, log_id = ? WHERE id = 2').run(
      'grace@navy.example',
      nextLogId(db),
    );
    db.prepare('UPDATE products SET price = ?, log_id = ? WHERE id = 3').run('5.49', nextLogId(db));
    db.prepare('INSERT INTO customers VALUES (6, ?, ?, ?)').run(
      'Margaret Hamilton',
      'margaret@example.com',
      nextLogId(db),
    );
    db.prepare('INSERT INTO orders VALUES (9, 6, 2, 1, ?, ?)').run(
      '2026-11-22 09:30:00',
      nextLogId(db),
    );
  })();
}

function run(bin: string, ...args: string[]): void {
  const shown = [
    relative(process.cwd(), join(ROOT, 'bin', bin)) || bin,
    ...args.map((a) => (a.startsWith('/') ? relative(process.cwd(), a) : a)),
  ];
  process.stdout.write(`$ ${shown.join(' ')}\n`);
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', bin), ...args], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${bin} exited with ${r.status ?? r.signal}`);
}

const LOG = join(DIR, 'deltasync.log');
let logLinesSeen = 0;

/** The summary lines the steps appended to the demo's log since the last call, made readable. */
function newSummaries(): string[] {
  if (!existsSync(LOG)) return [];
  const lines = readFileSync(LOG, 'utf8').split('\n').filter(Boolean);
  const fresh = lines.slice(logLinesSeen);
  logLinesSeen = lines.length;
  return fresh
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === 'summary')
    .map((l) => {
      const what =
        l.deltas === 0
          ? 'nothing to do'
          : `${String(l.delta)}: ${Number(l.rows)} rows, ${Number(l.bytes)} bytes`;
      return `    ${String(l.step)}: ${what} (${Number(l.seconds).toFixed(3)} s)`;
    });
}

function cycle(): void {
  for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
    run(bin, '-c', CONFIG);
    for (const line of newSummaries()) process.stdout.write(`${line}\n`);
  }
}

function tableDump(db: Database.Database, table: string, columns: string): string {
  return JSON.stringify(db.prepare(`SELECT ${columns} FROM ${table} ORDER BY id`).raw(true).all());
}

export async function runDemo(): Promise<number> {
  try {
    rmSync(DIR, { recursive: true, force: true });
    mkdirSync(join(DIR, 'inbox'), { recursive: true });
    const source = makeSource(join(DIR, 'source.sqlite'));
    const replica = new Database(join(DIR, 'replica.sqlite'));
    // The replica has a column of its own that users edit; load never writes it.
    replica.exec(`${SCHEMA} ALTER TABLE customers ADD COLUMN note TEXT;`);
    replica.close();
    initialRows(source);
    process.stdout.write(
      `demo: sample source in ${relative(process.cwd(), DIR)}; logs in ${relative(process.cwd(), join(DIR, 'deltasync.log'))}\n\n# first run: the initial rows\n`,
    );
    cycle();
    someChanges(source);
    process.stdout.write('\n# second run: 2 rows changed, 2 rows added\n');
    cycle();
    process.stdout.write('\n# a third run has nothing to do\n');
    cycle();
    process.stdout.write('\n');
    run('deltasync', 'status', '-c', CONFIG);

    const check = new Database(join(DIR, 'replica.sqlite'), { readonly: true });
    const tables: [string, string][] = [
      ['customers', 'id, name, email, log_id'],
      ['products', 'id, name, price, log_id'],
      ['orders', 'id, customer_id, product_id, quantity, ordered_at, log_id'],
    ];
    let same = true;
    for (const [table, cols] of tables) {
      const equal = tableDump(source, table, cols) === tableDump(check, table, cols);
      const n = (check.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
      process.stdout.write(
        `${table.padEnd(10)} ${String(n).padStart(3)} rows in the replica, ${equal ? 'same as the source' : 'DIFFERENT from the source'}\n`,
      );
      same &&= equal;
    }
    source.close();
    check.close();
    process.stdout.write(
      same
        ? '\ndemo: the replica matches the source.\n'
        : '\ndemo: the replica does NOT match the source.\n',
    );
    return same ? 0 : 1;
  } catch (err) {
    process.stderr.write(`demo failed: ${(err as Error).message}\n`);
    return 1;
  }
}
