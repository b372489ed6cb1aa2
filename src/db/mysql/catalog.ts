/**
 * Reading MariaDB/MySQL's catalog: a table's columns as information_schema describes them, for
 * the source and the replica alike, telling a missing table from a missing grant.
 */
import { ConfigError, PrivilegeError, UnavailableError } from '../../errors.js';
import { run, type Session } from './connection.js';
import type { NativeColumn } from './types.js';

/** Splits `db.table` into its parts; a bare name lives in the connection's database. */
export function splitTable(table: string): [schema: string | null, name: string] {
  const dot = table.indexOf('.');
  return dot < 0 ? [null, table] : [table.slice(0, dot), table.slice(dot + 1)];
}

interface ColumnRow {
  name: string;
  dataType: string;
  columnType: string;
  charset: string | null;
  collation: string | null;
  generated: number | string;
}

/** The table's columns in order, or an empty list when the table does not exist. */
export async function reflectColumns(session: Session, table: string): Promise<NativeColumn[]> {
  const [schema, name] = splitTable(table);
  const rows = await run<ColumnRow[]>(
    session,
    `SELECT COLUMN_NAME AS name, LOWER(DATA_TYPE) AS dataType, COLUMN_TYPE AS columnType,
            CHARACTER_SET_NAME AS charset, COLLATION_NAME AS collation,
            EXTRA IN ('VIRTUAL GENERATED', 'STORED GENERATED') AS generated
       FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
      ORDER BY ORDINAL_POSITION`,
    [schema, name],
    table,
  );
  if (rows.length === 0) await provePrivilege(session, schema, name, table);
  const jsonColumns = rows.some((r) => r.dataType === 'longtext')
    ? await jsonCheckedColumns(session, schema, name)
    : new Set<string>();
  return rows.map((r) => ({
    name: r.name,
    dataType: r.dataType,
    columnType: r.columnType,
    jsonChecked: jsonColumns.has(r.name),
    charset: r.charset,
    collation: r.collation,
    generated: Number(r.generated) === 1,
  }));
}

/**
 * information_schema hides the tables a user may not read, so "no columns" may mean "no SELECT
 * grant" rather than "no table". Touching the table tells them apart: a missing grant is then a
 * PrivilegeError naming the table (78, grant it), a missing table stays "no columns".
 */
async function provePrivilege(
  session: Session,
  schema: string | null,
  name: string,
  table: string,
): Promise<void> {
  const quote = (id: string) => `\`${id.replace(/`/g, '``')}\``;
  const qualified = schema ? `${quote(schema)}.${quote(name)}` : quote(name);
  try {
    await run(session, `SELECT 1 FROM ${qualified} LIMIT 0`, undefined, table);
  } catch (err) {
    if (err instanceof PrivilegeError || err instanceof UnavailableError) throw err;
  }
}

/**
 * MariaDB's JSON is LONGTEXT plus `CHECK (json_valid(col))`; the check is the only trace of
 * the declared type. MySQL has a real JSON type, and its CHECK_CONSTRAINTS view has no
 * TABLE_NAME column, so an error here simply means "no such columns".
 */
async function jsonCheckedColumns(
  session: Session,
  schema: string | null,
  name: string,
): Promise<Set<string>> {
  let clauses: { clause: string }[];
  try {
    clauses = await run<{ clause: string }[]>(
      session,
      `SELECT CHECK_CLAUSE AS clause FROM information_schema.CHECK_CONSTRAINTS
        WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?`,
      [schema, name],
    );
  } catch (err) {
    if (err instanceof UnavailableError) throw err;
    return new Set();
  }
  const found = new Set<string>();
  for (const { clause } of clauses) {
    for (const m of clause.matchAll(/json_valid\s*\(\s*`?((?:[^`]|``)+?)`?\s*\)/gi)) {
      found.add(m[1]!.replace(/``/g, '`'));
    }
  }
  return found;
}

/** The table's columns, or a ConfigError naming the table and where it was looked for. */
export async function nativeColumns(
  session: Session,
  table: string,
  side: 'source' | 'replica',
): Promise<NativeColumn[]> {
  const native = await reflectColumns(session, table);
  if (native.length === 0) {
    throw new ConfigError(`table ${table} does not exist in MariaDB/MySQL ${session.where}`, {
      hint:
        side === 'source'
          ? 'create it or fix the table name in the job config'
          : 'create it on the replica or fix the table name in the job config',
    });
  }
  return native;
}
