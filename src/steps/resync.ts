/**
 * `deltasync resync -c FILE [--table NAME …]`: the next delta of the chain, written under the
 * extract lock like any other, carries the named tables (every table of the job when none is
 * named) as a **base**: every row as of the delta's one snapshot, which load puts in place of the
 * replica table's content in the delta's transaction. The other tables' changes ride along as
 * usual. When every table is a base the manifest says `fullBase: true`, and a new or rebuilt
 * replica may start from that delta.
 */
import type { StepContext } from './common.js';
import { extract, type ExtractResult } from './extract/index.js';

export function resync(ctx: StepContext, tables: string[] = []): Promise<ExtractResult> {
  return extract(ctx, { resync: tables });
}
