import { setTimeout as sleep } from 'node:timers/promises';

/** A token bucket over bytes: take(n) resolves once n bytes fit under the rate (null: no limit). */
export class RateLimiter {
  private nextFree = 0;

  constructor(private readonly bytesPerSecond: number | null) {}

  /** Waits for n bytes' worth of time; an abort ends the wait at once (rejecting with the signal's reason). */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (!this.bytesPerSecond || this.bytesPerSecond <= 0) return;
    const now = Date.now();
    const start = Math.max(now, this.nextFree);
    this.nextFree = start + (bytes * 1000) / this.bytesPerSecond;
    if (start > now) await sleep(start - now, undefined, signal ? { signal } : undefined);
  }
}
