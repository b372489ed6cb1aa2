/**
 * Reading a config file. Configs are code: a JS or TS module whose default export is the job
 * object (or a function, possibly async, returning it), so they can import shared settings from
 * other files and take secrets from the environment. Relative paths in the config are resolved
 * against the directory of the file given with `-c`, so a crontab works whatever its cwd.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError, DeltasyncError } from '../errors.js';
import { jobSchema, missingFor, type JobConfig, type StepName } from './schema.js';

/** A database config after loading: it carries the job's lockTimeoutSeconds to its engine. */
export type LoadedDbConfig = NonNullable<JobConfig['source']> & {
  lockTimeoutSeconds: number;
  /** The replica's: the job's `load.sharedStageBatches`. */
  sharedStageBatches?: number;
};

export interface LoadedConfig extends JobConfig {
  /** Absolute path of the config file it came from, for messages. */
  configFile: string;
  source?: LoadedDbConfig;
  target?: LoadedDbConfig;
}

const TS_EXTENSIONS = /\.(ts|mts|cts)$/;

async function importModule(file: string): Promise<unknown> {
  if (TS_EXTENSIONS.test(file)) {
    // jiti compiles TypeScript configs on the fly; loaded only when a .ts config is used.
    const { createJiti } = await import('jiti');
    const jiti = createJiti(import.meta.url, { moduleCache: false });
    return jiti.import(file, { default: true });
  }
  const mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  return mod.default;
}

