/**
 * Change capture DDL for PostgreSQL (`deltasync capture`): the change log, and per table one
 * trigger function and one AFTER ROW trigger writing each insert, update and delete into it.
 *
 * The log's columns are the same on every engine (see CHANGELOG_LOGID_COLUMN): log_id from a
 * sequence, so stableHighWater can wait for the transactions that hold lower ids; key_values a
 * JSON array of the key values as text, which readChangelog casts back to the key types. A key
 * change is logged as a delete of the old key and an upsert of the new one.
 */
import { createHash } from 'node:crypto';
import type { CaptureDdl, CaptureRequest } from '../types.js';
import { tableRef } from './catalog.js';
import { quoteIdent, quoteLiteral } from './types.js';

/** PostgreSQL truncates identifiers to 63 bytes; long names keep a hash to stay distinct. */
const MAX_IDENTIFIER = 63;

function identifier(name: string): string {
  if (Buffer.byteLength(name) <= MAX_IDENTIFIER) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, 40)}_${hash}`;
}

function bare(name: string): string {
  return name.slice(name.lastIndexOf('.') + 1);
}

/** An object named after the change log and a table, in the schema the table is in. */
function objectName(changelog: string, table: string, schema: string | undefined): string {
  const name = quoteIdent(identifier(`${bare(changelog)}_${bare(table)}`));
  const dot = table.indexOf('.');
  if (schema) return `${quoteIdent(schema)}.${name}`;
  return dot > 0 ? `${quoteIdent(table.slice(0, dot))}.${name}` : name;
}

export function captureDdl(req: CaptureRequest, schema?: string): CaptureDdl {
  const log = tableRef(req.changelog, schema).sql;
  const install = [
    `CREATE TABLE IF NOT EXISTS ${log} (
  log_id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  op text NOT NULL,
  key_values text NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now()
)`,
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(identifier(`${bare(req.changelog)}_table_log_id`))}
  ON ${log} (table_name, log_id)`,
  ];
  const remove: string[] = [];
  for (const t of req.tables) {
    const table = tableRef(t.table, schema).sql;
    const fn = objectName(req.changelog, t.table, schema);
    const trigger = quoteIdent(identifier(`${bare(req.changelog)}_${bare(t.table)}`));
    const keys = (row: 'NEW' | 'OLD') =>
      `json_build_array(${t.key.map((k) => `${row}.${quoteIdent(k.name)}::text`).join(', ')})::text`;
    const tuple = (row: 'NEW' | 'OLD') =>
      `(${t.key.map((k) => `${row}.${quoteIdent(k.name)}`).join(', ')})`;
    const insert = (op: string, row: 'NEW' | 'OLD') =>
      `INSERT INTO ${log} (table_name, op, key_values) VALUES (${quoteLiteral(t.table)}, ${op}, ${keys(row)});`;
    // search_path FROM CURRENT: the function finds the log wherever `capture --apply` made it,
    // whatever the search_path of the session whose write fires the trigger.
    install.push(
      `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $deltasync$
BEGIN
  IF TG_OP = 'DELETE' THEN
    ${insert(`'D'`, 'OLD')}
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF ${tuple('OLD')} IS DISTINCT FROM ${tuple('NEW')} THEN
      ${insert(`'D'`, 'OLD')}
    END IF;
  END IF;
  ${insert(`CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END`, 'NEW')}
  RETURN NULL;
END
$deltasync$`,
      `DROP TRIGGER IF EXISTS ${trigger} ON ${table}`,
      `CREATE TRIGGER ${trigger} AFTER INSERT OR UPDATE OR DELETE ON ${table}
  FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    );
    remove.push(`DROP TRIGGER IF EXISTS ${trigger} ON ${table}`, `DROP FUNCTION IF EXISTS ${fn}()`);
  }
  remove.push(`DROP TABLE IF EXISTS ${log}`);
  return { install, remove };
}
