import type { ResourceLimits } from 'node:worker_threads';
import { SMALL_WORKER_LIMITS, WorkerClient } from '../worker/worker-client.js';
import type { ArchiveWorkerOps } from './archive-worker-ops.js';
import type { Sha256 } from './segment.js';

/** A log's records completed by a push, and what the log's reading stands at after it. */
export interface LogPushed {
  records: Buffer[];
  incompleteBytes: number;
  damage: string | null;
}

/**
 * The host's handle on the log archive's worker thread (archive-worker-ops.ts): a log's records are
 * assembled and checked there, and segments hashed. Calls for one log must not overlap (the follower
 * awaits each). The thread is its own (archive-worker.ts: started at the first call, stopped by
 * close()), or one lent by an agent (the first of its crypto pool: archive-threads.ts), which close()
 * leaves running for its owner.
 */
export class ArchiveWorker {
  private readonly client: WorkerClient<ArchiveWorkerOps>;

  constructor(private readonly lent: WorkerClient<ArchiveWorkerOps> | null = null) {
    this.client = lent ?? new WorkerClient<ArchiveWorkerOps>(new URL('./archive-worker.js', import.meta.url), 'log archive worker', SMALL_WORKER_LIMITS);
  }

  /** The thread's heap limits as V8 set them; null while it does not run. */
  get resourceLimits(): ResourceLimits | null {
    return this.client.resourceLimits;
  }

  /** Stops the thread if it is this worker's own; a lent one is its owner's to stop. */
  async close(): Promise<void> {
    if (!this.lent) await this.client.close();
  }

  /**
   * Pushes the bytes read from log `tail` at `offset`. `bytes` views shared memory, read where it is
   * (the worker copies what it keeps: the caller may reuse it once this resolves), or a buffer of its
   * own (Buffer.allocUnsafeSlow, never a slice of Node's shared pool), moved to the worker: the caller
   * may not use that after.
   */
  async pushLog(tail: number, offset: number, bytes: Buffer): Promise<LogPushed> {
    const moved = bytes.buffer instanceof SharedArrayBuffer ? [] : [bytes.buffer];
    const got = await this.client.callMoving(moved, 'tailPush', tail, offset, bytes);
    const all = Buffer.from(got.records.buffer, got.records.byteOffset, got.records.byteLength);
    const records = got.ends.map((end, i) => all.subarray(i === 0 ? 0 : got.ends[i - 1], end));
    return { records, incompleteBytes: got.incompleteBytes, damage: got.damage };
  }

  /** Forgets a log the follower closed (nothing to wait for). */
  dropLog(tail: number): void {
    this.client.call('tailDrop', tail).catch(() => {});
  }

  /** SHA-256 in the worker (the bytes are copied there). */
  readonly sha256: Sha256 = async (data) => {
    const d = await this.client.call('sha256', data);
    return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  };
}
