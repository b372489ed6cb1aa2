/**
 * The reader of `COPY … TO STDOUT` (src/db/pg/copy-to.ts, used through read.ts' copyOutBytes),
 * which takes the socket over from node-postgres, against a real server: the bytes are exactly
 * the COPY's output whatever the socket's chunking and the messages interleaved with the rows,
 * and a COPY that the server refuses, that fails half-way or that the reader abandons leaves the
 * connection usable.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, disconnect, type PgConnection } from '../../src/db/pg/connection.js';
import { copyOutBytes, type CopyOutcome } from '../../src/db/pg/read.js';
import { pgServer } from '../helpers/databases.js';

const server = await pgServer();

/**
 * Rows of every length from 0 to ~70 KB (lines across socket chunks), then many short ones (a
 * message header every few bytes, so some are split between two socket chunks).
 */
const ROWS_SQL = `SELECT g, repeat(chr(97 + g % 26), (g * 7919) % 70000) AS r, 'Zoë ' || g AS z
  FROM generate_series(1, 400) AS g
  UNION ALL SELECT g, repeat('s', g % 13), NULL FROM generate_series(401, 300000) AS g ORDER BY g`;

function digest(text: Buffer): { bytes: number; sha: string } {
  return { bytes: text.length, sha: createHash('sha256').update(text).digest('hex') };
}

describe.skipIf(!server.available)(`PostgreSQL COPY TO reader ${server.reason ?? ''}`, () => {
  let conn: PgConnection;

  beforeAll(async () => {
    conn = await connect({ client: 'pg', connection: await server.fresh('pgcopyto') });
  });
  afterAll(async () => {
    if (conn) await disconnect(conn);
    await server.cleanup();
  });

  const one = async (n: number) =>
    (await conn.client.query<{ n: number }>(`SELECT ${n} AS n`)).rows[0]!.n;

  async function copy(sql: string, outcome?: CopyOutcome) {
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of copyOutBytes(conn, `COPY (${sql}) TO STDOUT`, 't', outcome)) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    return { bytes, sha: hash.digest('hex') };
  }

  it('yields exactly the COPY output, lines and headers cut anywhere by the socket', async () => {
    // The oracle: the same rows through node-postgres' own query path.
    const { rows } = await conn.client.query<{ g: number; r: string; z: string | null }>(ROWS_SQL);
    const want = digest(Buffer.from(rows.map((r) => `${r.g}\t${r.r}\t${r.z ?? '\\N'}\n`).join('')));
    expect(want.bytes).toBeGreaterThan(10_000_000);
    const outcome: CopyOutcome = { complete: false, usable: true };
    expect(await copy(ROWS_SQL, outcome)).toEqual(want);
    expect(outcome).toEqual({ complete: true, usable: true });
    expect(await one(42)).toBe(42);
  });

  it('passes over notices sent in the middle of the rows', async () => {
    await conn.client.query(`CREATE FUNCTION noisy(g int) RETURNS int AS $$
      BEGIN IF g % 50 = 0 THEN RAISE NOTICE 'row %', g; END IF; RETURN g; END $$ LANGUAGE plpgsql`);
    const notices: string[] = [];
    const onNotice = (n: { message?: string }) => notices.push(n.message ?? '');
    conn.client.on('notice', onNotice);
    try {
      const got = await copy(
        `SELECT noisy(g), repeat('x', 1000) FROM generate_series(1, 1000) g ORDER BY g`,
      );
      const lines = Array.from({ length: 1000 }, (_, i) => `${i + 1}\t${'x'.repeat(1000)}\n`);
      expect(got).toEqual(digest(Buffer.from(lines.join(''))));
    } finally {
      conn.client.off('notice', onNotice);
    }
    expect(await one(1)).toBe(1);
  });

  it('fails with the server error when the COPY is refused; the connection goes on', async () => {
    await expect(copy('SELECT * FROM missing_table')).rejects.toThrow(/missing_table/);
    expect(await one(2)).toBe(2);
  });

  it('fails with the server error when the COPY breaks half-way; the connection goes on', async () => {
    let bytes = 0;
    const sql = `COPY (SELECT g, 1 / (g - 150000), repeat('y', 100)
      FROM generate_series(1, 200000) g) TO STDOUT`;
    await expect(
      (async () => {
        for await (const chunk of copyOutBytes(conn, sql, 't')) bytes += chunk.length;
      })(),
    ).rejects.toThrow(/division by zero/);
    expect(bytes).toBeGreaterThan(1_000_000);
    expect(await one(3)).toBe(3);
  });

  it('can be abandoned half-way: the COPY is cancelled and the connection goes on', async () => {
    const outcome: CopyOutcome = { complete: false, usable: true };
    const sql = `COPY (SELECT g, repeat('z', 200) FROM generate_series(1, 5000000) g) TO STDOUT`;
    let chunks = 0;
    for await (const _chunk of copyOutBytes(conn, sql, 't', outcome)) if (++chunks === 3) break;
    expect(outcome).toEqual({ complete: false, usable: true });
    expect(await one(4)).toBe(4);
  });
});
