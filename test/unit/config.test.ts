import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { jobSchema, missingFor, STEP_NEEDS } from '../../src/config/schema.js';
import { ConfigError, ExitCode } from '../../src/errors.js';
import { testdir, type Tree } from '../helpers/tmp.js';

/** Config files are ES modules, as in the repository's own `conf/` (package type "module"). */
const ESM = { 'package.json': '{ "type": "module" }\n' };

/** A complete job with every part each step needs; relative paths, as a real config has them. */
const FULL_JOB = `{
  name: 'acme',
  stateDir: './state',
  source: { client: 'pg', connection: 'postgres://reader@db/acme' },
  target: { client: 'sqlite', connection: { filename: '../replica.sqlite' } },
  outbox: 'outbox',
  destinations: [
    { name: 'replica', dir: '../inbox' },
    { name: 'backup', dir: '/srv/backup/acme' },
  ],
  inbox: '../inbox',
  tables: [{ name: 'orders', key: 'id', logIdColumn: 'log_id' }],
  log: { file: 'logs/acme.log', level: 'debug' },
}`;

/** Writes `files` into a fresh tree and returns the absolute path of `entry` in it. */
async function configTree(files: Tree, entry: string): Promise<{ root: string; file: string }> {
  const root = await testdir({ ...ESM, ...files });
  return { root, file: join(root, entry) };
}

async function configError(promise: Promise<unknown>): Promise<ConfigError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  const e = err as ConfigError;
  expect(e.exitCode).toBe(ExitCode.CONFIG);
  expect(e.exitCode).toBe(78);
  expect(e.message).not.toContain('\n');
  return e;
}

