/**
 * The job configs the bench hands to the bins: JS modules exporting the job object, as an operator
 * would write them (`.mjs`, so they load as ES modules wherever the temp dir is).
 */
import { writeFile } from 'node:fs/promises';
import { TABLE } from './table.js';

/** A store given as a URL with its options beside it, as configs take SFTP and S3 stores. */
export type StoreUrlSpec = { url: string } & Record<string, unknown>;

export interface BenchJob {
  name: string;
  stateDir: string;
  source?: { client: string; connection: string };
  target?: { client: string; connection: string };
  outbox: string;
  /** A directory (`{ name, dir }`), or a store URL with its options (`{ name, url, ... }`). */
  destinations?: ({ name: string; dir: string } | ({ name: string } & StoreUrlSpec))[];
  inbox?: string | StoreUrlSpec;
  tables: { name: string; key: string[]; mode: 'logid'; logIdColumn: string }[];
  delta: { maxRowsPerPart: number; compression: 'gzip' | 'none' };
}

/** The one table the bench replicates. */
export const BENCH_TABLES: BenchJob['tables'] = [
  { name: TABLE, key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
];

export async function writeJobConfig(file: string, job: BenchJob): Promise<string> {
  await writeFile(
    file,
    `// Written by scripts/bench.ts.\nexport default ${JSON.stringify(job, null, 2)};\n`,
  );
  return file;
}
