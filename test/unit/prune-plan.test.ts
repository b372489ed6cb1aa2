/** The retention rules (src/steps/prune/plan.ts), as pure functions. */
import { describe, expect, it } from 'vitest';
import {
  ago,
  describeHolding,
  planPrune,
  readersFloor,
  type PlanDelta,
  type ReaderPosition,
} from '../../src/steps/prune/plan.js';

const NOW = new Date('2026-11-30T12:00:00Z');
const hoursAgo = (h: number) => new Date(NOW.getTime() - h * 3_600_000).toISOString();

/** Deltas 1..n (logIds 10, 20, …), the i-th made n-i+1 hours ago (oldest first), 100 bytes each. */
function chain(n: number, bases: number[] = []): PlanDelta[] {
  return Array.from({ length: n }, (_, i) => ({
    logId: String((i + 1) * 10),
    fromLogId: String(i * 10),
    manifest: `m${(i + 1) * 10}`,
    createdAt: hoursAgo(n - i),
    parts: [`p${(i + 1) * 10}a`, `p${(i + 1) * 10}b`],
    bytes: 100,
    fullBase: bases.includes((i + 1) * 10),
  }));
}

const replica = (name: string, logId: string, since: string | null = null): ReaderPosition => ({
  kind: 'replica',
  name,
  logId,
  since,
});
const dest = (name: string, logId: string): ReaderPosition => ({
  kind: 'destination',
  name,
  logId,
  since: null,
});
const NO_MINIMUM = { keepDeltas: 0, keepHours: 0 };
const removed = (p: { remove: PlanDelta[] }) => p.remove.map((d) => d.logId);