describe('loading config modules', () => {
  it('loads a .js config and resolves its paths against its own directory', async () => {
    const { root, file } = await configTree(
      { 'conf/acme.js': `export default ${FULL_JOB};\n` },
      'conf/acme.js',
    );
    const conf = join(root, 'conf');
    const job = await loadConfig(file, 'extract', {});
    expect(job.configFile).toBe(file);
    expect(job.name).toBe('acme');
    expect(job.stateDir).toBe(join(conf, 'state'));
    expect(job.outbox).toBe(join(conf, 'outbox'));
    expect(job.inbox).toBe(join(root, 'inbox'));
    expect(job.destinations).toEqual([
      { name: 'replica', dir: join(root, 'inbox') },
      { name: 'backup', dir: '/srv/backup/acme' },
    ]);
    expect(job.log).toEqual({ file: join(conf, 'logs', 'acme.log'), level: 'debug' });
    expect(job.target?.connection).toEqual({ filename: join(root, 'replica.sqlite') });
    expect(job.source?.connection).toBe('postgres://reader@db/acme');
    expect(job.tables).toEqual([
      { name: 'orders', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
    ]);
  });

  it('loads a .ts config that imports another .ts file', async () => {
    const { file } = await configTree(
      {
        'conf/base.ts': [
          `export interface Paths { outbox: string; inbox: string }`,
          `export const paths: Paths = { outbox: './out', inbox: './in' };`,
          `export const rows = (n: number): number => n * 1000;`,
        ].join('\n'),
        'conf/acme.ts': [
          `import { paths, rows } from './base.ts';`,
          `const compression: 'gzip' | 'none' = 'none';`,
          `export default {`,
          `  name: 'acme-ts',`,
          `  ...paths,`,
          `  target: { client: 'pg', connection: 'postgres://writer@replica/acme' },`,
          `  delta: { maxRowsPerPart: rows(5), compression },`,
          `};`,
        ].join('\n'),
      },
      'conf/acme.ts',
    );
    const job = await loadConfig(file, 'load', {});
    expect(job.name).toBe('acme-ts');
    expect(job.inbox).toBe(join(file, '..', 'in'));
    expect(job.outbox).toBe(join(file, '..', 'out'));
    expect(job.delta).toEqual({ maxRowsPerPart: 5000, compression: 'none' });
  });

  it('loads a config that imports a shared base file', async () => {
    const { root, file } = await configTree(
      {
        'conf/base.js': [
          `export default {`,
          `  stateDir: '/var/lib/deltasync',`,
          `  delta: { maxRowsPerPart: 5000 },`,
          `  tables: [{ name: 'customers', key: ['id'], logIdColumn: 'log_id' }],`,
          `};`,
        ].join('\n'),
        'conf/cli/acme/extract.js': [
          `import base from '../../base.js';`,
          `export default {`,
          `  ...base,`,
          `  name: 'acme',`,
          `  source: { client: 'mysql', connection: { host: 'db', password: process.env.X ?? 'pw' } },`,
          `  outbox: '../../../var/outbox',`,
          `};`,
        ].join('\n'),
      },
      'conf/cli/acme/extract.js',
    );
    const job = await loadConfig(file, 'extract', {});
    expect(job.stateDir).toBe('/var/lib/deltasync');
    expect(job.outbox).toBe(join(root, 'var', 'outbox'));
    expect(job.delta).toEqual({ maxRowsPerPart: 5000, compression: 'gzip' });
    expect(job.tables?.map((t) => t.name)).toEqual(['customers']);
  });

  it('accepts a default export that is an async function returning the job', async () => {
    const { file } = await configTree(
      {
        'conf/fn.js': `export default async () => ({ name: 'from-fn', inbox: 'in', target: { client: 'pg', connection: 'x' } });\n`,
      },
      'conf/fn.js',
    );
    const job = await loadConfig(file, 'load', {});
    expect(job.name).toBe('from-fn');
    expect(job.inbox).toBe(join(file, '..', 'in'));
  });
});

describe('paths and defaults', () => {
  it('fills in the defaults', async () => {
    const { file } = await configTree({ 'c.js': `export default { name: 'bare' };\n` }, 'c.js');
    const job = await loadConfig(file, 'status', {});
    expect(job.stateDir).toBe(join(homedir(), 'var', 'run', 'deltasync'));
    expect(job.delta).toEqual({ maxRowsPerPart: 100_000, compression: 'gzip' });
    expect(job.log.level).toBe('info');
    expect(job.log.file).toBeUndefined();
    expect(job.outbox).toBeUndefined();
    expect(job.inbox).toBeUndefined();
  });

  it('expands ~ to the home directory', async () => {
    const { file } = await configTree(
      {
        'c.js': `export default { name: 'home', stateDir: '~', outbox: '~/deltas/out', log: { file: '~/logs/x.log' } };\n`,
      },
      'c.js',
    );
    const job = await loadConfig(file, 'status', {});
    expect(job.stateDir).toBe(homedir());
    expect(job.outbox).toBe(join(homedir(), 'deltas', 'out'));
    expect(job.log.file).toBe(join(homedir(), 'logs', 'x.log'));
  });

  it('leaves absolute paths and an in-memory SQLite database alone', async () => {
    const { file } = await configTree(
      {
        'c.js': `export default { name: 'abs', stateDir: '/abs/state', inbox: '/abs/in', target: { client: 'sqlite', connection: { filename: ':memory:' } } };\n`,
      },
      'c.js',
    );
    const job = await loadConfig(file, 'load', {});
    expect(job.stateDir).toBe('/abs/state');
    expect(job.inbox).toBe('/abs/in');
    expect(job.target?.connection).toEqual({ filename: ':memory:' });
  });

  it('DELTASYNC_STATE_DIR overrides the stateDir of the file', async () => {
    const { file } = await configTree(
      { 'c.js': `export default { name: 'env', stateDir: './from-file' };\n` },
      'c.js',
    );
    expect((await loadConfig(file, 'status', {})).stateDir).toBe(join(file, '..', 'from-file'));
    const env = { DELTASYNC_STATE_DIR: '/run/deltasync-env' };
    expect((await loadConfig(file, 'status', env)).stateDir).toBe('/run/deltasync-env');
    const home = { DELTASYNC_STATE_DIR: '~/env-state' };
    expect((await loadConfig(file, 'status', home)).stateDir).toBe(join(homedir(), 'env-state'));
    const relative = { DELTASYNC_STATE_DIR: 'rel-state' };
    expect((await loadConfig(file, 'status', relative)).stateDir).toBe(resolve('rel-state'));
  });
});

describe('refusals', () => {
  it('reports every bad key together, on one line naming the file', async () => {
    const { file } = await configTree(
      {
        'bad.js': [
          `export default {`,
          `  name: 'acme',`,
          `  colour: 'blue',`,
          `  tables: [{ name: 'orders', logIdColumn: 'log_id' }],`,
          `  delta: { maxRowsPerPart: 0, compression: 'zstd' },`,
          `};`,
        ].join('\n'),
      },
      'bad.js',
    );
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message.startsWith(`${file}: `)).toBe(true);
    expect(err.message).toMatch(/tables\.0\.key: [^;]+/);
    expect(err.message).toMatch(/delta\.maxRowsPerPart: [^;]+/);
    expect(err.message).toMatch(/delta\.compression: [^;]+/);
    expect(err.message).toContain('colour: unknown key');
    expect(err.message.split('; ')).toHaveLength(4);
  });

  it('reports unknown keys inside nested objects too (a typo must not fall back to a default)', async () => {
    const { file } = await configTree(
      {
        'typo.js': [
          `export default {`,
          `  name: 'acme',`,
          `  destinations: [{ name: 'r', dir: 'a', directory: 'b' }],`,
          `  tables: [{ name: 'orders', key: 'id', logIdColumn: 'log_id', logidColumn: 'x' }],`,
          `  delta: { maxRowsPerpart: 5000 },`,
          `  log: { levl: 'debug' },`,
          `};`,
        ].join('\n'),
      },
      'typo.js',
    );
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message).toBe(
      `${file}: destinations.0.directory: unknown key; tables.0.logidColumn: unknown key; ` +
        `delta.maxRowsPerpart: unknown key; log.levl: unknown key`,
    );
  });

  it('names the key of a bad value deep inside', async () => {
    const { file } = await configTree(
      {
        'bad.js': `export default { name: 'bad name!', destinations: [{ name: 'ok', dir: 'x' }, { name: 'a/b', dir: '' }] };\n`,
      },
      'bad.js',
    );
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message).toMatch(/(^|: |; )name: letters, digits/);
    expect(err.message).toContain('destinations.1.name: letters, digits');
    expect(err.message).toContain('destinations.1.dir: ');
  });

  it('reports a table or destination listed twice', async () => {
    const { file } = await configTree(
      {
        'dup.js': [
          `export default {`,
          `  name: 'acme',`,
          `  destinations: [{ name: 'r', dir: 'a' }, { name: 'r', dir: 'b' }],`,
          `  tables: [`,
          `    { name: 't', key: 'id', logIdColumn: 'l' },`,
          `    { name: 't', key: 'id', logIdColumn: 'l' },`,
          `  ],`,
          `};`,
        ].join('\n'),
      },
      'dup.js',
    );
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message).toContain(`destinations.1.name: 'r' is used twice`);
    expect(err.message).toContain(`tables.1.name: table 't' is listed twice`);
  });

  it('a missing file', async () => {
    const dir = await testdir();
    const file = join(dir, 'nope.js');
    const err = await configError(loadConfig(file, 'extract', {}));
    expect(err.message).toContain(file);
    expect(err.message).toContain('does not exist');
  });

  it.each([
    ['a .js config', 'broken.js', `export default { name: 'acme', \n  tables: [ ;\n`],
    ['a .ts config', 'broken.ts', `const x: number = ;\nexport default { name: 'acme' };\n`],
  ])('a syntax error in %s', async (_what, name, text) => {
    const { file } = await configTree({ [name]: text }, name);
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message.startsWith(`${file}: cannot load config: `)).toBe(true);
  });

  it('a config that throws while loading', async () => {
    const { file } = await configTree(
      { 'throws.js': `throw new Error('DB_PASSWORD is not set\\nsecond line');\n` },
      'throws.js',
    );
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message).toBe(`${file}: cannot load config: DB_PASSWORD is not set`);
  });

  it('an import of a file that does not exist', async () => {
    const { file } = await configTree(
      { 'c.js': `import './missing-base.js';\nexport default {};\n` },
      'c.js',
    );
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message).toContain(`${file}: cannot load config: `);
    expect(err.message).toContain('missing-base');
  });

  it.each([
    ['a number', 'export default 42;'],
    ['a string', `export default 'acme';`],
    ['null', 'export default null;'],
    ['nothing (no default export)', `export const job = { name: 'acme' };`],
    ['a function returning undefined', 'export default () => undefined;'],
  ])('a default export that is %s', async (_what, text) => {
    const { file } = await configTree({ 'c.js': `${text}\n` }, 'c.js');
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message).toBe(`${file}: the module must export a config object as default`);
  });

  it('a default export that is an array is not a job', async () => {
    const { file } = await configTree({ 'c.js': `export default [{ name: 'acme' }];\n` }, 'c.js');
    const err = await configError(loadConfig(file, 'status', {}));
    expect(err.message.startsWith(`${file}: `)).toBe(true);
  });
});

