/**
 * `deltasync capture`: the change log and triggers that changelog mode reads, for the tables the
 * config puts in that mode. `--print` shows the DDL (to review, or to hand to a DBA), `--apply`
 * runs it, `--remove` takes it all out again. This is the only command that writes to the source,
 * and only when asked to.
 */
import type { LoadedConfig } from '../config/load.js';
import { openSource } from '../db/index.js';
import type { CaptureDdl } from '../db/types.js';
import { ConfigError } from '../errors.js';

export type CaptureAction = 'print' | 'apply' | 'remove' | 'print-remove';

/**
 * The DDL for the config's changelog tables. `installing`: also refuse tables of which one
 * reads another's rows (an inheritance parent and its child), as extract would; removing is
 * always allowed, so that a job configured that way can still take its triggers out.
 */
export async function captureDdlFor(
  config: LoadedConfig,
  installing: boolean,
): Promise<{ ddl: CaptureDdl; run: (s: string[]) => Promise<void>; close: () => Promise<void> }> {
  const tables = config.tables!.filter((t) => t.mode === 'changelog');
  if (tables.length === 0) {
    throw new ConfigError(
      `${config.configFile}: no table has mode 'changelog'; capture has nothing to do`,
    );
  }
  const source = await openSource(config.source!);
  try {
    if (installing) await source.checkTablesDistinct?.(config.tables!.map((t) => t.name));
    const specs = [];
    for (const t of tables) {
      const columns = await source.columns(t.name);
      const key = t.key.map((k) => {
        const c = columns.find((col) => col.name === k);
        if (!c)
          throw new ConfigError(`tables.${t.name}.key: column '${k}' is not in the source table`);
        return c;
      });
      specs.push({ table: t.name, key });
    }
    const ddl = await source.captureDdl({
      changelog: config.capture.changelogTable,
      tables: specs,
    });
    return { ddl, run: (s) => source.executeDdl(s), close: () => source.close() };
  } catch (err) {
    await source.close();
    throw err;
  }
}

/** Prints or runs the capture DDL; returns the statements it printed or ran. */
export async function capture(config: LoadedConfig, action: CaptureAction): Promise<string[]> {
  const removing = action === 'remove' || action === 'print-remove';
  const { ddl, run, close } = await captureDdlFor(config, !removing);
  try {
    const statements = removing ? ddl.remove : ddl.install;
    if (action === 'apply' || action === 'remove') await run(statements);
    return statements;
  } finally {
    await close();
  }
}
