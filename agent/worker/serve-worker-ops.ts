import { parentPort, type Transferable } from 'node:worker_threads';
import { AdminError } from '../../shared/errors.js';

/** A worker thread's operations: each called with the arguments the client sent (structured clones). */
export type WorkerOps = Record<string, (...args: never[]) => unknown>;

export interface WorkerRequest {
  seq: number;
  op: string;
  args: unknown[];
}

export type WorkerResponse =
  | { seq: number; ok: true; result: unknown }
  | { seq: number; ok: false; error: { name: string; message: string; code?: string; adminCode?: string } };

/** A result whose listed buffers are moved to the client rather than copied (the worker loses them). */
export class Transferring<T> {
  constructor(
    readonly value: T,
    readonly transfer: Transferable[],
  ) {}
}

/**
 * Serves `ops` to the thread's parent (WorkerClient): one message, one call, one answer with the same
 * `seq`. A synchronous op runs whole before the next message is read; an async one may overlap the
 * next, so a client that needs order gives one call at a time. A throw answers with the error's name,
 * message, errno code and AdminError code, never its stack.
 */
export function serveWorkerOps(ops: WorkerOps): void {
  parentPort?.on('message', (req: WorkerRequest) => void handle(ops, req));
}

async function handle(ops: WorkerOps, req: WorkerRequest): Promise<void> {
  try {
    const fn = ops[req.op] as ((...a: unknown[]) => unknown) | undefined;
    if (!fn) throw new Error(`no worker op ${req.op}`);
    const result = await fn(...req.args);
    if (result instanceof Transferring) parentPort!.postMessage({ seq: req.seq, ok: true, result: result.value } satisfies WorkerResponse, result.transfer);
    else parentPort!.postMessage({ seq: req.seq, ok: true, result } satisfies WorkerResponse);
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
}