describe('what each step needs', () => {
  const bare = jobSchema.parse({ name: 'acme' });

  it('missingFor lists what each step lacks', () => {
    expect(missingFor('extract', bare)).toEqual([
      'source: required by extract',
      'outbox: required by extract',
      'tables: required by extract',
    ]);
    expect(missingFor('load', bare)).toEqual([
      'target: required by load',
      'inbox: required by load',
    ]);
    expect(missingFor('copy', bare)).toEqual([
      'outbox: required by copy',
      'destinations: required by copy',
    ]);
    expect(missingFor('status', bare)).toEqual([]);
    expect(STEP_NEEDS.simulate).toEqual(['outbox', 'tables']);
  });

  it('an empty list counts as missing', () => {
    const job = jobSchema.parse({ name: 'acme', outbox: 'o', destinations: [], tables: [] });
    expect(missingFor('copy', job)).toEqual(['destinations: required by copy']);
    expect(missingFor('simulate', job)).toEqual(['tables: required by simulate']);
  });

  it('a complete job lacks nothing for any step', () => {
    const job = jobSchema.parse({
      name: 'acme',
      source: { client: 'pg', connection: 'x' },
      target: { client: 'pg', connection: 'y' },
      outbox: 'o',
      inbox: 'i',
      destinations: [{ name: 'd', dir: 'd' }],
      tables: [{ name: 't', key: 'id', logIdColumn: 'l' }],
    });
    for (const step of Object.keys(STEP_NEEDS) as (keyof typeof STEP_NEEDS)[]) {
      expect(missingFor(step, job), step).toEqual([]);
    }
  });

  it('loadConfig refuses a config that lacks what the step needs, naming each key', async () => {
    const { file } = await configTree(
      {
        'load-host.js': `export default { name: 'acme', target: { client: 'pg', connection: 'x' }, inbox: 'in' };\n`,
      },
      'load-host.js',
    );
    expect((await loadConfig(file, 'load', {})).name).toBe('acme');
    const err = await configError(loadConfig(file, 'extract', {}));
    expect(err.message).toBe(
      `${file}: source: required by extract; outbox: required by extract; tables: required by extract`,
    );
    const copy = await configError(loadConfig(file, 'copy', {}));
    expect(copy.message).toBe(`${file}: outbox: required by copy; destinations: required by copy`);
  });
});

