import { parentPort } from 'node:worker_threads';
import { AdminError } from '../../shared/errors.js';
import * as ops from './checkpoint-dir.js';
import { checkDbFilesSync } from '../leveldb/check-db-files.js';

/**
 * The worker thread that does the agent's file work synchronously, off the host's event loop and off
 * libuv's thread pool (which classic-level keeps busy). One job at a time; terminating the worker is
 * how a job is cancelled.
 */
export const workerOps = {
  create: ops.createCheckpointSync,
  list: ops.listCheckpointsSync,
  describe: ops.describeCheckpointSync,
  setPinned: ops.setPinnedSync,
  delete: ops.deleteCheckpointSync,
  cleanLeftovers: ops.cleanLeftoversSync,
  clone: ops.cloneDbSync,
  removeTree: ops.removeTreeSync,
  checkFiles: checkDbFilesSync,
} as const;

export type WorkerOps = typeof workerOps;

export interface WorkerRequest {
  seq: number;
  op: keyof WorkerOps;
  args: unknown[];
}

export type WorkerResponse =
  | { seq: number; ok: true; result: unknown }
  | { seq: number; ok: false; error: { name: string; message: string; code?: string; adminCode?: string } };

parentPort?.on('message', (req: WorkerRequest) => {
  try {
    const fn = workerOps[req.op] as (...a: unknown[]) => unknown;
    const result = fn(...req.args);
    parentPort!.postMessage({ seq: req.seq, ok: true, result } satisfies WorkerResponse);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    parentPort!.postMessage({
      seq: req.seq,
      ok: false,
      error: {
        name: e?.name ?? 'Error',
        message: e?.message ?? String(err),
        ...(typeof e?.code === 'string' ? { code: e.code } : {}),
        ...(err instanceof AdminError ? { adminCode: err.code } : {}),
      },
    } satisfies WorkerResponse);
  }
});
