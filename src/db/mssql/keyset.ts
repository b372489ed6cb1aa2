/**
 * Timestamp mode on SQL Server: rows after a `(ts, key...)` cursor, up to a horizon, in
 * `(ts, key...)` order, at most `limit` of them.
 *
 * SQL Server has no row-value comparison, so `(ts, k1, k2) > (@ts, @k1, @k2)` is expanded as
 * `ts >= @ts AND (ts > @ts OR k1 > @k1 OR (k1 = @k1 AND k2 > @k2))`, whose leading
 * `ts >= @ts` an index on the timestamp column can seek to.
 *
 * The cursor and the horizon are wire values, and a wire value is not always a column value:
 * the wire carries microseconds, datetime2(7) and datetimeoffset(7) store 100 ns, and datetime
 * counts 1/300 s, rendered rounded to the millisecond. Every comparison must mean what it means
 * on the wire, or a row is read twice forever or skipped forever. So each wire bound becomes
 * the column value exactly at its edge ("the last value whose wire form is <= p", "the first
 * whose wire form is >= p"), computed here in integer 100 ns ticks and sent in the column's own
 * type, so that the column is compared with its own type and keeps its index. For the 100 ns
 * types the order is by the microsecond-truncated value, which is the wire order; see
 * `orderExpression` and `boundedByLimit` for what that costs.
 */
import { ConfigError } from '../../errors.js';
import type { KeysetCursor, LogicalType, WireValue } from '../types.js';
import { keyMatch } from './load.js';
import type { Query, QueryParam, TableName } from './sql.js';
import { driverWriter, quoteIdent, stagingFor, type MssqlColumn } from './types.js';

/** 100 ns units since 0001-01-01 00:00:00: SQL Server's finest resolution. */
export type Ticks = bigint;

const TICKS_PER_MS = 10_000n;
const TICKS_PER_SECOND = 10_000_000n;
const TICKS_PER_DAY = 86_400n * TICKS_PER_SECOND;
/** The wire's resolution: one microsecond. */
const WIRE_UNIT = 10n;

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/** The date of a day count since 1970-01-01 (H. Hinnant's civil_from_days). */
function civilFromDays(days: number): [number, number, number] {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

const EPOCH_DAYS = daysFromCivil(1, 1, 1);

const WIRE_TIME =
  /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?)?\s*(Z|[+-]\d\d:?\d\d)?$/i;

/**
 * A wire timestamp (`YYYY-MM-DD HH:MM:SS[.ffffff]`, or the timestamptz form `...THH:MM:SS...Z`;
 * a configured start may also be a date, or carry an offset) as ticks. `utc`: the column holds
 * instants (datetimeoffset, compared in UTC) and an offset is applied; otherwise the column
 * holds wall-clock times and only a zero offset makes sense.
 */
export function parseWireTime(value: WireValue, utc: boolean, what: string): Ticks {
  const m = typeof value === 'string' ? WIRE_TIME.exec(value) : null;
  const bad = () =>
    new ConfigError(`${what}: '${String(value)}' is not a timestamp (YYYY-MM-DD HH:MM:SS.ffffff)`);
  if (!m) throw bad();
  const [y, mo, d, h = 0, mi = 0, s = 0] = m.slice(1, 7).map((x) => Number(x ?? 0));
  const days = daysFromCivil(y!, mo!, d!);
  const [cy, cm, cd] = civilFromDays(days);
  if (y! < 1 || cy !== y || cm !== mo || cd !== d || h > 23 || mi > 59 || s > 59) throw bad();
  let ticks =
    BigInt(days - EPOCH_DAYS) * TICKS_PER_DAY +
    BigInt(h * 3600 + mi * 60 + s) * TICKS_PER_SECOND +
    BigInt((m[7] ?? '').padEnd(7, '0'));
  const zone = m[8]?.toUpperCase();
  if (zone && zone !== 'Z') {
    const sign = zone[0] === '-' ? -1n : 1n;
    const digits = zone.slice(1).replace(':', '');
    const minutes = BigInt(Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2)));
    if (!utc && minutes !== 0n) {
      throw new ConfigError(`${what}: '${value}' has a time zone, but the column has none`);
    }
    ticks -= sign * minutes * 60n * TICKS_PER_SECOND;
  }
  return ticks;
}

