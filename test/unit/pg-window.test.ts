/** PostgreSQL change-log positions (src/db/pg/window.ts): what extract stores, and the SQL of a window. */
import { describe, expect, it } from 'vitest';
import {
  formatPosition,
  inPosition,
  parsePosition,
  windowCondition,
} from '../../src/db/pg/window.js';

describe('positions', () => {
  it('round-trips snapshots, cut windows and plain logIds', () => {
    for (const text of [
      'pg:100:105:101,103',
      'pg:100:100:',
      'pg:7;100:105:101;42',
      'pg:9:9:;10:12:11;5',
      '42',
    ]) {
      expect(formatPosition(parsePosition(text)!)).toBe(text);
    }
    expect(parsePosition('pg:100:105:101,103')).toEqual({ base: { snapshot: '100:105:101,103' } });
    expect(parsePosition('pg:7;100:105:;42')).toEqual({
      base: { logId: '7' },
      pending: { snapshot: '100:105:', upTo: '42' },
    });
  });

  it('refuses what this engine did not make', () => {
    for (const text of [
      'mysql:5',
      'pg:',
      'pg:7',
      'pg:1:2:3;x;5',
      'pg:1:2:;3:4:;',
      '-1',
      "pg:1:2:'",
    ]) {
      expect(parsePosition(text), text).toBeNull();
    }
  });
});

describe('window SQL', () => {
  it('a plain logId is a log_id bound', () => {
    expect(windowCondition(parsePosition('10')!, parsePosition('20')!)).toBe(
      `log_id > '10' AND log_id <= '20'`,
    );
  });

  it('a snapshot: rows not visible in the previous one, from its xmin on (index-friendly)', () => {
    const sql = windowCondition(parsePosition('pg:100:105:101')!, parsePosition('pg:110:112:')!);
    expect(sql).toContain(`txid >= pg_snapshot_xmin('100:105:101'::pg_snapshot)`);
    expect(sql).toContain(`NOT pg_visible_in_snapshot(txid, '100:105:101'::pg_snapshot)`);
    expect(sql).toContain(`coalesce(pg_visible_in_snapshot(txid, '110:112:'::pg_snapshot), true)`);
  });

  it('a cut window: the rows of its snapshot up to its logId count as shipped', () => {
    const cut = parsePosition('pg:100:105:;110:112:;42')!;
    expect(inPosition(cut)).toBe(
      `(coalesce(pg_visible_in_snapshot(txid, '100:105:'::pg_snapshot), true) OR ` +
        `(coalesce(pg_visible_in_snapshot(txid, '110:112:'::pg_snapshot), true) AND log_id <= '42'))`,
    );
    const next = windowCondition(cut, parsePosition('pg:110:112:')!);
    expect(next.startsWith(`NOT ${inPosition(cut)} AND `)).toBe(true);
  });
});
