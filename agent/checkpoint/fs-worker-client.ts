import { WorkerClient } from '../worker/worker-client.js';
import type { FsWorkerOps } from './fs-worker.js';

/**
 * A handle on one fs worker thread (fs-worker.ts). Calls run one after another in the worker.
 * `cancel()` terminates the thread: every call in flight rejects with CANCELLED, and the next call
 * starts a fresh thread. The worker never keeps the host process alive.
 */
export class FsWorkerClient extends WorkerClient<FsWorkerOps> {
  constructor() {
    super(new URL('./fs-worker.js', import.meta.url), 'fs worker');
  }
}