/** `YYYY-MM-DD HH:MM:SS[.f...]` with `digits` fractional digits (truncated), none for 0. */
export function formatTicks(ticks: Ticks, digits: number): string {
  const days = Number(ticks / TICKS_PER_DAY);
  const inDay = ticks % TICKS_PER_DAY;
  const [y, m, d] = civilFromDays(days + EPOCH_DAYS);
  const secs = Number(inDay / TICKS_PER_SECOND);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const date = `${pad(y, 4)}-${pad(m)}-${pad(d)}`;
  const time = `${pad(Math.floor(secs / 3600))}:${pad(Math.floor(secs / 60) % 60)}:${pad(secs % 60)}`;
  const fraction = String(inDay % TICKS_PER_SECOND)
    .padStart(7, '0')
    .slice(0, digits);
  return digits > 0 ? `${date} ${time}.${fraction}` : `${date} ${time}`;
}

/** What a timestamp column stores, and how a bound in its type is written. */
export interface TimestampColumn {
  column: MssqlColumn;
  /** datetimeoffset: compared as UTC instants. */
  utc: boolean;
  /** datetime counts 1/300 s; the others a power of ten of ticks (`unit`). */
  datetime: boolean;
  unit: bigint;
  /** Fractional digits of a bound, and the range of the type. */
  digits: number;
  min: Ticks;
  max: Ticks;
  /** Stores 100 ns: the wire (microseconds) truncates it, so several values share a wire form. */
  finerThanWire: boolean;
}

const at = (text: string) => parseWireTime(text, false, 'range');

/** The timestamp column's rules; ConfigError for a column that is not a date and time. */
export function timestampColumn(column: MssqlColumn): TimestampColumn {
  const scale = Number(/\((\d)\)$/.exec(column.nativeType)?.[1] ?? 7);
  const scaled = (utc: boolean): TimestampColumn => {
    const unit = 10n ** BigInt(7 - scale);
    return {
      column,
      utc,
      datetime: false,
      unit,
      digits: scale,
      min: 0n,
      max: at('9999-12-31 23:59:59.9999999') - (at('9999-12-31 23:59:59.9999999') % unit),
      finerThanWire: scale === 7,
    };
  };
  switch (column.baseType) {
    case 'datetime2':
      return scaled(false);
    case 'datetimeoffset':
      return scaled(true);
    case 'smalldatetime':
      return {
        column,
        utc: false,
        datetime: false,
        unit: 60n * TICKS_PER_SECOND,
        digits: 0,
        min: at('1900-01-01 00:00:00'),
        max: at('2079-06-06 23:59:00'),
        finerThanWire: false,
      };
    case 'datetime':
      return {
        column,
        utc: false,
        datetime: true,
        unit: TICKS_PER_MS,
        digits: 3,
        min: at('1753-01-01 00:00:00'),
        max: at('9999-12-31 23:59:59.997'),
        finerThanWire: false,
      };
    default:
      throw new ConfigError(
        `timestamp column ${column.name} is ${column.nativeType}, not datetime, datetime2, smalldatetime or datetimeoffset`,
      );
  }
}

const floorTo = (x: bigint, unit: bigint) => x - (x % unit);
const ceilTo = (x: bigint, unit: bigint) => (x % unit === 0n ? x : x - (x % unit) + unit);
const clamp = (x: bigint, c: TimestampColumn) => (x < c.min ? c.min : x > c.max ? c.max : x);

/** The millisecond datetime shows for its n-th 1/300 s of a second: 0, 3, 7, 10, 13, 17, ... */
const datetimeMs = (n: bigint) => (10n * n + 1n) / 3n;

/**
 * The last column value whose wire form is <= `p`. Values beyond the type's range are clamped
 * to it (a horizon past 9999 means "everything").
 */
