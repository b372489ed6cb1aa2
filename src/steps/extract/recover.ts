/**
 * Before extracting, bring the state up to date with the outbox (see recoverOutbox in
 * ../outbox.ts, shared with simulate): adopt complete deltas that an interrupted run published but
 * did not record, then remove files of deltas that never got their manifest, and parts whose
 * manifest an interrupted prune removed.
 */
import type { StepState } from '../../format/state.js';
import type { StepContext } from '../common.js';
import { recoverOutbox as recover, type Outbox } from '../outbox.js';

export function recoverOutbox(
  ctx: StepContext,
  state: StepState,
  outbox: Outbox,
): Promise<StepState> {
  return recover(ctx.config, ctx.log, outbox, state);
}
