import os from 'node:os';
import v8 from 'node:v8';
import { SMALL_WORKER_LIMITS, WorkerClient, type WorkerResult } from '../worker/worker-client.js';
import type { CryptoWorkerOps } from './crypto-worker.js';

/** The most threads a pool has by default. */
export const MAX_CRYPTO_THREADS = 4;

/** Threads of a pool by default: one per core, at most 4 (a backup's crypto keeps up with a disk here with 2). */
export function defaultCryptoThreads(): number {
  return Math.max(1, Math.min(MAX_CRYPTO_THREADS, os.availableParallelism()));
}

/**
 * Makes ES2024's ArrayBuffer.prototype.transfer exist in the worker threads started from now on, where
 * this Node lacks it (Node 20's V8 has it behind a flag; Node 22 and later ship it): the workers use it
 * to free node:crypto's output buffers at once (envelope-format.ts, release): sealing a 1 MiB blob into
 * shared memory went from 0.59 to 0.36 s of CPU a GiB, and a backup's peak RSS from 168 to 116 MiB.
 * The flag only adds that standard method to contexts made later; without it the workers run the old
 * way (the same bytes, more garbage).
 *
 * Called by this project's own processes at their start (the CLI, the example node, the benchmarks'
 * runners), never by the library: an agent embedded in someone else's node does not set V8 flags in
 * that process (V8 says a flag changed at run time may behave unpredictably; the host's V8 is the
 * operator's business). On Node 20 an embedded agent's crypto threads therefore free their garbage as
 * V8 sees fit; on Node 22 and later the method is there anyway.
 */
export function enableArrayBufferTransfer(): void {
  if (typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function') return;
  try {
    v8.setFlagsFromString('--harmony-rab-gsab-transfer');
  } catch {
    // Not known to this V8: the workers do without.
  }
}

/**
 * A few crypto worker threads (crypto-worker.ts), started on first use, each call going to the thread
 * with the fewest calls in flight. The threads never keep the process alive while idle; `close()` stops
 * them for good (calls in flight and later reject with CANCELLED).
 */
export class CryptoPool {
  private readonly threads: { client: WorkerClient<CryptoWorkerOps>; inFlight: number }[];

  constructor(threads = defaultCryptoThreads()) {
    this.threads = Array.from({ length: Math.max(1, threads) }, () => ({
      client: new WorkerClient<CryptoWorkerOps>(new URL('./crypto-worker.js', import.meta.url), 'crypto worker', SMALL_WORKER_LIMITS),
      inFlight: 0,
    }));
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

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.client.close()));
  }
}
