import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  advanceGaps,
  formatGapCursor,
  MAX_OPEN_GAPS,
  needsRunning,
  parseGapCursor,
  withoutIds,
  type GapCursor,
} from '../../src/db/mysql/gaps.js';

const none = new Set<string>();

describe('MariaDB change-log gap cursors', () => {
  it('reads the old plain log_id cursor as one without gaps, and writes that form back', () => {
    expect(parseGapCursor('120')).toEqual({ high: '120', gaps: [] });
    expect(formatGapCursor({ high: '120', gaps: [] })).toBe('mysql:120');
    expect(parseGapCursor('mysql:120')).toEqual({ high: '120', gaps: [] });
    const c: GapCursor = { high: '9', gaps: [{ ids: [['4', '5']], watch: ['77'] }] };
    expect(parseGapCursor(formatGapCursor(c))).toEqual(c);
    expect(formatGapCursor(c)).toBe('mysql:9;4-5@77');
    const all: GapCursor = {
      high: '20',
      gaps: [
        {
          ids: [
            ['3', '3'],
            ['6', '8'],
          ],
          watch: ['1', '2'],
        },
        { ids: [['10', '10']], watch: [] },
        { ids: [['12', '12']], watch: null },
      ],
    };
    expect(formatGapCursor(all)).toBe('mysql:20;3,6-8@1.2;10@;12@?');
    expect(parseGapCursor(formatGapCursor(all))).toEqual(all);
    expect(formatGapCursor(all)).toMatch(/^[a-z][a-z0-9]*:[!-~]+$/); // what manifests accept
    for (const bad of ['mysql:x', 'pg:1:2:', 'mysql:9;4-5', 'mysql:9;4-@1', 'nope']) {
      expect(() => parseGapCursor(bad), bad).toThrow(ConfigError);
    }
  });

  it('removes ids from ranges', () => {
    expect(withoutIds([['1', '10']], ['1', '5', '10', '42'])).toEqual([
      ['2', '4'],
      ['6', '9'],
    ]);
    expect(withoutIds([['3', '3']], ['3'])).toEqual([]);
  });

  it('opens a gap for an id the snapshot does not show, watched by the writers running then', () => {
    const { cursor, closed } = advanceGaps(parseGapCursor('10'), {
      high: '14',
      holes: [['12', '12']],
      filled: [],
      running: new Set(['900', '901']),
    });
    expect(cursor).toEqual({ high: '14', gaps: [{ ids: [['12', '12']], watch: ['900', '901'] }] });
    expect(closed).toEqual([]);
  });

  it('ships a gap the next snapshot shows, and forgets it', () => {
    const start: GapCursor = { high: '14', gaps: [{ ids: [['12', '13']], watch: ['900'] }] };
    const { cursor } = advanceGaps(start, {
      high: '14',
      holes: [],
      filled: ['12', '13'],
      running: none,
    });
    expect(cursor).toEqual({ high: '14', gaps: [] });
    expect(formatGapCursor(cursor)).toBe('mysql:14');
  });

  it('closes a gap only one run after all its watchers were seen gone', () => {
    let cursor: GapCursor = { high: '14', gaps: [{ ids: [['12', '12']], watch: ['900', '901'] }] };
    // 900 still runs: the gap stays, watched by it alone.
    let step = advanceGaps(cursor, {
      high: '14',
      holes: [],
      filled: [],
      running: new Set(['900']),
    });
    expect(step.cursor.gaps).toEqual([{ ids: [['12', '12']], watch: ['900'] }]);
    // 900 is gone now, but it may have committed after this run's snapshot: not closed yet.
    step = advanceGaps(step.cursor, { high: '14', holes: [], filled: [], running: none });
    expect(step.cursor.gaps).toEqual([{ ids: [['12', '12']], watch: [] }]);
    expect(step.closed).toEqual([]);
    cursor = step.cursor;
    // The next snapshot was taken after 900 ended and still does not show 12: rolled back.
    step = advanceGaps(cursor, { high: '15', holes: [], filled: [], running: none });
    expect(step.closed).toEqual([['12', '12']]);
    expect(formatGapCursor(step.cursor)).toBe('mysql:15');
  });

  it('ships a gap that fills in the run where its watchers are gone', () => {
    const cursor: GapCursor = { high: '14', gaps: [{ ids: [['12', '12']], watch: [] }] };
    const step = advanceGaps(cursor, { high: '14', holes: [], filled: ['12'], running: none });
    expect(step.closed).toEqual([]);
    expect(step.cursor.gaps).toEqual([]);
  });

  it('keeps gaps open without the PROCESS privilege, and watches them once it is granted', () => {
    let step = advanceGaps(parseGapCursor('10'), {
      high: '13',
      holes: [['11', '11']],
      filled: [],
      running: null,
    });
    expect(step.cursor.gaps).toEqual([{ ids: [['11', '11']], watch: null }]);
    for (let i = 0; i < 3; i++) {
      step = advanceGaps(step.cursor, { high: '13', holes: [], filled: [], running: null });
    }
    expect(step.cursor.gaps).toEqual([{ ids: [['11', '11']], watch: null }]);
    expect(needsRunning(step.cursor, [], [])).toBe(true);
    step = advanceGaps(step.cursor, { high: '13', holes: [], filled: [], running: new Set(['5']) });
    expect(step.cursor.gaps).toEqual([{ ids: [['11', '11']], watch: ['5'] }]);
  });

  it('drops the oldest unprovable gaps beyond the limit', () => {
    const step = advanceGaps(parseGapCursor('0'), {
      high: String(MAX_OPEN_GAPS + 11),
      holes: [['1', String(MAX_OPEN_GAPS + 10)]],
      filled: [],
      running: null,
    });
    expect(step.dropped).toEqual([['1', '10']]);
    expect(step.cursor.gaps).toEqual([{ ids: [['11', String(MAX_OPEN_GAPS + 10)]], watch: null }]);
  });

  it('asks for the running transactions only when a gap is or will be open', () => {
    expect(needsRunning(parseGapCursor('10'), [], [])).toBe(false);
    expect(needsRunning(parseGapCursor('10'), [['3', '3']], [])).toBe(true);
    const watched: GapCursor = { high: '9', gaps: [{ ids: [['4', '4']], watch: ['1'] }] };
    expect(needsRunning(watched, [], [])).toBe(true);
    expect(needsRunning(watched, [], ['4'])).toBe(false);
    const ended: GapCursor = { high: '9', gaps: [{ ids: [['4', '4']], watch: [] }] };
    expect(needsRunning(ended, [], [])).toBe(false);
  });
});
