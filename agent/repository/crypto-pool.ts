import os from 'node:os';
import { SMALL_WORKER_LIMITS, WorkerClient, type WorkerResult } from '../worker/worker-client.js';
import type { CryptoWorkerOps } from './crypto-worker-ops.js';

/** The most threads a pool has by default. */
const MAX_CRYPTO_THREADS = 4;

/** Threads of a pool by default: one per core, at most 4 (a backup's crypto keeps up with a disk here with 2). */
export function defaultCryptoThreads(): number {
  return Math.max(1, Math.min(MAX_CRYPTO_THREADS, os.availableParallelism()));
}

/**
 * A few crypto worker threads (crypto-worker.ts, or `script`, which serves at least the crypto
 * operations), started on first use (or `start()`), each call going to the thread with the fewest calls
 * in flight. The threads never keep the process alive while idle; `close()` stops them for good (calls
 * in flight and later reject with CANCELLED).
 */
export class CryptoPool {
  private readonly threads: { client: WorkerClient<CryptoWorkerOps>; inFlight: number }[];

  constructor(threads = defaultCryptoThreads(), script = new URL('./crypto-worker.js', import.meta.url)) {
    this.threads = Array.from({ length: Math.max(1, threads) }, () => ({
      client: new WorkerClient<CryptoWorkerOps>(script, 'crypto worker', SMALL_WORKER_LIMITS),
      inFlight: 0,
    }));
  }

  /**
   * The first thread itself, for calls that must go to one thread (the log archive's, beyond the crypto
   * ones, where `script` serves them: archive-threads.ts, which knows what its script serves); the
   * pool's own calls do not count them when choosing a thread.
   */
  get first(): WorkerClient<CryptoWorkerOps> {
    return this.threads[0]!.client;
  }

  async call<K extends keyof CryptoWorkerOps & string>(op: K, ...args: Parameters<CryptoWorkerOps[K]>): Promise<WorkerResult<ReturnType<CryptoWorkerOps[K]>>> {
    let pick = this.threads[0]!;
    for (const t of this.threads) if (t.inFlight < pick.inFlight) pick = t;
    pick.inFlight++;
    try {
      return await pick.client.call(op, ...args);
    } finally {
      pick.inFlight--;
    }
  }

  /** Starts every thread of the pool now (each otherwise starts on its first call). */
  start(): void {
    for (const t of this.threads) t.client.start();
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.client.close()));
  }
}