describe('values left undefined by an unset environment variable', () => {
  it('refuses an undefined password or user, and a URL holding "undefined", naming each', async () => {
    const { file } = await configTree(
      {
        'job.js': `export default {
          name: 'acme',
          source: { client: 'pg', connection: { host: 'db', user: process.env.NOPE_USER, password: process.env.NOPE_PW } },
          target: { client: 'mysql', connection: \`mysql://sync:\${process.env.NOPE_PW}@db/acme\` },
          inbox: 'inbox',
        };\n`,
      },
      'job.js',
    );
    const err = await configError(loadConfig(file, 'load'));
    expect(err.message).toContain('source.connection.user: undefined');
    expect(err.message).toContain('source.connection.password: undefined');
    expect(err.message).toContain("target.connection: the URL contains 'undefined'");
    expect(err.message).toContain('environment variable');
  });

  it('leaves a connection without a password alone (trust, socket, .pgpass)', async () => {
    const { file } = await configTree(
      {
        'job.js': `export default { name: 'acme', target: { client: 'pg', connection: { host: 'db', user: 'sync' } }, inbox: 'inbox' };\n`,
      },
      'job.js',
    );
    const config = await loadConfig(file, 'load');
    expect(config.target?.lockTimeoutSeconds).toBe(60);
    expect(config.replica).toBe('default');
  });
});

describe('replica and lockTimeoutSeconds', () => {
  const base = { name: 'acme' };
  it('a replica name must be usable in a file name', () => {
    expect(jobSchema.safeParse({ ...base, replica: 'eu-west_2' }).success).toBe(true);
    const bad = jobSchema.safeParse({ ...base, replica: 'eu/west' });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.path).toEqual(['replica']);
  });

  it('lockTimeoutSeconds is a positive number of seconds', () => {
    expect(jobSchema.safeParse({ ...base, lockTimeoutSeconds: 0 }).success).toBe(false);
    expect(jobSchema.parse({ ...base, lockTimeoutSeconds: 2.5 }).lockTimeoutSeconds).toBe(2.5);
  });
});
