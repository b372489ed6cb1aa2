/** The README's quick start: `npm run demo` builds a source, follows it, and says it matches. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

describe('demo', () => {
  it('runs extract → copy → load through the real entrypoints and the replica matches', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/deltasync'), 'demo'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('$ bin/deltasync-extract -c conf/demo.js');
    expect(r.stdout).toMatch(/^load\s+20\s/m);
    expect(r.stdout).toMatch(/customers\s+6 rows in the replica, same as the source/);
    expect(r.stdout).toContain('demo: the replica matches the source.');
  });
});