describe('planPrune: readers', () => {
  it('removes what every reader has passed, nothing more', () => {
    const p = planPrune(chain(10), [replica('a', '50'), dest('d', '100')], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual(['10', '20', '30', '40', '50']);
    expect(p.held).toHaveLength(1);
    expect(p.held[0]).toMatchObject({ deltas: 5, bytes: 500, fromLogId: '60', toLogId: '100' });
    expect(p.held[0]!.reason).toEqual({ kind: 'reader', reader: replica('a', '50') });
    expect(p.floor).toBe('50');
  });

  it('is held by the reader furthest behind', () => {
    const p = planPrune(
      chain(10),
      [replica('a', '70'), replica('b', '30'), dest('d', '90')],
      NO_MINIMUM,
      NOW,
    );
    expect(removed(p)).toEqual(['10', '20', '30']);
    expect(p.held[0]!.reason).toMatchObject({ kind: 'reader', reader: { name: 'b' } });
    // Every later delta is needed by 'b' too: one holding, in its name.
    expect(p.held.map((h) => [h.fromLogId, h.toLogId, h.deltas])).toEqual([['40', '100', 7]]);
  });

  it('past the furthest reader, the next one behind is named', () => {
    const p = planPrune(chain(10), [replica('a', '70'), dest('d', '100')], NO_MINIMUM, NOW);
    expect(p.held[0]!.reason).toMatchObject({ reader: { name: 'a' } });
    const q = planPrune(chain(10), [replica('a', '100'), dest('d', '80')], NO_MINIMUM, NOW);
    expect(q.held[0]!.reason).toMatchObject({ reader: { kind: 'destination', name: 'd' } });
    expect(removed(q)).toHaveLength(8);
  });

  it('with no reader known, nothing goes', () => {
    const p = planPrune(chain(5), [], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual([]);
    expect(p.held).toEqual([
      { reason: { kind: 'no-readers' }, deltas: 5, bytes: 500, fromLogId: '10', toLogId: '50' },
    ]);
    expect(p.floor).toBe('0');
  });

  it('a reader at 0 without a base holds everything', () => {
    const p = planPrune(chain(5), [replica('new', '0'), replica('old', '50')], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual([]);
    expect(p.held[0]).toMatchObject({ deltas: 5, reason: { reader: { name: 'new' } } });
    expect(p.floor).toBe('0');
  });

  it('a reader at 0 needs the newest base and everything after it, not what came before', () => {
    const p = planPrune(
      chain(10, [30, 60]),
      [replica('new', '0'), replica('old', '100')],
      NO_MINIMUM,
      NOW,
    );
    expect(removed(p)).toEqual(['10', '20', '30', '40', '50']);
    expect(p.held[0]).toMatchObject({ fromLogId: '60', toLogId: '100', deltas: 5 });
    expect(p.floor).toBe('50');
  });

  it('the newest base stays while a reader has not applied it, even with readers past it', () => {
    const p = planPrune(chain(6, [40]), [replica('a', '30'), replica('b', '60')], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual(['10', '20', '30']);
  });

  it('once every reader has passed the base, the base may go too', () => {
    const p = planPrune(chain(6, [40]), [replica('a', '60')], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual(['10', '20', '30', '40', '50', '60']);
  });

  it('takes deltas in logId order (numeric), whatever order they come in', () => {
    const deltas = chain(12).reverse();
    const p = planPrune(deltas, [replica('a', '100')], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual(['10', '20', '30', '40', '50', '60', '70', '80', '90', '100']);
  });

  it('compares logIds beyond 2^53 exactly', () => {
    const big = (n: bigint) => (2n ** 60n + n).toString();
    const deltas: PlanDelta[] = [1n, 2n, 3n].map((n) => ({
      logId: big(n),
      fromLogId: big(n - 1n),
      manifest: `m${n}`,
      createdAt: hoursAgo(48),
      parts: [],
      bytes: 1,
      fullBase: false,
    }));
    const p = planPrune(deltas, [replica('a', big(2n))], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual([big(1n), big(2n)]);
  });
});

describe('planPrune: minimums', () => {
  it('always keeps the newest keepDeltas', () => {
    const p = planPrune(chain(10), [replica('a', '100')], { keepDeltas: 3, keepHours: 0 }, NOW);
    expect(removed(p)).toEqual(['10', '20', '30', '40', '50', '60', '70']);
    expect(p.held).toEqual([
      {
        reason: { kind: 'keepDeltas', keepDeltas: 3 },
        deltas: 3,
        bytes: 300,
        fromLogId: '80',
        toLogId: '100',
      },
    ]);
  });

  it('keepDeltas larger than what is there keeps everything', () => {
    const p = planPrune(chain(4), [replica('a', '40')], { keepDeltas: 10, keepHours: 0 }, NOW);
    expect(removed(p)).toEqual([]);
  });

  it('keeps what is younger than keepHours; keepHours 0 is no age minimum', () => {
    // Delta i of 10 was made 10-i+1 hours ago: 10 hours ago … 1 hour ago.
    const readers = [replica('a', '100')];
    const p = planPrune(chain(10), readers, { keepDeltas: 0, keepHours: 4.5 }, NOW);
    expect(removed(p)).toEqual(['10', '20', '30', '40', '50', '60']);
    expect(p.held[0]!.reason).toEqual({ kind: 'keepHours', keepHours: 4.5 });
    expect(removed(planPrune(chain(10), readers, NO_MINIMUM, NOW))).toHaveLength(10);
  });

  it('a delta whose createdAt does not parse is not proven old enough', () => {
    const deltas = chain(3);
    deltas[0]!.createdAt = 'yesterday';
    const p = planPrune(deltas, [replica('a', '30')], { keepDeltas: 0, keepHours: 1 }, NOW);
    expect(removed(p)).toEqual([]);
    expect(p.held[0]!.reason.kind).toBe('keepHours');
  });

  it('readers come before minimums when saying why', () => {
    const p = planPrune(chain(10), [replica('a', '20')], { keepDeltas: 5, keepHours: 0 }, NOW);
    expect(p.held.map((h) => h.reason.kind)).toEqual(['reader']);
    expect(p.held[0]).toMatchObject({ fromLogId: '30', toLogId: '100', deltas: 8 });
  });
});

describe('planPrune: only a prefix goes', () => {
  it('a delta that could go on its own stays behind an earlier one that stays', () => {
    // The second delta claims to be old; the first is young: nothing goes, the chain stays whole.
    const deltas = chain(4);
    deltas[0]!.createdAt = hoursAgo(0.5);
    const p = planPrune(deltas, [replica('a', '40')], { keepDeltas: 0, keepHours: 2 }, NOW);
    expect(removed(p)).toEqual([]);
    expect(p.held.map((h) => h.reason.kind)).toEqual(['keepHours', 'after-held', 'keepHours']);
  });

  it('an unreadable manifest stays, with everything after it', () => {
    const deltas = chain(6);
    deltas[2] = { ...deltas[2]!, unreadable: true, parts: [] };
    const p = planPrune(deltas, [replica('a', '60')], NO_MINIMUM, NOW);
    expect(removed(p)).toEqual(['10', '20']);
    expect(p.held[0]).toMatchObject({ reason: { kind: 'unreadable', manifest: 'm30' } });
    expect(p.held[1]).toMatchObject({ reason: { kind: 'after-held' }, deltas: 3 });
  });

  it('every delta is either removed or held, exactly once', () => {
    for (let n = 0; n <= 12; n++) {
      for (const at of ['0', '10', '50', '120']) {
        for (const keepDeltas of [0, 1, 5, 20]) {
          for (const keepHours of [0, 3, 100]) {
            const p = planPrune(
              chain(n, [40]),
              [replica('a', at), dest('d', '120')],
              { keepDeltas, keepHours },
              NOW,
            );
            const held = p.held.reduce((k, h) => k + h.deltas, 0);
            expect(p.remove.length + held).toBe(n);
            // Nothing a reader needs goes: removed logIds are at or below the floor.
            for (const d of p.remove) expect(BigInt(d.logId) <= BigInt(p.floor)).toBe(true);
            expect(p.remove.length).toBeLessThanOrEqual(Math.max(0, n - keepDeltas));
          }
        }
      }
    }
  });
});

describe('readersFloor', () => {
  it('is the lowest position, a reader at 0 standing just before the newest base', () => {
    const base = chain(6, [40])[3]!;
    expect(readersFloor([replica('a', '0'), replica('b', '60')], base)).toBe('30');
    expect(readersFloor([replica('a', '0'), replica('b', '20')], base)).toBe('20');
    expect(readersFloor([replica('a', '0')], null)).toBe('0');
    expect(readersFloor([], base)).toBe('0');
  });
});

describe('describing holdings', () => {
  it('names the replica, its logId and how long ago, as status prints it', () => {
    const p = planPrune(
      chain(5),
      [replica('mapas', '20', hoursAgo(50)), dest('d', '50')],
      NO_MINIMUM,
      NOW,
    );
    expect(describeHolding(p.held[0]!, NOW)).toBe(
      "holding 3 deltas (300 bytes) for replica 'mapas', which has applied nothing since logId 20, 2 days ago",
    );
  });

  it('says what each other reason means', () => {
    const one = { deltas: 1, bytes: 7, fromLogId: '1', toLogId: '1' };
    expect(describeHolding({ ...one, reason: { kind: 'no-readers' } }, NOW)).toMatch(
      /^holding 1 delta \(7 bytes\): no reader has reported a position here/,
    );
    expect(
      describeHolding({ ...one, reason: { kind: 'keepDeltas', keepDeltas: 10 } }, NOW),
    ).toContain('the newest 10 are always kept (retention.keepDeltas)');
    expect(
      describeHolding({ ...one, reason: { kind: 'keepHours', keepHours: 24 } }, NOW),
    ).toContain('younger than 24 hours (retention.keepHours)');
    expect(
      describeHolding({ ...one, reason: { kind: 'reader', reader: replica('x', '0') } }, NOW),
    ).toContain("replica 'x', which has applied nothing yet");
    expect(
      describeHolding({ ...one, reason: { kind: 'reader', reader: dest('d', '0') } }, NOW),
    ).toContain("destination 'd', where copy has published nothing yet");
  });

  it('ago', () => {
    expect(ago(hoursAgo(49), NOW)).toBe('2 days ago');
    expect(ago(hoursAgo(1), NOW)).toBe('1 hour ago');
    expect(ago(hoursAgo(0.05), NOW)).toBe('3 minutes ago');
    expect(ago(NOW.toISOString(), NOW)).toBe('just now');
    expect(ago(null, NOW)).toBeNull();
    expect(ago('garbage', NOW)).toBeNull();
  });
});
