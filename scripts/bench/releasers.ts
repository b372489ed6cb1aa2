/**
 * Cleanup that always runs: every resource the bench creates registers how to release it, and
 * `releaseAll` runs those last-in-first-out (as graphile-worker's `withReleasers` does), on
 * success, on failure and on Ctrl-C alike. A release that fails is reported and the rest still
 * run, so one stuck database never leaves the others behind.
 */
export type Release = () => Promise<void> | void;

export class Releasers {
  private readonly stack: { what: string; release: Release }[] = [];

  /** Registers a release; `what` names the resource in error messages. */
  add(what: string, release: Release): void {
    this.stack.push({ what, release });
  }

  /** What is registered and not yet released, oldest first. */
  pending(): string[] {
    return this.stack.map((item) => item.what);
  }

  /** Releases everything registered so far, newest first. Safe to call more than once. */
  async releaseAll(onError: (what: string, err: unknown) => void): Promise<void> {
    for (let item = this.stack.pop(); item; item = this.stack.pop()) {
      try {
        await item.release();
      } catch (err) {
        onError(item.what, err);
      }
    }
  }
}
