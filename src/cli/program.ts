/**
 * The command line: flags in, library calls out. `deltasync <command>` and the cron entrypoints
 * `deltasync-extract`, `deltasync-copy`, `deltasync-load` share these definitions.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ConfigError, ExitCode, PrivilegeError } from '../errors.js';
import { copy } from '../steps/copy.js';
import { extract } from '../steps/extract/index.js';
import { load } from '../steps/load.js';
import { simulate } from '../steps/simulate.js';
import { formatStatus, status } from '../steps/status.js';
import { EXIT_USAGE, runCommand, type CommonOptions } from './run.js';

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

export function stepCommand(name: 'extract' | 'copy' | 'load'): Command {
  const describe = {
    extract: 'write the next delta of the source changes into the outbox',
    copy: 'copy new deltas from the outbox to every destination, manifest last',
    load: 'apply the deltas waiting in the inbox to the replica, each in one transaction',
  }[name];
  const run = { extract, copy, load }[name];
  const cmd = withCommon(new Command(name).description(describe));
  if (name === 'load') {
    cmd.option(
      '--dry-run',
      'change nothing: say which deltas a load would apply, what is in them, and where it would stop',
    );
  }
  return cmd.action(async (opts: CommonOptions & { dryRun?: boolean }) => {
    if (opts.dryRun) return exitWith(await loadDryRunCommand(opts));
    exitWith(await runCommand(name, name, opts, async (ctx) => void (await run(ctx))));
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

function statusCommand(): Command {
  return withCommon(
    new Command('status').description('how far each step has got, and what is waiting'),
  )
    .option('--json', 'print JSON')
    .action(async (opts: CommonOptions & { json?: boolean }) => {
      exitWith(
        await runCommand('status', 'status', opts, async ({ config }) => {
          const s = await status(config);
          process.stdout.write(
            opts.json ? `${JSON.stringify(s, null, 2)}\n` : `${formatStatus(s)}\n`,
          );
        }),
      );
    });
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
        await runCommand('prune', 'prune', opts, async (ctx) => {
          const { prune, prunesSomething, formatPruneReport } =
            await import('../steps/prune/index.js');
          if (!prunesSomething(ctx.config)) {
            throw new ConfigError(
              `${ctx.config.configFile}: nothing to prune: give outbox (source side) or inbox and target (replica side)`,
            );
          }
          const report = await prune(ctx, { dryRun: opts.dryRun ?? false });
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
          await resync(ctx, opts.table);
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
          await runCommand('verify', 'verify', opts, async ({ config }) => {
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
