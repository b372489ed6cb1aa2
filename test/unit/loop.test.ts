/** The loop's pure parts: durations, the step list, and the back-off of a failing step. */
import { describe, expect, it } from 'vitest';
import { formatDuration, parseDurationMs } from '../../src/cli/duration.js';
import { MAX_BACKOFF_MS, backoffMs, parseSteps } from '../../src/cli/loop.js';

describe('durations', () => {
  it('reads ms, s, m and h, and nothing else', () => {
    expect(['500ms', '2s', '1.5s', '1m', '2h'].map(parseDurationMs)).toEqual([
      500, 2000, 1500, 60_000, 7_200_000,
    ]);
    for (const bad of ['2', 's', '-1s', '1d', '1 m x', ''])
      expect(parseDurationMs(bad)).toBeUndefined();
  });

  it('shows them back the way a person writes them', () => {
    expect([500, 2000, 1500, 60_000, 90_000, 7_200_000].map(formatDuration)).toEqual([
      '500ms',
      '2s',
      '1.5s',
      '1m',
      '90s',
      '2h',
    ]);
  });
});

describe('parseSteps', () => {
  it('keeps the order given', () => {
    expect(parseSteps('extract,copy')).toEqual(['extract', 'copy']);
    expect(parseSteps('load')).toEqual(['load']);
  });

  it('refuses unknown and repeated steps', () => {
    expect(() => parseSteps('extract,prune')).toThrow(/'prune' is not a step/);
    expect(() => parseSteps('copy,copy')).toThrow(/twice/);
  });
});

describe('backoffMs', () => {
  it('retries one period after a first failure, then doubles, up to the cap', () => {
    expect([1, 2, 3, 4].map((n) => backoffMs(2000, n))).toEqual([2000, 4000, 8000, 16000]);
    expect(backoffMs(2000, 30)).toBe(MAX_BACKOFF_MS);
  });

  it('never waits less than the period, even when the period is over the cap', () => {
    expect(backoffMs(10 * 60_000, 5)).toBe(10 * 60_000);
  });
});
