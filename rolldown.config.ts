/**
 * The CLI's bundle (`npm run build` writes it after tsc): the CLI and the few pure-JavaScript
 * packages it always loads, in a handful of files instead of ~190 modules, because a cron run
 * with nothing to do spends most of its time in Node's module loader. The bins load it and fall
 * back to dist/src when it is missing or older than tsc's output (bin/_load.js).
 *
 * It is built from tsc's output (dist/src), so the bundle runs exactly the JavaScript the tests
 * type-check. Every other package stays external, loaded from node_modules as without the
 * bundle: database drivers and transports (native code, optional, dynamic requires), jiti and
 * pino-pretty (loaded only when needed). pino's worker-thread transports would not work from the
 * bundle (they find their files next to pino's own); deltasync writes its logs without them.
 */
import { readFileSync } from 'node:fs';
import { defineConfig } from 'rolldown';

/** Packages inlined into the bundle: pure JavaScript, loaded by every run, no dynamic requires. */
const BUNDLED = new Set(['commander', 'pino', 'zod', 'xxhash-wasm']);

const { dependencies } = JSON.parse(readFileSync('package.json', 'utf8')) as {
  dependencies: Record<string, string>;
};
const external = Object.keys(dependencies).filter((name) => !BUNDLED.has(name));

export default defineConfig({
  input: {
    program: 'dist/src/cli/program.js',
    'single-instance': 'dist/src/cli/single-instance.js',
  },
  platform: 'node',
  // A package name, or a path inside one (`mysql2/promise`, `@aws-sdk/client-s3`).
  external: (id) =>
    id.startsWith('node:') || external.some((p) => id === p || id.startsWith(`${p}/`)),
  output: {
    // The same depth as dist/src/cli: paths taken relative to import.meta.url (package.json for
    // --version, the demo's root) resolve to the same files from either.
    dir: 'dist/bundle/cli',
    format: 'esm',
    // Names without a content hash, written over in place like tsc's output: a loop that is
    // running while the package is rebuilt still finds the chunks it imports later.
    chunkFileNames: '[name].js',
  },
});
