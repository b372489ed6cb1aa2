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
  /** `GENERATED ALWAYS AS (…) STORED`: computed by the server, never written. */
  generated: boolean;
  /** `GENERATED ALWAYS AS IDENTITY`: an INSERT sets it only with OVERRIDING SYSTEM VALUE. */
  identityAlways: boolean;
}

interface CatalogRow {
  name: string;
  native: string;
  typname: string;
  generated: boolean;
  identity_always: boolean;
}

// Domains are resolved one level to their base type, so a domain over numeric is a decimal.
const COLUMNS_SQL = `
  SELECT a.attname AS name,
         format_type(a.atttypid, a.atttypmod) AS native,
         CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END AS typname,
         a.attgenerated <> '' AS generated,
         a.attidentity = 'a' AS identity_always
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
    generated: r.generated,
    identityAlways: r.identity_always,
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

/**
 * True when a unique index (or the primary key) covers exactly the key columns, in any order:
 * what `INSERT … ON CONFLICT (key)` needs. Partial, expression and deferrable indexes do not
 * count, as ON CONFLICT cannot use them either.
 */
export async function hasUniqueIndex(
  conn: PgConnection,
  table: TableRef,
  key: string[],
): Promise<boolean> {
  const { rows } = await run<{ found: boolean }>(
    conn,
    `SELECT EXISTS (
       SELECT 1 FROM pg_catalog.pg_index i
        WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
              = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k)) AS found`,
    [table.sql, key],
    table.name,
  );
  return rows[0]?.found === true;
}

/**
 * The tables `table` references through foreign keys, named the way the configuration names
 * tables: schema-qualified when `qualified`, else by bare name.
 */
export async function referencedTables(
  conn: PgConnection,
  table: TableRef,
  qualified: boolean,
): Promise<string[]> {
  const { rows } = await run<{ name: string }>(
    conn,
    `SELECT DISTINCT CASE WHEN $2 THEN n.nspname || '.' || p.relname ELSE p.relname::text END AS name
       FROM pg_catalog.pg_constraint c
       JOIN pg_catalog.pg_class p ON p.oid = c.confrelid
       JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
      WHERE c.contype = 'f' AND c.conrelid = to_regclass($1)`,
    [table.sql, qualified],
    table.name,
  );
  return rows.map((r) => r.name);
}

/**
 * Every table that writes into `table` (inheritance children and partitions, at any depth), as
 * quoted SQL names, with whether PostgreSQL clones the parent's row triggers onto it (a partition
 * does; an inheritance child never does).
 */
export async function descendants(
  conn: PgConnection,
  table: TableRef,
): Promise<{ sql: string; partition: boolean }[]> {
  const { rows } = await run<{ sql: string; partition: boolean }>(
    conn,
    `WITH RECURSIVE d(oid) AS (
       SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = to_regclass($1)
       UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN d ON i.inhparent = d.oid)
     SELECT d.oid::regclass::text AS sql, c.relispartition AS partition
       FROM d JOIN pg_catalog.pg_class c ON c.oid = d.oid
      ORDER BY 1`,
    [table.sql],
    table.name,
  );
  return rows;
}

/**
 * The pairs of `tables` (by their names in the config) of which one is an inheritance child of
 * the other, at any depth. Partitions are left out: a row read through the partitioned table and
 * again through its partition is the same row, written twice in the same place on the replica.
 */
export async function inheritedAmong(
  conn: PgConnection,
  tables: TableRef[],
): Promise<{ parent: string; child: string }[]> {
  const { rows } = await run<{ parent: string; child: string }>(
    conn,
    `WITH RECURSIVE listed(name, oid) AS (
       SELECT u.name, to_regclass(u.sql) FROM unnest($1::text[], $2::text[]) AS u(name, sql)),
     d(root, oid) AS (
       SELECT l.oid, i.inhrelid FROM pg_catalog.pg_inherits i JOIN listed l ON i.inhparent = l.oid
       UNION SELECT d.root, i.inhrelid FROM pg_catalog.pg_inherits i JOIN d ON i.inhparent = d.oid)
     SELECT p.name AS parent, c.name AS child
       FROM d JOIN listed p ON p.oid = d.root JOIN listed c ON c.oid = d.oid
       JOIN pg_catalog.pg_class r ON r.oid = d.oid
      WHERE NOT r.relispartition
      ORDER BY 1, 2`,
    [tables.map((t) => t.name), tables.map((t) => t.sql)],
  );
  return rows;
}

/** A row trigger's state on a relation: missing, disabled ('D'), or enabled. */
export async function triggerState(
  conn: PgConnection,
  relation: string,
  trigger: string,
): Promise<'missing' | 'disabled' | 'enabled'> {
  const { rows } = await run<{ enabled: string }>(
    conn,
    `SELECT tgenabled AS enabled FROM pg_catalog.pg_trigger
      WHERE tgrelid = to_regclass($1) AND tgname = $2`,
    [relation, trigger],
  );
  if (rows.length === 0) return 'missing';
  return rows[0]!.enabled === 'D' ? 'disabled' : 'enabled';
}

/** The column's DEFAULT expression, or null when the column or its default is missing. */
export async function columnDefault(
  conn: PgConnection,
  table: TableRef,
  column: string,
): Promise<{ exists: boolean; default: string | null }> {
  const { rows } = await run<{ def: string | null }>(
    conn,
    `SELECT pg_get_expr(d.adbin, d.adrelid) AS def
       FROM pg_catalog.pg_attribute a
       LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped`,
    [table.sql, column],
    table.name,
  );
  return { exists: rows.length > 0, default: rows[0]?.def ?? null };
}