function expandPath(path: string, base: string): string {
  if (path === '~' || path.startsWith('~/')) return resolve(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(base, path);
}

/** A store spec's directory path is expanded like any path; URLs and `{ url }` specs are left alone. */
function expandStore<T extends JobConfig['outbox']>(spec: T, base: string): T {
  if (typeof spec !== 'string' || /^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) return spec;
  return expandPath(spec, base) as T;
}

function resolvePaths(job: JobConfig, base: string): Omit<LoadedConfig, 'configFile'> {
  return {
    ...job,
    stateDir: expandPath(job.stateDir, base),
    outbox: expandStore(job.outbox, base),
    inbox: expandStore(job.inbox, base),
    destinations: job.destinations?.map((d) =>
      d.dir === undefined ? d : { ...d, dir: expandPath(d.dir, base) },
    ),
    log: { ...job.log, file: job.log.file && expandPath(job.log.file, base) },
    metrics: job.metrics && { textfileDir: expandPath(job.metrics.textfileDir, base) },
    source: job.source && withLockTimeout(resolveSqliteFile(job.source, base), job),
    target: job.target && {
      ...withLockTimeout(resolveSqliteFile(job.target, base), job),
      sharedStageBatches: job.load.sharedStageBatches,
    },
  };
}

/** The job's lockTimeoutSeconds travels with each database config to the engine that applies it. */
function withLockTimeout(db: NonNullable<JobConfig['source']>, job: JobConfig): LoadedDbConfig {
  return { ...db, lockTimeoutSeconds: job.lockTimeoutSeconds };
}

/** SQLite's `connection.filename` is a path like any other in the config. */
function resolveSqliteFile<T extends JobConfig['source']>(db: T, base: string): T {
  if (!db || typeof db.connection !== 'object') return db;
  const filename = db.connection.filename;
  if (typeof filename !== 'string' || filename === ':memory:') return db;
  return { ...db, connection: { ...db.connection, filename: expandPath(filename, base) } };
}

/** Formats zod issues as one line: `file: a.b: message; c: message`. */
function describeIssues(
  file: string,
  issues: { path: PropertyKey[]; message: string; code?: string; keys?: string[] }[],
): string {
  const parts = issues.flatMap((i) => {
    const path = i.path.map(String);
    // zod reports unknown keys once per object, at the object's path: name each key instead.
    if (i.code === 'unrecognized_keys' && i.keys) {
      return i.keys.map((k) => `${[...path, k].join('.')}: unknown key`);
    }
    return [`${path.join('.') || '(root)'}: ${i.message}`];
  });
  return `${file}: ${parts.join('; ')}`;
}

/** Connection option keys whose `undefined` value is almost surely an unset environment variable. */
const SECRET_KEYS = ['password', 'user', 'host', 'database', 'uri', 'connectionString'];

/**
 * A config reads its secrets from the environment (`password: process.env.X`); an unset variable
 * leaves `undefined` there, or the text "undefined" inside a template URL. Drivers then fail with
 * messages like "SASL: client password must be a string", or quietly log in without a password.
 */
export function unsetValues(key: 'source' | 'target', db: JobConfig['source']): string[] {
  if (!db) return [];
  const problems: string[] = [];
  const hint = 'is the environment variable it is read from unset?';
  const c = db.connection;
  const urls: [string, unknown][] =
    typeof c === 'string'
      ? [['connection', c]]
      : [
          ['connection.uri', c.uri],
          ['connection.connectionString', c.connectionString],
        ];
  if (typeof c === 'object') {
    for (const k of SECRET_KEYS) {
      if (k in c && c[k] === undefined)
        problems.push(`${key}.connection.${k}: undefined (${hint})`);
    }
  }
  for (const [path, url] of urls) {
    if (typeof url !== 'string') continue;
    if (/(^|[/:@?&=])(undefined|null)([/:@?&]|$)/.test(url)) {
      problems.push(`${key}.${path}: the URL contains 'undefined' or 'null' (${hint})`);
    }
  }
  return problems;
}

/**
 * Loads, validates and normalises a config for a step. Every problem found is reported together
 * in one ConfigError line. `env` overrides: DELTASYNC_STATE_DIR.
 */
export async function loadConfig(
  file: string,
  step: StepName,
  env = process.env,
): Promise<LoadedConfig> {
  const path = resolve(file);
  if (!existsSync(path)) {
    throw new ConfigError(`config file ${file} does not exist`, {
      hint: 'pass an existing file with -c',
    });
  }
  let raw: unknown;
  try {
    raw = await importModule(path);
    if (typeof raw === 'function') raw = await (raw as () => unknown)();
  } catch (err) {
    if (err instanceof DeltasyncError) throw err;
    const first = ((err as Error).message ?? String(err)).split('\n')[0];
    throw new ConfigError(`${file}: cannot load config: ${first}`, { cause: err });
  }
  if (raw === null || typeof raw !== 'object') {
    throw new ConfigError(`${file}: the module must export a config object as default`);
  }
  // A config is checked once per process: zod's compiled fast path (new Function per object
  // schema) costs more to build than it saves on one parse, in every cron run.
  const parsed = jobSchema.safeParse(raw, { jitless: true });
  if (!parsed.success) throw new ConfigError(describeIssues(file, parsed.error.issues));
  const missing = [
    ...missingFor(step, parsed.data),
    ...unsetValues('source', parsed.data.source),
    ...unsetValues('target', parsed.data.target),
  ];
  if (missing.length > 0) throw new ConfigError(`${file}: ${missing.join('; ')}`);
  const job = resolvePaths(parsed.data, dirname(path));
  if (env.DELTASYNC_STATE_DIR) job.stateDir = expandPath(env.DELTASYNC_STATE_DIR, process.cwd());
  return { ...job, configFile: path };
}

/** Where a run's record and metrics go (see recordPlaceOf). */
export interface RecordPlace {
  name: string;
  stateDir: string;
  replica: string;
  textfileDir?: string;
}

const NAME = /^[A-Za-z0-9_-]+$/;

/**
 * Where a config that failed to load (an unset password, an invalid key) would keep its run
 * record: its job name, state directory, replica and metrics directory, read leniently from the
 * module, so that monitoring sees the failing runs. Null when the module cannot be imported or
 * has no usable name: such a run leaves no record.
 */
export async function recordPlaceOf(file: string, env = process.env): Promise<RecordPlace | null> {
  const path = resolve(file);
  if (!existsSync(path)) return null;
  let raw: unknown;
  try {
    raw = await importModule(path);
    if (typeof raw === 'function') raw = await (raw as () => unknown)();
  } catch {
    return null;
  }
  const job = (raw ?? {}) as Partial<Record<'name' | 'stateDir' | 'replica', unknown>> & {
    metrics?: { textfileDir?: unknown };
  };
  if (typeof job.name !== 'string' || !NAME.test(job.name)) return null;
  const base = dirname(path);
  const stateDir = env.DELTASYNC_STATE_DIR
    ? expandPath(env.DELTASYNC_STATE_DIR, process.cwd())
    : expandPath(typeof job.stateDir === 'string' ? job.stateDir : '~/var/run/deltasync', base);
  const place: RecordPlace = {
    name: job.name,
    stateDir,
    replica: typeof job.replica === 'string' && NAME.test(job.replica) ? job.replica : 'default',
  };
  const dir = job.metrics?.textfileDir;
  if (typeof dir === 'string' && dir.length > 0) place.textfileDir = expandPath(dir, base);
  return place;
}
