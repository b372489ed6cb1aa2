/**
 * deltasync as a library: the steps, the delta format and the database engines, usable without
 * the command line.
 */
export * from './errors.js';
export { loadConfig, type LoadedConfig } from './config/load.js';
export {
  jobSchema,
  type JobConfig,
  type TableConfig,
  type DestinationConfig,
} from './config/schema.js';
export { openSource, openTarget, engineOf } from './db/index.js';
export * from './db/types.js';
export * from './format/manifest.js';
export { readPart, PartWriter, MAX_LINE_BYTES } from './format/part-codec.js';
export { DeltaWriter } from './format/delta-writer.js';
export { listManifests } from './format/delta-dir.js';
export { acquireLock, type Lock } from './format/lock.js';
export { readState, writeState, type StepState } from './format/state.js';
export { extract, type ExtractResult } from './steps/extract/index.js';
export { copy, type CopyResult } from './steps/copy.js';
export { load, type LoadResult } from './steps/load.js';
export { status, formatStatus, type JobStatus } from './steps/status.js';
export { simulate, type SimulateOptions } from './steps/simulate.js';
export type { StepContext } from './steps/common.js';
export { createLogger, silentLogger, type Logger } from './log.js';

/** Typed identity for config files: `export default defineConfig({ … })`. */
export function defineConfig<
  T extends import('./config/schema.js').JobConfig | Record<string, unknown>,
>(config: T): T {
  return config;
}
