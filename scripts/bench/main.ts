/**
 * The command-line shell every benchmark script shares: parse the options (exit 64 on a bad one,
 * usage on --help), run, print the report (or its JSON), and drop what the run created on the
 * normal end and on SIGINT/SIGTERM alike, unless --keep.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killRunning } from './process.js';
import { Releasers } from './releasers.js';
import { runStep, type StepName, type StepResult } from './run-step.js';

/** dist/scripts/bench/main.js -> the repository root, where bin/ lives. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The PostgreSQL admin connection the benchmarks create and drop their databases with. */
export const PG_ADMIN_URL =
  process.env.DELTASYNC_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A positive whole-number option (`1_000_000` allowed), or `fallback` when absent. */
function positiveInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value.replace(/_/g, ''));
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new Error(`${flag} must be a positive integer, got '${value}'`);
  return n;
}

/** The options every benchmark takes, for parseArgs; a script adds its own. */
export const COMMON_OPTIONS = {
  rows: { type: 'string' },
  'part-rows': { type: 'string' },
  json: { type: 'boolean', default: false },
  keep: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** The common options' values; `defaultRows` is the script's own. */
export function commonValues(
  values: { rows?: string; 'part-rows'?: string; json?: boolean; keep?: boolean },
  defaultRows: number,
): { rows: number; partRows: number; json: boolean; keep: boolean } {
  return {
    rows: positiveInt('--rows', values.rows, defaultRows),
    partRows: positiveInt('--part-rows', values['part-rows'], 200_000),
    json: values.json ?? false,
    keep: values.keep ?? false,
  };
}

export interface BenchScript<
  O extends { json: boolean; keep: boolean },
  R extends { ok: boolean },
> {
  /** The prefix of every stderr line, e.g. `bench`. */
  name: string;
  usage: string;
  /** Null for --help; throws on a bad option. */
  parse(argv: string[]): O | null;
  run(options: O, releasers: Releasers): Promise<R>;
  format(report: R): string;
}

/** Progress on stderr, so stdout carries only the figures. */
export function progressTo(name: string): (message: string) => void {
  return (message) => process.stderr.write(`${name}: ${message}\n`);
}

/** Runs one step's real bin with `config`, saying on stderr how it went. */
export async function timedStep(
  progress: (message: string) => void,
  step: StepName,
  config: string,
  label: string,
): Promise<StepResult> {
  const result = await runStep(REPO_ROOT, step, config);
  const rss = result.peakRssMb === null ? '' : `, peak RSS ${result.peakRssMb.toFixed(0)} MB`;
  progress(
    `${label} ${step}: ${result.seconds.toFixed(2)} s, ${result.summary.rows ?? '?'} rows${rss}`,
  );
  return result;
}

/** Runs a benchmark script; resolves to its exit code (0, 1 when a check failed, 64 on usage). */
export async function benchMain<
  O extends { json: boolean; keep: boolean },
  R extends { ok: boolean },
>(script: BenchScript<O, R>): Promise<number> {
  const progress = progressTo(script.name);
  let options: O | null;
  try {
    options = script.parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${script.name}: ${(err as Error).message}\n${script.usage}\n`);
    return 64;
  }
  if (!options) {
    process.stdout.write(`${script.usage}\n`);
    return 0;
  }
  const keep = options.keep;

  const releasers = new Releasers();
  // One cleanup, shared by the normal end and a signal arriving mid-run, so neither exits while
  // the other is still dropping a database.
  let releasing: Promise<void> | undefined;
  const release = (): Promise<void> =>
    (releasing ??= keep
      ? Promise.resolve(progress(`--keep: left in place: ${releasers.pending().join('; ')}`))
      : releasers.releaseAll((what, err) =>
          progress(`could not remove ${what}: ${(err as Error).message}`),
        ));
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: stopping and cleaning up`);
    killRunning();
    void release().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const report = await script.run(options, releasers);
    process.stdout.write(
      options.json ? `${JSON.stringify(report, null, 2)}\n` : `\n${script.format(report)}\n`,
    );
    return report.ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`${script.name}: FAILED: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await release();
  }
}