export function lastAtOrBefore(c: TimestampColumn, p: Ticks): Ticks {
  if (c.datetime) {
    // The n-th 1/300 s shows as round(10n/3) ms; the last n whose ms <= m is (6m+3)/20.
    const second = floorTo(p, TICKS_PER_SECOND);
    const ms = (p - second) / TICKS_PER_MS;
    const n = (6n * ms + 3n) / 20n;
    return clamp(second + datetimeMs(n > 299n ? 299n : n) * TICKS_PER_MS, c);
  }
  // A value's wire form is the value truncated to the microsecond: <= p up to p's last 100 ns.
  return clamp(floorTo(floorTo(p, WIRE_UNIT) + WIRE_UNIT - 1n, c.unit), c);
}

/** The first column value whose wire form is >= `p` (clamped to the type's range). */
export function firstAtOrAfter(c: TimestampColumn, p: Ticks): Ticks {
  if (c.datetime) {
    // The first n whose ms = round(10n/3) >= m is ceil((6m-3)/20); past 299 is the next second.
    let second = floorTo(p, TICKS_PER_SECOND);
    const ms = ceilTo(p - second, TICKS_PER_MS) / TICKS_PER_MS;
    let n = ms === 0n ? 0n : (6n * ms - 3n + 19n) / 20n;
    if (n > 299n) {
      second += TICKS_PER_SECOND;
      n = 0n;
    }
    return clamp(second + datetimeMs(n) * TICKS_PER_MS, c);
  }
  return clamp(ceilTo(ceilTo(p, WIRE_UNIT), c.unit), c);
}

/** A bound as a parameter (text) and the SQL that makes it a value of the column's type. */
export function boundParam(c: TimestampColumn, name: string, ticks: Ticks): Query {
  const native = c.column.nativeType;
  let text = formatTicks(ticks, c.digits);
  let sql: string;
  if (c.utc) {
    // ISO 8601 with an offset: read the same whatever the session's language or DATEFORMAT.
    text = `${text} +00:00`;
    sql = `CONVERT(${native}, @${name})`;
  } else {
    // 121 is yyyy-mm-dd hh:mi:ss.fff..., 120 the same without a fraction.
    sql = `CONVERT(${native}, @${name}, ${c.digits > 0 ? 121 : 120})`;
  }
  return { text: sql, params: [{ name, type: 'VarChar', length: 40, value: text }] };
}

/**
 * The value of a key column as a parameter in the column's own type, so that `>` and `=` compare
 * as the column orders (its collation; varchar as varchar) and a datetime key equals its row.
 */
export function keyParam(
  column: MssqlColumn,
  type: LogicalType,
  name: string,
  value: WireValue,
): Query {
  if (value === null)
    throw new ConfigError(`the cursor has no value for key column ${column.name}`);
  const staged = stagingFor(type, column);
  const param: QueryParam = {
    name,
    type: staged.driver,
    length: staged.length,
    value: driverWriter(type, staged.driver, column.name)(value),
  };
  const collation = column.collation !== null && /^\w+$/.test(column.collation);
  const raw = collation ? `@${name} COLLATE ${column.collation}` : `@${name}`;
  const text = staged.driver === 'NVarChar' ? keyMatch(column, raw) : staged.parse(`@${name}`);
  return { text, params: [param] };
}

/**
 * `ts` as the order sees it. For the 100 ns types: truncated to the microsecond, because rows
 * whose timestamps differ only below it share a wire form and must be ordered by key among
 * themselves, as the cursor will compare them.
 */
export function orderExpression(c: TimestampColumn): string {
  const col = quoteIdent(c.column.name);
  return c.finerThanWire
    ? `DATEADD(nanosecond, -(DATEPART(nanosecond, ${col}) % 1000), ${col})`
    : col;
}

/** One key column of the cursor, its type on the wire. */
export interface KeysetKey {
  column: MssqlColumn;
  type: LogicalType;
}

