/**
 * Change capture DDL for PostgreSQL (`deltasync capture`): the change log, and per table one
 * trigger function and one AFTER ROW trigger writing each insert, update and delete into it.
 *
 * The log's columns are the same on every engine (see CHANGELOG_LOGID_COLUMN), plus `txid`: the
 * writing transaction's id, which makes each delta exactly the rows visible in its snapshot and
 * not in the previous one (see window.ts). A change log made before that column existed is
 * upgraded in place by the same DDL (the ALTERs are no-ops on a new one). key_values is a JSON
 * array of the key values as text, which readChangelog casts back to the key types. A key change
 * is logged as a delete of the old key and an upsert of the new one.
 *
 * Inheritance children of a captured table get the same trigger (PostgreSQL never inherits
 * triggers), logging under the parent's name; partitions of a partitioned table get a clone of
 * the parent's trigger from PostgreSQL itself, new partitions included.
 */
import { createHash } from 'node:crypto';
import type { CaptureDdl, CaptureRequest } from '../types.js';
import { tableRef } from './catalog.js';
import { quoteIdent, quoteLiteral } from './types.js';
import { TXID_COLUMN } from './window.js';

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

/** The trigger's name on a captured table (and on its inheritance children). */
export function triggerName(changelog: string, table: string): string {
  return identifier(`${bare(changelog)}_${bare(table)}`);
}

/**
 * @param children per captured table, its inheritance children (as quoted SQL names) that need
 *   a trigger of their own; partitions are not listed (PostgreSQL clones the trigger to them).
 */
export function captureDdl(
  req: CaptureRequest,
  schema?: string,
  children: Map<string, string[]> = new Map(),
): CaptureDdl {
  const log = tableRef(req.changelog, schema).sql;
  const txid = quoteIdent(TXID_COLUMN);
  const install = [
    `CREATE TABLE IF NOT EXISTS ${log} (
  log_id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  op text NOT NULL,
  key_values text NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now(),
  ${txid} xid8 DEFAULT pg_current_xact_id()
)`,
    // The upgrade of a change log made before exact capture: no-ops on a new one. ADD COLUMN
    // takes an exclusive lock, so every row logged without a txid was committed before it.
    `ALTER TABLE ${log} ADD COLUMN IF NOT EXISTS ${txid} xid8`,
    `ALTER TABLE ${log} ALTER COLUMN ${txid} SET DEFAULT pg_current_xact_id()`,
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(identifier(`${bare(req.changelog)}_table_log_id`))}
  ON ${log} (table_name, log_id)`,
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(identifier(`${bare(req.changelog)}_txid`))}
  ON ${log} (${txid})`,
  ];
  const remove: string[] = [];
  for (const t of req.tables) {
    const table = tableRef(t.table, schema).sql;
    const fn = objectName(req.changelog, t.table, schema);
    const trigger = quoteIdent(triggerName(req.changelog, t.table));
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
    );
    for (const on of [table, ...(children.get(t.table) ?? [])]) {
      install.push(
        `DROP TRIGGER IF EXISTS ${trigger} ON ${on}`,
        `CREATE TRIGGER ${trigger} AFTER INSERT OR UPDATE OR DELETE ON ${on}
  FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
      );
      remove.push(`DROP TRIGGER IF EXISTS ${trigger} ON ${on}`);
    }
    remove.push(`DROP FUNCTION IF EXISTS ${fn}()`);
  }
  remove.push(`DROP TABLE IF EXISTS ${log}`);
  return { install, remove };
}
