/**
 * Change capture DDL for SQLite: the change log and one trigger per event per table. SQLite is
 * not one of the production sources, but the same mode there makes the demo and the tests of
 * changelog mode runnable without a server.
 */
import type { CaptureDdl, CaptureRequest } from '../types.js';
import { quoteIdent } from './connection.js';

function keyJson(prefix: 'NEW' | 'OLD', key: string[]): string {
  return `json_array(${key.map((k) => `CAST(${prefix}.${quoteIdent(k)} AS TEXT)`).join(', ')})`;
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** The names of a table's three capture triggers. */
export function triggerNames(changelog: string, table: string): string[] {
  return ['ins', 'upd', 'del'].map((event) => `${changelog}_${table}_${event}`);
}

export function captureDdl(req: CaptureRequest): CaptureDdl {
  const log = quoteIdent(req.changelog);
  const install = [
    `CREATE TABLE IF NOT EXISTS ${log} (
  log_id INTEGER PRIMARY KEY AUTOINCREMENT,
  table_name TEXT NOT NULL,
  op TEXT NOT NULL,
  key_values TEXT NOT NULL,
  changed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
)`,
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(`${req.changelog}_table_log_id`)} ON ${log} (table_name, log_id)`,
  ];
  const remove: string[] = [];
  for (const t of req.tables) {
    const key = t.key.map((c) => c.name);
    const [ins, upd, del] = triggerNames(req.changelog, t.table).map(quoteIdent);
    const names: Record<string, string> = { ins: ins!, upd: upd!, del: del! };
    const name = (event: string) => names[event]!;
    const table = quoteIdent(t.table);
    const insert = (op: string, prefix: 'NEW' | 'OLD') =>
      `INSERT INTO ${log} (table_name, op, key_values) VALUES (${literal(t.table)}, '${op}', ${keyJson(prefix, key)});`;
    const keyChanged = key
      .map((k) => `OLD.${quoteIdent(k)} IS NOT NEW.${quoteIdent(k)}`)
      .join(' OR ');
    for (const event of ['ins', 'upd', 'del']) remove.push(`DROP TRIGGER IF EXISTS ${name(event)}`);
    install.push(
      `DROP TRIGGER IF EXISTS ${name('ins')}`,
      `CREATE TRIGGER ${name('ins')} AFTER INSERT ON ${table} BEGIN ${insert('I', 'NEW')} END`,
      `DROP TRIGGER IF EXISTS ${name('upd')}`,
      `CREATE TRIGGER ${name('upd')} AFTER UPDATE ON ${table} BEGIN ${insert('U', 'NEW')} INSERT INTO ${log} (table_name, op, key_values) SELECT ${literal(t.table)}, 'D', ${keyJson('OLD', key)} WHERE ${keyChanged}; END`,
      `DROP TRIGGER IF EXISTS ${name('del')}`,
      `CREATE TRIGGER ${name('del')} AFTER DELETE ON ${table} BEGIN ${insert('D', 'OLD')} END`,
    );
  }
  remove.push(`DROP TABLE IF EXISTS ${log}`);
  return { install, remove };
}