export interface KeysetRequest {
  table: TableName;
  /** The select list, wire renderings. */
  select: string[];
  ts: TimestampColumn;
  key: KeysetKey[];
  after: KeysetCursor | null;
  upTo: WireValue;
  limit?: number;
}

/** `k1 > @k1 OR (k1 = @k1 AND (k2 > @k2 OR ...))`: the key part of the expanded row comparison. */
function keyAfter(keys: { col: string; value: string }[]): string {
  const [first, ...rest] = keys;
  if (!first) return '1 = 0';
  if (rest.length === 0) return `${first.col} > ${first.value}`;
  return `${first.col} > ${first.value} OR (${first.col} = ${first.value} AND (${keyAfter(rest)}))`;
}

/** The WHERE clause (cursor and horizon) and its parameters. */
export function keysetWhere(req: KeysetRequest): Query {
  const { ts } = req;
  const col = quoteIdent(ts.column.name);
  const what = `table ${req.table.label}: ${ts.column.name}`;
  const horizon = boundParam(ts, 'upTo', lastAtOrBefore(ts, parseWireTime(req.upTo, ts.utc, what)));
  const conditions = [`${col} <= ${horizon.text}`];
  const params = [...horizon.params];
  if (req.after) {
    const c = parseWireTime(req.after.ts, ts.utc, `${what} (cursor)`);
    const from = boundParam(ts, 'tsFrom', firstAtOrAfter(ts, c));
    params.push(...from.params);
    if (req.after.key.length === 0) {
      conditions.push(`${col} >= ${from.text}`);
    } else {
      if (req.after.key.length !== req.key.length) {
        throw new ConfigError(
          `table ${req.table.label}: the cursor has ${req.after.key.length} key values for ${req.key.length} key columns`,
        );
      }
      const through = boundParam(ts, 'tsThrough', lastAtOrBefore(ts, c));
      const keys = req.key.map((k, i) => {
        const p = keyParam(k.column, k.type, `k${i}`, req.after!.key[i]!);
        params.push(...p.params);
        return { col: quoteIdent(k.column.name), value: p.text };
      });
      params.push(...through.params);
      conditions.push(`${col} >= ${from.text} AND (${col} > ${through.text} OR ${keyAfter(keys)})`);
    }
  }
  return { text: conditions.join(' AND '), params };
}

/**
 * For the 100 ns types with a limit: the first `limit` rows in (truncated ts, key) order all
 * lie at or before the microsecond of the limit-th row in plain ts order (that many rows come
 * no later than it), so the sort is bounded to about `limit` rows instead of the whole backlog,
 * and the inner TOP is an index range scan.
 */
function boundedByLimit(req: KeysetRequest, where: string): string {
  const col = quoteIdent(req.ts.column.name);
  const last = 'MAX(b.ts)';
  return (
    `${col} < (SELECT DATEADD(microsecond, 1, DATEADD(nanosecond, -(DATEPART(nanosecond, ${last}) % 1000), ${last})) ` +
    `FROM (SELECT TOP (@limit) ${col} AS ts FROM ${req.table.quoted} WHERE ${where} ORDER BY ${col}) AS b)`
  );
}

/** The whole read: select list, cursor, horizon, order, limit. */
export function readKeysetQuery(req: KeysetRequest): Query {
  const where = keysetWhere(req);
  const params = [...where.params];
  let top = '';
  let condition = where.text;
  if (req.limit !== undefined) {
    if (!Number.isSafeInteger(req.limit) || req.limit < 1) {
      throw new Error(`readKeyset: limit must be 1 or more, got ${req.limit}`);
    }
    top = 'TOP (@limit) ';
    params.push({ name: 'limit', type: 'BigInt', value: BigInt(req.limit) });
    if (req.ts.finerThanWire) condition = `${condition} AND ${boundedByLimit(req, where.text)}`;
  }
  const order = [orderExpression(req.ts), ...req.key.map((k) => quoteIdent(k.column.name))];
  return {
    text: `SELECT ${top}${req.select.join(', ')} FROM ${req.table.quoted} WHERE ${condition} ORDER BY ${order.join(', ')}`,
    params,
  };
}
