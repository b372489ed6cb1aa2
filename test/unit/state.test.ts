import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, ExitCode } from '../../src/errors.js';
import { replicaIdentity } from '../../src/steps/common.js';
import {
  ensureStateDir,
  loadStepName,
  readState,
  stateFilePath,
  writeState,
  type StepState,
} from '../../src/format/state.js';
import { listDir, testdir } from '../helpers/tmp.js';

async function configErrorOf(promise: Promise<unknown>): Promise<ConfigError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).exitCode).toBe(ExitCode.CONFIG);
  expect((err as ConfigError).exitCode).toBe(78);
  return err as ConfigError;
}

describe('stateFilePath', () => {
  it('names the file by job and step', () => {
    expect(stateFilePath('/var/state', 'acme', 'copy.backup')).toBe(
      '/var/state/acme.copy.backup.state.json',
    );
  });
});

describe('readState', () => {
  it('a missing file means the step never ran: logId "0"', async () => {
    const dir = await testdir();
    expect(await readState(dir, 'acme', 'extract')).toEqual({
      job: 'acme',
      step: 'extract',
      logId: '0',
      updatedAt: null,
    });
  });

  it('a missing state directory is the same as a missing file', async () => {
    const dir = await testdir();
    expect((await readState(join(dir, 'not-yet'), 'acme', 'load')).logId).toBe('0');
  });

  it('round trips through writeState, logIds beyond 2^53 exactly', async () => {
    const dir = await testdir();
    const state: StepState = {
      job: 'acme',
      step: 'copy.backup',
      logId: '18446744073709551615',
      updatedAt: '2024-05-01T12:00:00.000Z',
      delta: 'logId18446744073709551615.MANIFEST.json',
    };
    await writeState(dir, state);
    expect(await listDir(dir)).toEqual(['acme.copy.backup.state.json']);
    expect(await readState(dir, 'acme', 'copy.backup')).toEqual(state);
    const onDisk = JSON.parse(await readFile(stateFilePath(dir, 'acme', 'copy.backup'), 'utf8'));
    expect(onDisk.logId).toBe('18446744073709551615');
  });

  it('a later write replaces the earlier state', async () => {
    const dir = await testdir();
    await writeState(dir, { job: 'acme', step: 'load', logId: '9', updatedAt: null });
    await writeState(dir, { job: 'acme', step: 'load', logId: '10', updatedAt: null });
    expect((await readState(dir, 'acme', 'load')).logId).toBe('10');
    expect((await readState(dir, 'acme', 'extract')).logId).toBe('0');
  });

  it('accepts a hand-written state holding only a logId', async () => {
    const dir = await testdir({ 'acme.load.state.json': '{"logId":"42"}' });
    expect(await readState(dir, 'acme', 'load')).toEqual({
      job: 'acme',
      step: 'load',
      logId: '42',
      updatedAt: null,
      delta: undefined,
    });
  });

  it.each([
    ['truncated JSON', '{"logId":"4'],
    ['an empty file', ''],
    ['not JSON at all', 'logId=42'],
  ])('%s is a ConfigError naming the file', async (_what, text) => {
    const dir = await testdir({ 'acme.load.state.json': text });
    const err = await configErrorOf(readState(dir, 'acme', 'load'));
    expect(err.message).toContain(stateFilePath(dir, 'acme', 'load'));
    expect(err.message).toContain('not valid JSON');
  });

  it.each([
    ['a number', '{"logId":42}'],
    ['a negative string', '{"logId":"-1"}'],
    ['a decimal fraction', '{"logId":"1.5"}'],
    ['leading zeros', '{"logId":"042"}'],
    ['an empty string', '{"logId":""}'],
    ['no logId', '{"updatedAt":null}'],
    ['JSON null', 'null'],
    ['a JSON array', '[]'],
  ])('a logId that is %s is a ConfigError', async (_what, text) => {
    const dir = await testdir({ 'acme.load.state.json': text });
    const err = await configErrorOf(readState(dir, 'acme', 'load'));
    expect(err.message).toContain(stateFilePath(dir, 'acme', 'load'));
    expect(err.message).toContain('logId must be a decimal string');
  });

  it('a state path that is a directory is a ConfigError', async () => {
    const dir = await testdir({ 'acme.load.state.json/inner': 'x' });
    const err = await configErrorOf(readState(dir, 'acme', 'load'));
    expect(err.message).toContain('cannot read state file');
  });
});

describe('ensureStateDir', () => {
  it('creates a missing directory, parents included', async () => {
    const dir = await testdir();
    const stateDir = join(dir, 'a', 'b', 'state');
    await ensureStateDir(stateDir);
    await writeState(stateDir, { job: 'acme', step: 'extract', logId: '5', updatedAt: null });
    expect((await readState(stateDir, 'acme', 'extract')).logId).toBe('5');
    expect((await listDir(stateDir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('an unusable directory is a ConfigError naming it (a path under a regular file)', async () => {
    // Root may write anywhere, but not below a file: this fails with ENOTDIR for everyone.
    const dir = await testdir({ afile: 'not a directory' });
    const stateDir = join(dir, 'afile', 'state');
    const err = await configErrorOf(ensureStateDir(stateDir));
    expect(err.message).toContain(`state directory ${stateDir} is not writable`);
    expect(err.message).toContain('ENOTDIR');
    expect(err.hint).toMatch(/stateDir/);
  });

  it('a state directory that is itself a file is a ConfigError', async () => {
    const dir = await testdir({ afile: 'x' });
    await configErrorOf(ensureStateDir(join(dir, 'afile')));
  });
});

describe('replica state files', () => {
  it('the default replica keeps the name earlier versions used; others carry their name', () => {
    expect(loadStepName('default')).toBe('load');
    expect(loadStepName('maria')).toBe('load.maria');
  });

  it('names a replica by engine, host, port and database, never by user or password', () => {
    expect(
      replicaIdentity({ client: 'pg', connection: 'postgres://u:secret@db.example:5433/shop' }),
    ).toBe('pg://db.example:5433/shop');
    expect(
      replicaIdentity({
        client: 'mysql',
        connection: { host: 'maria', port: 3306, user: 'u', password: 'secret', database: 'shop' },
      }),
    ).toBe('mysql://maria:3306/shop');
    expect(replicaIdentity({ client: 'sqlite', connection: { filename: '/srv/r.sqlite' } })).toBe(
      'sqlite:/srv/r.sqlite',
    );
  });
});
