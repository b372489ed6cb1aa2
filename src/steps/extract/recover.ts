/**
 * Before extracting, bring the state up to date with the outbox (see recoverOutbox in
 * ../outbox.ts, shared with simulate).
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
