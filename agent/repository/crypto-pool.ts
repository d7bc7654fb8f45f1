import os from 'node:os';
import v8 from 'node:v8';
import { WorkerClient, type WorkerResult } from '../worker/worker-client.js';
import type { CryptoWorkerOps } from './crypto-worker.js';

/** Threads of a pool by default: one per core, at most 4 (a backup's crypto keeps up with a disk here with 2). */
export function defaultCryptoThreads(): number {
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/**
 * Makes ES2024's ArrayBuffer.prototype.transfer exist in the worker threads started from now on, where
 * this Node lacks it (Node 20's V8 has it behind a flag; Node 22 and later ship it): the workers use it
 * to free node:crypto's output buffers at once (envelope-format.ts, release): sealing a 1 MiB blob into
 * shared memory went from 0.59 to 0.36 s of CPU a GiB, and a backup's peak RSS from 168 to 116 MiB. The flag only adds that standard method to contexts made
 * later (this thread's own is left as it is); a Node that refuses the flag just runs the old way.
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
    enableArrayBufferTransfer();
    this.threads = Array.from({ length: Math.max(1, threads) }, () => ({
      client: new WorkerClient<CryptoWorkerOps>(new URL('./crypto-worker.js', import.meta.url), 'crypto worker'),
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
