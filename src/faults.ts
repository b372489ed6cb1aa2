/**
 * Fault points for the crash-safety tests. A step calls `faultPoint('copy:before-manifest')` at
 * each place where a crash must be survivable; when the environment variable DELTASYNC_FAULT
 * names that point, the process kills itself there with SIGKILL (no cleanup, no finally blocks:
 * exactly like a power cut or the OOM killer). DELTASYNC_PAUSE=<point>:<ms> instead waits there,
 * so a test can act from outside (stop the database) at a known moment. Unset, it costs a
 * property read.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Every fault point, so that tests can loop over them and a typo is a type error. */
export const FAULT_POINTS = [
  'extract:after-part',
  'extract:before-manifest',
  'extract:before-state',
  'copy:after-part',
  'copy:before-manifest',
  'copy:before-state',
  'load:mid-apply',
  'load:before-commit',
  'load:before-state',
  'prune:after-manifest',
  'prune:mid-parts',
] as const;

export type FaultPoint = (typeof FAULT_POINTS)[number];

export async function faultPoint(point: FaultPoint): Promise<void> {
  const fault = process.env.DELTASYNC_FAULT;
  if (fault === point) process.kill(process.pid, 'SIGKILL');
  const pause = process.env.DELTASYNC_PAUSE;
  if (pause?.startsWith(`${point}:`)) await sleep(Number(pause.slice(point.length + 1)));
}
