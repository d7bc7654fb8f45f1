import { Worker } from 'node:worker_threads';

/** Totals since the census began: take one at each end of a window and subtract. */
export interface CensusCounts {
  samples: number;
  /** Summed over the samples: the threads found running (R). */
  running: number;
  /** Summed over the samples: the threads found in uninterruptible sleep (D: waiting on the disk). */
  diskWait: number;
}

/** Slots of the counters the census thread shares with the main thread: the three counts, then its own id. */
export const CENSUS_SLOTS = { samples: 0, running: 1, diskWait: 2, tid: 3 } as const;

/**
 * A census of this process's threads every `tickMs`, taken in a worker thread of its own so that the
 * main thread, whose lateness the breakdown bench measures, reads nothing for it: read there, the
 * census of `/proc/self/task/<tid>/stat` cost the main thread 0.9 ms every 10 ms (39 threads, Node 20,
 * 2026-12-07). It counts the other threads running and in disk wait, neither the main thread nor its
 * own, into counters shared with the main thread (no message per sample). Call `stop()` once, last.
 */
export class ThreadCensus {
  private readonly counts = new Int32Array(new SharedArrayBuffer(4 * Int32Array.BYTES_PER_ELEMENT));
  private readonly worker: Worker;
  private readonly started: Promise<void>;

  constructor(tickMs: number) {
    this.worker = new Worker(new URL('./thread-census-worker.js', import.meta.url), { workerData: { counts: this.counts, tickMs, mainTid: process.pid } });
    this.started = new Promise((resolve, reject) => {
      this.worker.once('message', () => resolve());
      this.worker.once('error', reject);
    });
  }

  /** Resolves once the census runs (its thread's id is known). */
  ready(): Promise<void> {
    return this.started;
  }

  /** The census thread's own id (a thread the bench's CPU figures leave out too). */
  get tid(): number {
    return Atomics.load(this.counts, CENSUS_SLOTS.tid);
  }

  snapshot(): CensusCounts {
    const at = (slot: number) => Atomics.load(this.counts, slot);
    return { samples: at(CENSUS_SLOTS.samples), running: at(CENSUS_SLOTS.running), diskWait: at(CENSUS_SLOTS.diskWait) };
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}
