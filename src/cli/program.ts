/**
 * The command line: flags in, library calls out. `deltasync <command>` and the cron entrypoints
 * `deltasync-extract`, `deltasync-copy`, `deltasync-load` share these definitions.
 *
 * Each command imports its step when it runs, not here: a cron run with nothing to do pays Node's
 * start-up for every module it loads, and one step needs none of the others' code.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ConfigError, ExitCode, PrivilegeError, describeError } from '../errors.js';
import {
  CheckCode,
  DEFAULT_MAX_LAG,
  checkStatus,
  parseDuration,
  unknownLine,
} from '../steps/status-check.js';
import { loadConfig } from '../config/load.js';
import { parseDurationMs } from './duration.js';
import { LOOP_STEPS, parseSteps, runLoop, type LoopStep } from './loop.js';
import {
  EXIT_USAGE,
  runCommand,
  type CommandContext,
  type CommandFn,
  type CommonOptions,
} from './run.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError('must be a whole number of at least 1');
  return n;
}

function withCommon(cmd: Command): Command {
  return cmd
    .requiredOption('-c, --config <file>', 'job config file (.js or .ts)')
    .option(
      '-v, --verbose',
      'debug logging; say why on stderr even when another instance holds the lock',
    )
    .option('--pretty', 'readable log lines even when stdout is not a terminal');
}

/** Sets the exit code; commander's action handlers cannot return one. */
function exitWith(code: number): void {
  process.exitCode = code;
}

/**
 * Runs one cron step and tells its run record what it did: the per-step path that the single
 * commands and every iteration of a loop share (with `runRecorded` around it).
 */
export async function runStep(
  name: 'extract' | 'copy' | 'load',
  ctx: CommandContext,
): Promise<void> {
  if (name === 'extract') {
    const { extract } = await import('../steps/extract/index.js');
    const r = await extract(ctx);
    ctx.summary({ deltas: r.deltas.length, rows: r.rows, bytes: r.bytes });
  } else if (name === 'copy') {
    const { copy } = await import('../steps/copy.js');
    const r = await copy(ctx);
    ctx.summary({
      deltas: r.deltas,
      rows: r.destinations.reduce((n, d) => n + d.rows, 0),
      bytes: r.bytes,
      destinations: r.destinations.map((d) => ({
        name: d.name,
        deltas: d.copied.length,
        rows: d.rows,
        bytes: d.bytes,
      })),
    });
  } else {
    const { load } = await import('../steps/load.js');
    const r = await load(ctx);
    ctx.summary({ deltas: r.applied.length, rows: r.rows, bytes: r.bytes });
  }
}

/** What `run --every` runs for each step: the same as the single commands. */
const STEP_RUNNERS: Record<LoopStep, CommandFn> = {
  extract: (ctx) => runStep('extract', ctx),
  copy: (ctx) => runStep('copy', ctx),
  load: (ctx) => runStep('load', ctx),
};

export function stepCommand(name: LoopStep): Command {
  const describe = {
    extract: 'write the next delta of the source changes into the outbox',
    copy: 'copy new deltas from the outbox to every destination, manifest last',
    load: 'apply the deltas waiting in the inbox to the replica, each in one transaction',
  }[name];
  const cmd = withCommon(new Command(name).description(describe));
  if (name === 'load') {
    cmd.option(
      '--dry-run',
      'change nothing: say which deltas a load would apply, what is in them, and where it would stop',
    );
  }
  return cmd.action(async (opts: CommonOptions & { dryRun?: boolean }) => {
    if (opts.dryRun) return exitWith(await loadDryRunCommand(opts));
    exitWith(await runCommand(name, name, opts, (ctx) => runStep(name, ctx)));
  });
}

/**
 * `load --dry-run`: prints the report, then exits as the load would: with the error of the delta
 * it would stop at (one line on stderr, 65 or 78), else 0. Named apart from `load` so that no
 * run record or metric of a load is written for it.
 */
