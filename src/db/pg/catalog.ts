/**
 * Finding tables and their columns in pg_catalog, shared by the reader and the writer.
 *
 * Table names are taken literally (quoted), as knex does: `Users` means the table "Users", not
 * users. A name is looked up in the configured schema, or in `schema.table` when the name
 * carries one, or else along the connection's search_path.
 */
import type { ColumnInfo } from '../types.js';
import { run, type PgConnection } from './connection.js';
import { isKnownType, logicalTypeOf, quoteIdent } from './types.js';

/** A table name resolved to the SQL that names it. */
export interface TableRef {
  /** The name as the configuration gave it, for messages. */
  name: string;
  /** The quoted, possibly schema-qualified name to put into SQL. */
  sql: string;
}

/** Resolves a configured table name against the configured schema (if any). */
export function tableRef(name: string, schema?: string): TableRef {
  if (schema) return { name, sql: `${quoteIdent(schema)}.${quoteIdent(name)}` };
  const dot = name.indexOf('.');
  if (dot > 0) {
    return { name, sql: `${quoteIdent(name.slice(0, dot))}.${quoteIdent(name.slice(dot + 1))}` };
  }
  return { name, sql: quoteIdent(name) };
}

/** A column as the catalog describes it. */
export interface PgColumn extends ColumnInfo {
  /** Base type name (domains resolved), e.g. int8, json. */
  typname: string;
  /** True when the type has no logical type of its own and travels as text. */
  fallback: boolean;
}

interface CatalogRow {
  name: string;
  native: string;
  typname: string;
}

// Domains are resolved one level to their base type, so a domain over numeric is a decimal.
const COLUMNS_SQL = `
  SELECT a.attname AS name,
         format_type(a.atttypid, a.atttypmod) AS native,
         CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END AS typname
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
   WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
   ORDER BY a.attnum`;

/** The table's columns in order, or null when there is no such table (or view). */
export async function reflectColumns(
  conn: PgConnection,
  table: TableRef,
): Promise<PgColumn[] | null> {
  // to_regclass returns NULL rather than failing for a missing table, so this never aborts the
  // surrounding transaction; a table with no columns is impossible, so no rows means missing.
  const { rows } = await run<CatalogRow>(conn, COLUMNS_SQL, [table.sql], table.name);
  if (rows.length === 0) return null;
  return rows.map((r) => ({
    name: r.name,
    type: logicalTypeOf(r.typname),
    nativeType: r.native,
    typname: r.typname,
    fallback: !isKnownType(r.typname),
  }));
}

/** True when the table (or view) exists; never aborts a transaction. */
export async function tableExists(conn: PgConnection, table: TableRef): Promise<boolean> {
  const { rows } = await run<{ found: boolean }>(
    conn,
    'SELECT to_regclass($1) IS NOT NULL AS found',
    [table.sql],
    table.name,
  );
  return rows[0]?.found === true;
}
