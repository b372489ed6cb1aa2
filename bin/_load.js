// Shared by the bins: import the compiled CLI, or say how to build it.
export async function loadCli(module) {
  try {
    return await import(new URL(`../dist/src/cli/${module}.js`, import.meta.url).href);
  } catch (err) {
    if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('/dist/')) {
      process.stderr.write('deltasync is not built: run `npm ci` (or `npm run build`) in its directory\n');
      process.exit(1);
    }
    throw err;
  }
}
