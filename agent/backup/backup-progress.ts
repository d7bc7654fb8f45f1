/** What a reporter needs of a progress record (a backup's, a copy's): the rest is passed on as it is. */
export interface Progress {
  bytesDone: number;
  bytesPerSecond: number;
}

/** Reports closer together than this are held back (one NDJSON line each over the socket). */
const REPORT_EVERY_MS = 200;

/**
 * A backup's (or a copy's) progress, counted by the engine's parts in `progress` and reported to `onProgress`.
 *
 * Contract:
 * - `report()` sends a copy of `progress` at most once per REPORT_EVERY_MS; one held back is sent
 *   when that time is up (a progress bar never freezes on a stale state). `report(true)` sends at once.
 * - `bytesPerSecond` is worked out as each report goes: bytes accounted for since `started`.
 * - Without `onProgress` nothing is sent and no timer is set. After `stop()` no timer is left.
 */
export class ProgressReporter<P extends Progress> {
  private last = 0;
  private trailing: NodeJS.Timeout | null = null;

  constructor(
    readonly progress: P,
    private readonly started: number,
    private readonly onProgress: ((p: P) => void) | undefined,
  ) {}

  report(force = false): void {
    const now = Date.now();
    if (!this.onProgress) return;
    if (!force && now - this.last < REPORT_EVERY_MS) {
      this.trailing ??= setTimeout(() => {
        this.trailing = null;
        this.report(true);
      }, REPORT_EVERY_MS - (now - this.last));
      return;
    }
    this.stop();
    this.last = now;
    this.progress.bytesPerSecond = Math.round((this.progress.bytesDone * 1000) / Math.max(1, now - this.started));
    this.onProgress({ ...this.progress });
  }

  stop(): void {
    if (this.trailing) clearTimeout(this.trailing);
    this.trailing = null;
  }
}
