/**
 * The terminal progress line (issue 12 point 6): what it says, that it redraws in place and
 * clears at the end, and that it never appears without a terminal or under CI.
 */
import { describe, expect, it } from 'vitest';
import {
  SHOW_AFTER_MS,
  TerminalProgress,
  clock,
  progressText,
  terminalProgress,
  wantsProgress,
} from '../../src/cli/progress.js';

function fakeTerminal(columns = 200) {
  const writes: string[] = [];
  return { isTTY: true, columns, writes, write: (t: string) => writes.push(t) };
}

describe('progressText', () => {
  it('shows table, rows, rate and elapsed; percentage and ETA only when the total is known', () => {
    expect(progressText('extract', 'items', 12_345, 5)).toBe(
      'extract items: 12,345 rows, 2,469 rows/s, 0:05 elapsed',
    );
    expect(progressText('load', 'items', 25_000, 10, 100_000)).toBe(
      'load items: 25,000 of 100,000 rows, 25%, 2,500 rows/s, 0:10 elapsed, ETA 0:30',
    );
    expect(progressText('load', 'items', 0, 0, 10)).toBe(
      'load items: 0 of 10 rows, 0%, 0 rows/s, 0:00 elapsed',
    );
  });

  it('writes clock times as m:ss or h:mm:ss', () => {
    expect([clock(0), clock(75), clock(3723)]).toEqual(['0:00', '1:15', '1:02:03']);
  });
});

describe('TerminalProgress', () => {
  it('redraws one line in place, fits the width, and clears it at the end', () => {
    const term = fakeTerminal(30);
    let now = 1_000;
    const line = new TerminalProgress('load', term, () => now);
    line.table('items', 1000);
    now += SHOW_AFTER_MS;
    line.draw();
    line.rows(500);
    now += 1_000;
    line.draw();
    line.done();
    expect(term.writes).toEqual([
      '\r\x1b[Kload items: 0 of 1,000 rows, ',
      '\r\x1b[Kload items: 500 of 1,000 rows',
      '\r\x1b[K',
    ]);
    for (const w of term.writes) expect(w).not.toContain('\n');
  });

  it('shows nothing for a step that ends quickly (an idle run, a loop iteration)', () => {
    const term = fakeTerminal();
    let now = 0;
    const line = new TerminalProgress('extract', term, () => now);
    line.table('items');
    now += SHOW_AFTER_MS - 1;
    line.draw();
    line.done();
    expect(term.writes).toEqual([]);
  });

  it('reads a polled count at each redraw, and draws nothing twice', () => {
    const term = fakeTerminal();
    let written = 0;
    let now = 0;
    const line = new TerminalProgress('extract', term, () => now);
    line.table('items', undefined, () => written);
    now += SHOW_AFTER_MS;
    line.draw();
    written = 42;
    line.draw();
    line.draw();
    expect(term.writes).toHaveLength(2);
    expect(term.writes[1]).toContain('items: 42 rows');
    line.done();
  });
});

describe('wantsProgress', () => {
  it('wants a terminal, and not CI', () => {
    const tty = { isTTY: true, write: () => true };
    expect(wantsProgress(tty, {})).toBe(true);
    expect(wantsProgress(tty, { CI: 'true' })).toBe(false);
    expect(wantsProgress(tty, { CI: 'false' })).toBe(true);
    expect(wantsProgress({ isTTY: false, write: () => true }, {})).toBe(false);
    expect(wantsProgress({ write: () => true }, {})).toBe(false);
  });

  it('gives no progress line at all for a stream that is not a terminal', () => {
    expect(terminalProgress('extract', { write: () => true })).toBeUndefined();
  });
});
