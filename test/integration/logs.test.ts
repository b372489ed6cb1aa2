/**
 * Log lines (issue 12 point 7), through the real bins: ISO times, level names, the job and the
 * step on every line, in a log file and on stdout; `--pretty` writes readable lines but never
 * colour codes unless stdout is a terminal, and never anything but JSON into log.file; no
 * progress line without a terminal.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { colourFor } from '../../src/log.js';
import { logLines, runBin, sqliteJob, type SqliteJob } from '../helpers/cli.js';

const jobs: SqliteJob[] = [];
afterEach(() => {
  for (const j of jobs.splice(0)) j.cleanup();
});

function job(extra: Record<string, unknown> = {}): SqliteJob {
  const j = sqliteJob(extra);
  jobs.push(j);
  j.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 1)");
  return j;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const ESC = '\x1b';

function expectContract(lines: Record<string, unknown>[], steps: string[]): void {
  expect(lines.length).toBeGreaterThan(0);
  for (const l of lines) {
    expect(l.time).toMatch(ISO);
    expect(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).toContain(l.level);
    expect(l.job).toBe('t');
    expect(steps).toContain(l.step);
  }
  expect(new Set(lines.map((l) => l.step))).toEqual(new Set(steps));
}

describe('log lines', () => {
  it('carry an ISO time, a level name, the job and the step, in log.file, even with --pretty', () => {
    const j = job();
    const file = join(j.dir, 'deltasync.log');
    const withFile = join(j.dir, 'with-file.js');
    writeFileSync(
      withFile,
      `import job from './job.js';\nexport default { ...job, log: { file: ${JSON.stringify(file)}, level: 'debug' } };\n`,
    );
    expect(runBin('deltasync-extract', ['-c', withFile, '--pretty']).code).toBe(0);
    // A failing run's error line follows the same contract.
    rmSync(j.inbox, { recursive: true });
    writeFileSync(j.inbox, 'not a directory');
    expect(runBin('deltasync-copy', ['-c', withFile, '--pretty']).code).toBe(69);
    const text = readFileSync(file, 'utf8');
    expect(text).not.toContain(ESC);
    const lines = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expectContract(lines, ['extract', 'copy']);
    expect(lines.some((l) => l.level === 'error' && l.step === 'copy')).toBe(true);
    // The summary names its step once (the logger's own field), as before.
    const summary = lines.find((l) => l.msg === 'summary' && l.step === 'extract')!;
    expect(summary.rows).toBe(1);
    expect(text.match(/"step":/g)!.length).toBe(lines.length);
  });

  it('carry the same on stdout without a log file', () => {
    const j = job();
    const r = runBin('deltasync-extract', ['-c', j.config, '-v']);
    expect(r.code).toBe(0);
    expectContract(logLines(r.stdout), ['extract']);
    // No terminal on stderr: no progress line.
    expect(r.stderr).not.toContain(ESC);
    expect(r.stderr).not.toContain('\r');
  });

  it('--pretty into a pipe or a file: readable lines with the same facts, no colour codes', () => {
    const j = job();
    const r = runBin('deltasync-extract', ['-c', j.config, '--pretty']);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(ESC);
    expect(r.stdout).toMatch(
      /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] INFO: \(t\/extract\) summary$/m,
    );
  });

  it('colours only a terminal, and not when NO_COLOR is set', () => {
    expect(colourFor({ isTTY: true }, {})).toBe(true);
    expect(colourFor({ isTTY: true }, { NO_COLOR: '1' })).toBe(false);
    expect(colourFor({ isTTY: false }, {})).toBe(false);
    expect(colourFor({}, {})).toBe(false);
  });
});
