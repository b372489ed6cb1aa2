/**
 * Throwaway file trees for unit tests, in the spirit of changesets' `testdir`: each call makes a
 * fresh directory under the system temp dir, fills it from a `{ 'relative/path': content }` map
 * and removes it when the current test finishes, whether it passed or not.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { onTestFinished } from 'vitest';

/** File contents by path relative to the tree's root; a string is written as UTF-8. */
export type Tree = Record<string, string | Uint8Array>;

/** Creates a temporary directory holding `files`; it is removed after the current test. */
export async function testdir(files: Tree = {}): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'deltasync-test-'));
  onTestFinished(() => rm(root, { recursive: true, force: true }));
  for (const [relative, content] of Object.entries(files)) {
    const path = join(root, relative);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content);
  }
  return root;
}

/** Names in `dir`, sorted, so tests can assert on a whole listing (temporary files included). */
export async function listDir(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}
