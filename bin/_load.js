// Shared by the bins: import the CLI, or say how to build it.
import { statSync } from 'node:fs';

/**
 * The bundle `npm run build` writes (rolldown.config.ts), when it is at least as new as tsc's
 * output: a cron run starts faster from a few files than from ~190 modules. tsc alone (as during
 * development) leaves an older bundle behind, and then the bins run what tsc just wrote.
 */
function freshBundle(module) {
  const bundle = new URL(`../dist/bundle/cli/${module}.js`, import.meta.url);
  const compiled = new URL(`../dist/src/cli/${module}.js`, import.meta.url);
  try {
    return statSync(bundle).mtimeMs >= statSync(compiled).mtimeMs ? bundle : null;
  } catch {
    return null;
  }
}

export async function loadCli(module) {
  const url = freshBundle(module) ?? new URL(`../dist/src/cli/${module}.js`, import.meta.url);
  try {
    return await import(url.href);
  } catch (err) {
    if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('/dist/')) {
      process.stderr.write('deltasync is not built: run `npm ci` (or `npm run build`) in its directory\n');
      process.exit(1);
    }
    throw err;
  }
}
