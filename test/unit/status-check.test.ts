/**
 * status --check's rules, durations, run records and the metrics text, as pure functions. The
 * metrics are read back with a real Prometheus text-format parser, not by matching strings.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, describe, expect, it } from 'vitest';
import { readLastRun, writeLastRun, type RunOutcome } from '../../src/steps/last-run.js';
import { formatMetrics } from '../../src/steps/metrics.js';
import {
  CheckCode,
  checkStatus,
  formatDuration,
  parseDuration,
} from '../../src/steps/status-check.js';
import type { JobStatus, StepStatus } from '../../src/steps/status.js';

const dir = mkdtempSync(join(tmpdir(), 'deltasync-status-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(exitCode: number, finished: string, message = 'done: nothing to do'): RunOutcome {
  return { started: finished, finished, exitCode, message, deltas: 0, rows: 0, bytes: 0 };
}

function step(over: Partial<StepStatus>): StepStatus {
  return { step: 'load', logId: '7', updatedAt: null, lastRun: null, lastSuccess: null, ...over };
}

function job(steps: StepStatus[], problems?: string[]): JobStatus {
  return { job: 'acme', checkedAt: new Date().toISOString(), steps, ...(problems && { problems }) };
}

describe('durations', () => {
  it('reads 90s, 15m, 2h, 1d and bare seconds, and refuses anything else', () => {
    expect(parseDuration('90s')).toBe(90);
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration('2h')).toBe(7200);
    expect(parseDuration('1d')).toBe(86_400);
    expect(parseDuration('45')).toBe(45);
    for (const bad of ['', '0s', '-5m', '1.5h', '15 minutes', 'm', '2w']) {
      expect(parseDuration(bad), bad).toBeNull();
    }
  });

  it('prints them for humans', () => {
    expect(formatDuration(42)).toBe('42s');
    expect(formatDuration(192)).toBe('3m12s');
    expect(formatDuration(7500)).toBe('2h05m');
    expect(formatDuration(3 * 86_400 + 4 * 3600)).toBe('3d04h');
  });
});

describe('status --check', () => {
  it('is OK under max-lag, WARNING above it, CRITICAL above twice it', () => {
    const at = (lagSeconds: number) =>
      checkStatus({ ...job([step({ lagSeconds, waiting: 0 })]), heartbeatSeconds: 30 }, 60);
    expect(at(60)).toMatchObject({ code: CheckCode.OK });
    expect(at(60).line).toBe(
      'DELTASYNC OK - job acme: lag 1m00s, 0 waiting | lag=60s;60;120;0 waiting=0;;;0',
    );
    expect(at(61)).toMatchObject({ code: CheckCode.WARNING });
    expect(at(61).line).toMatch(/^DELTASYNC WARNING - job acme: load lag 1m01s > max-lag 1m00s \|/);
    expect(at(120).code).toBe(CheckCode.WARNING);
    expect(at(121).code).toBe(CheckCode.CRITICAL);
  });

  it('says an idle source may be why, when there are no heartbeats to tell', () => {
    const quiet = checkStatus(job([step({ lagSeconds: 90, waiting: 0 })]), 60);
    expect(quiet.line).toContain(
      'load lag 1m30s (nothing waiting: the source may be idle; delta.heartbeatSeconds tells idle from stalled)',
    );
  });

  it('is CRITICAL on a failed last run or a gap, whatever the lag', () => {
    const failed = checkStatus(
      job([
        step({
          lagSeconds: 1,
          error: 'gap: the delta after logId 7 is missing',
          lastRun: { ...run(65, 'x'), job: 'acme', step: 'load', lastSuccess: null },
        }),
      ]),
    );
    expect(failed.code).toBe(CheckCode.CRITICAL);
    expect(failed.line).toContain('load failed (exit 65): gap: the delta after logId 7 is missing');
    const gap = checkStatus(job([step({ lagSeconds: 1, gaps: ['after logId 7 …'] })]));
    expect(gap.code).toBe(CheckCode.CRITICAL);
  });

  it('is UNKNOWN when status could not read what it needs, unless something is CRITICAL', () => {
    const unreadable = checkStatus(job([step({ lagSeconds: 1 })], ['replica: refused']));
    expect(unreadable.code).toBe(CheckCode.UNKNOWN);
    expect(unreadable.line).toContain('cannot read replica: refused');
    const both = checkStatus(job([step({ lagSeconds: 1, gaps: ['x'] })], ['inbox: gone']));
    expect(both.code).toBe(CheckCode.CRITICAL);
  });

  it('warns when the lag cannot be told, and keeps to one line', () => {
    const never = checkStatus(job([step({ note: 'the replica has applied nothing\nyet' })]));
    expect(never.code).toBe(CheckCode.WARNING);
    expect(never.line).not.toMatch(/\n/);
    expect(never.line.split('|')).toHaveLength(2);
  });
});

describe('run records', () => {
  it('keep the last success through failures, and replace it on the next success', async () => {
    await writeLastRun(dir, 'acme', 'load.eu', run(0, '2026-01-01T00:00:00.000Z'));
    await writeLastRun(dir, 'acme', 'load.eu', run(69, '2026-01-01T00:05:00.000Z', 'unreachable'));
    const failed = await readLastRun(dir, 'acme', 'load.eu');
    expect(failed).toMatchObject({ exitCode: 69, message: 'unreachable', step: 'load.eu' });
    expect(failed!.lastSuccess!.finished).toBe('2026-01-01T00:00:00.000Z');
    await writeLastRun(dir, 'acme', 'load.eu', run(0, '2026-01-01T00:10:00.000Z'));
    expect((await readLastRun(dir, 'acme', 'load.eu'))!.lastSuccess!.finished).toBe(
      '2026-01-01T00:10:00.000Z',
    );
    expect(await readLastRun(dir, 'acme', 'never')).toBeNull();
  });
});

describe('metrics text', () => {
  it('parses with a Prometheus text-format parser, labels escaped', () => {
    const record = {
      ...run(65, '2026-01-01T00:00:10.000Z', 'gap'),
      started: '2026-01-01T00:00:07.500Z',
      rows: 12,
      job: 'we"ird\\job',
      step: 'load.eu',
      lastSuccess: run(0, '2026-01-01T00:00:00.000Z'),
    };
    const text = formatMetrics(record, 'load', [
      step({ step: 'load.eu', lagSeconds: 30, waiting: 2, retained: 5, gaps: ['x'] }),
    ]);
    const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
    const value = (name: string) => Number(families.get(name)!.metrics[0]!.value);
    expect(families.get('deltasync_last_exit_code')!.type).toBe('GAUGE');
    expect(value('deltasync_last_exit_code')).toBe(65);
    expect(value('deltasync_last_run_duration_seconds')).toBe(2.5);
    expect(value('deltasync_last_run_rows')).toBe(12);
    expect(value('deltasync_last_success_timestamp_seconds')).toBe(
      Date.parse('2026-01-01T00:00:00.000Z') / 1000,
    );
    expect(families.get('deltasync_lag_seconds')!.metrics[0]).toEqual({
      value: '30',
      labels: { deltasync_job: 'we"ird\\job', step: 'load', replica: 'eu' },
    });
    expect(value('deltasync_pending_deltas')).toBe(2);
    expect(value('deltasync_retained_deltas')).toBe(5);
    expect(value('deltasync_gaps')).toBe(1);
  });
});
