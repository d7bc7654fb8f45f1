import { randomFillSync } from 'node:crypto';
import type { BenchLevel } from './bench-db.js';

/**
 * Concurrent writers, each awaiting one put at a time, as a node's request handlers would: each put's
 * latency is what a client of the node waits, event-loop delays included. Keys are drawn from the
 * populated key space, so every put overwrites and the database churns (flushes, compactions across
 * levels) instead of only growing. The writers run without a break across measurement windows, so
 * a window never starts on an idle database.
 */
export interface WriteLoad {
  /** Latencies (ms) of the puts completed since the previous call, and the window's length. */
  takeWindow(): WriteWindow;
  /** Stops the writers and waits for the puts in flight. Rejects with the first write error. */
  stop(): Promise<void>;
}

export interface WriteWindow {
  latenciesMs: number[];
  seconds: number;
  bytes: number;
}

export function startWriteLoad(
  db: BenchLevel,
  options: { writers: number; keyCount: number; valueBytes: number; key: (i: number) => string },
): WriteLoad {
  let stopped = false;
  let firstError: unknown = null;
  let latencies: number[] = [];
  let windowStart = performance.now();

  const writer = async (): Promise<void> => {
    while (!stopped) {
      const key = options.key(Math.floor(Math.random() * options.keyCount));
      // A fresh buffer per put: the native put may still read it after the next one is prepared.
      const value = randomFillSync(Buffer.allocUnsafe(options.valueBytes));
      const t0 = performance.now();
      try {
        await db.put(key, value);
      } catch (err) {
        firstError ??= err;
        stopped = true;
        return;
      }
      latencies.push(performance.now() - t0);
    }
  };
  const running = Array.from({ length: options.writers }, () => writer());

  return {
    takeWindow() {
      const now = performance.now();
      const window = { latenciesMs: latencies, seconds: (now - windowStart) / 1000, bytes: latencies.length * options.valueBytes };
      latencies = [];
      windowStart = now;
      return window;
    },
    async stop() {
      stopped = true;
      await Promise.all(running);
      if (firstError !== null) throw firstError;
    },
  };
}