async function loadDryRunCommand(opts: CommonOptions): Promise<number> {
  return runCommand('load --dry-run', 'load', opts, async (ctx) => {
    const { loadDryRun, formatDryRun } = await import('../steps/load-dry-run.js');
    const report = await loadDryRun(ctx);
    process.stdout.write(`${formatDryRun(report)}\n`);
    if (report.stop) throw report.stop.error;
  });
}

function loopSteps(value: string): LoopStep[] {
  try {
    return parseSteps(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function period(value: string): number {
  const ms = parseDurationMs(value);
  if (ms === undefined || ms < 1)
    throw new InvalidArgumentError(`'${value}' is not a duration: give one like 500ms, 2s or 1m`);
  return ms;
}

function runLoopCommand(): Command {
  return withCommon(
    new Command('run').description(
      'loop: run the listed steps in order, then again every period, until SIGTERM or SIGINT',
    ),
  )
    .requiredOption(
      '--steps <list>',
      `steps to run, comma-separated, in order (some of ${LOOP_STEPS.join(', ')})`,
      loopSteps,
    )
    .requiredOption('--every <duration>', 'from one iteration to the next: 500ms, 2s, 1m', period)
    .action(async (opts: CommonOptions & { steps: LoopStep[]; every: number }) => {
      exitWith(await runLoop(opts, STEP_RUNNERS));
    });
}

function statusCommand(): Command {
  return withCommon(
    new Command('status').description('how far each step has got, and what is waiting'),
  )
    .option('--json', 'print JSON')
    .option(
      '--check',
      'print one line and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios/Icinga plugin)',
    )
    .addOption(
      // Read by statusCheck, not commander: a bad value must still give a plugin's UNKNOWN (3).
      new Option(
        '--max-lag <duration>',
        '--check: WARNING above this lag, CRITICAL above twice it (90s, 15m, 2h)',
      ).default(DEFAULT_MAX_LAG),
    )
    .action(async (opts: CommonOptions & { json?: boolean; check?: boolean; maxLag: string }) => {
      if (opts.check) return exitWith(await statusCheck(opts));
      exitWith(
        await runCommand('status', 'status', opts, async ({ config }) => {
          const { status, formatStatus } = await import('../steps/status.js');
          const s = await status(config);
          process.stdout.write(
            opts.json ? `${JSON.stringify(s, null, 2)}\n` : `${formatStatus(s)}\n`,
          );
        }),
      );
    });
}

/**
 * `status --check`: one line on stdout and a plugin exit code, whatever happens; a status that
 * cannot run at all (a bad config, say) is UNKNOWN, never one of the sysexits codes.
 */
async function statusCheck(opts: CommonOptions & { maxLag: string }): Promise<number> {
  try {
    const maxLag = parseDuration(opts.maxLag);
    if (maxLag === null)
      throw new ConfigError(`--max-lag: '${opts.maxLag}' is not a duration such as 90s, 15m or 2h`);
    const config = await loadConfig(opts.config, 'status');
    const { status } = await import('../steps/status.js');
    const result = checkStatus(await status(config), maxLag);
    process.stdout.write(`${result.line}\n`);
    return result.code;
  } catch (err) {
    process.stdout.write(`${unknownLine(describeError(err))}\n`);
    return CheckCode.UNKNOWN;
  }
}

function pruneCommand(): Command {
  return withCommon(
    new Command('prune').description(
      'remove the deltas every reader has moved past (outbox and destinations, or the inbox)',
    ),
  )
    .option('--dry-run', 'remove nothing: list what would go and why the rest stays')
    .action(async (opts: CommonOptions & { dryRun?: boolean }) => {
      exitWith(
        // A dry run changes nothing, so it leaves no run record either.
        await runCommand(opts.dryRun ? 'prune --dry-run' : 'prune', 'prune', opts, async (ctx) => {
          const { prune, prunesSomething, formatPruneReport } =
            await import('../steps/prune/index.js');
          if (!prunesSomething(ctx.config)) {
            throw new ConfigError(
              `${ctx.config.configFile}: nothing to prune: give outbox (source side) or inbox and target (replica side)`,
            );
          }
          const report = await prune(ctx, { dryRun: opts.dryRun ?? false });
          const removed = report.locations.reduce((n, l) => n + l.removed.length, 0);
          ctx.summary({
            deltas: removed,
            bytes: report.locations.reduce((n, l) => n + l.removedBytes, 0),
            message: `done: ${opts.dryRun ? 'would remove' : 'removed'} ${removed} deltas`,
          });
          if (opts.dryRun || process.stdout.isTTY)
            process.stdout.write(`${formatPruneReport(report)}\n`);
        }),
      );
    });
}

function simulateCommand(): Command {
  return withCommon(
    new Command('simulate').description(
      'write N valid simulated deltas into the outbox (no source database needed)',
    ),
  )
    .addOption(new Option('--count <n>', 'how many deltas').argParser(positiveInt).default(1))
    .option('--empty', 'deltas without rows')
    .addOption(
      new Option('--rows <n>', 'synthetic rows per table per delta (max 1000)')
        .argParser(positiveInt)
        .default(10),
    )
    .action(async (opts: CommonOptions & { count: number; empty?: boolean; rows: number }) => {
      exitWith(
        await runCommand('simulate', 'simulate', opts, async (ctx) => {
          const { simulate } = await import('../steps/simulate.js');
          const files = await simulate(ctx, {
            count: opts.count,
            empty: opts.empty ?? false,
            rows: opts.rows,
          });
          if (process.stdout.isTTY) process.stdout.write(`${files.join('\n')}\n`);
        }),
      );
    });
}

function captureCommand(): Command {
  return withCommon(
    new Command('capture').description(
      "the change log and triggers for the tables in 'changelog' mode: print, apply or remove them",
    ),
  )
    .option('--print', 'print the DDL that --apply would run (the default)')
    .option('--apply', 'create the change log and the triggers on the source')
    .option('--remove', 'drop the triggers and the change log (with --print: print that DDL)')
    .option(
      '--prune',
      'delete change-log rows extract has shipped, older than retention.keepHours, in small batches',
    )
    .action(
      async (
        opts: CommonOptions & {
          print?: boolean;
          apply?: boolean;
          remove?: boolean;
          prune?: boolean;
        },
      ) => {
        exitWith(
          await runCommand('capture', 'capture', opts, async ({ config, log }) => {
            if (opts.apply && opts.remove)
              throw new ConfigError('give --apply or --remove, not both');
            if (opts.prune) {
              if (opts.apply || opts.remove || opts.print)
                throw new ConfigError('give --prune on its own');
              const { pruneChangelog } = await import('../steps/prune/changelog.js');
              const result = await pruneChangelog(config, log);
              if (!result)
                throw new ConfigError(`${config.configFile}: no table is in 'changelog' mode`);
              return;
            }
            const { capture } = await import('../steps/capture.js');
            const action = opts.remove
              ? opts.print
                ? 'print-remove'
                : 'remove'
              : opts.apply
                ? 'apply'
                : 'print';
            const statements = await capture(config, action).catch((err: unknown) => {
              if (!(err instanceof PrivilegeError) || action === 'print') throw err;
              throw new PrivilegeError(err.message, {
                hint: `run deltasync capture --${action} with an account that may create tables and triggers on the source, or hand the DDL of --print to a DBA`,
                cause: err,
              });
            });
            if (action === 'print' || action === 'print-remove') {
              process.stdout.write(statements.map((s) => `${s};\n`).join('\n'));
            } else {
              log.info(
                { statements: statements.length },
                action === 'apply' ? 'change capture installed' : 'change capture removed',
              );
            }
          }),
        );
      },
    );
}

function resyncCommand(): Command {
  return withCommon(
    new Command('resync').description(
      'write the next delta with tables whole (a base): every table, or those given with --table',
    ),
  )
    .option(
      '--table <name>',
      'a table of the job to write whole (repeat for more; all tables when none)',
      (name: string, names: string[]) => [...names, name],
      [] as string[],
    )
    .action(async (opts: CommonOptions & { table: string[] }) => {
      exitWith(
        await runCommand('resync', 'extract', opts, async (ctx) => {
          const { resync } = await import('../steps/resync.js');
          const r = await resync(ctx, opts.table);
          ctx.summary({ deltas: r.deltas.length, rows: r.rows, bytes: r.bytes });
        }),
      );
    });
}

/** Exit code of `verify` when the replica differs: the contract (0 equal, 1 not). */
export const EXIT_VERIFY_DIFFERS = 1;

function verifyCommand(): Command {
  return withCommon(
    new Command('verify').description(
      'compare the replica with the source, row by row, in key order',
    ),
  )
    .addOption(
      new Option(
        '--mode <mode>',
        'full: every column; partial: key and last-modified column; incremental: rows changed since --since',
      )
        .choices(['full', 'partial', 'incremental'])
        .default('full'),
    )
    .option('--since <logId>', 'incremental: rows changed after this logId')
    .option(
      '--table <name...>',
      'only these tables (by their source name); all configured tables when not given',
    )
    .addOption(
      new Option('--max-diffs <n>', 'differing keys to show per table')
        .argParser(positiveInt)
        .default(10),
    )
    .option('--json', 'print JSON')
    .action(
      async (
        opts: CommonOptions & {
          mode: 'full' | 'partial' | 'incremental';
          since?: string;
          table?: string[];
          maxDiffs: number;
          json?: boolean;
        },
      ) => {
        exitWith(
          await runCommand('verify', 'verify', opts, async ({ config, summary }) => {
            const { verify, formatReport } = await import('../steps/verify/index.js');
            if (opts.since !== undefined && !/^(0|[1-9][0-9]*)$/.test(opts.since)) {
              throw new ConfigError(`--since: '${opts.since}' is not a logId`);
            }
            const report = await verify(config, {
              mode: opts.mode,
              since: opts.since,
              tables: opts.table,
              maxReported: opts.maxDiffs,
            });
            process.stdout.write(
              opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`,
            );
            summary({
              message: report.equal
                ? 'done: the replica equals the source'
                : 'the replica differs from the source',
            });
            return report.equal ? ExitCode.OK : EXIT_VERIFY_DIFFERS;
          }),
        );
      },
    );
}

function demoCommand(): Command {
  return new Command('demo')
    .description(
      'build a sample SQLite source under ./var/demo and run extract → copy → load on it',
    )
    .action(async () => {
      const { runDemo } = await import('./demo.js');
      exitWith(await runDemo());
    });
}

/** The package's version, for --version (read once, only when the umbrella command is built). */
function packageVersion(): string {
  const pkg = JSON.parse(
    readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'),
  ) as { version: string };
  return pkg.version;
}

export function mainProgram(): Command {
  return new Command('deltasync')
    .version(packageVersion())
    .description(
      'keep a replica database in step with a source by shipping checksummed delta files',
    )
    .addCommand(stepCommand('extract'))
    .addCommand(stepCommand('copy'))
    .addCommand(stepCommand('load'))
    .addCommand(runLoopCommand())
    .addCommand(statusCommand())
    .addCommand(pruneCommand())
    .addCommand(simulateCommand())
    .addCommand(captureCommand())
    .addCommand(resyncCommand())
    .addCommand(verifyCommand())
    .addCommand(demoCommand());
}

/** Parses argv and runs; usage errors exit 64, like sysexits' EX_USAGE. */
export async function main(program: Command, argv = process.argv): Promise<void> {
  // A file-size limit (ulimit -f) or quota must surface as EFBIG on the write, which becomes a
  // clear "disk full" error (69), not as a signal that kills the process mid-step.
  process.on('SIGXFSZ', () => undefined);
  program.exitOverride();
  for (const sub of program.commands) sub.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version are "errors" to commander; they are successes to us.
      process.exitCode = err.exitCode === 0 ? ExitCode.OK : EXIT_USAGE;
      return;
    }
    throw err;
  }
}
