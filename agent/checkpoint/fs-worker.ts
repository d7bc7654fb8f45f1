import { serveWorkerOps } from '../worker/serve-worker-ops.js';
import * as ops from './checkpoint-dir.js';
import { checkDbFilesSync } from '../leveldb/check-db-files.js';
import { CheckpointIndex, removeRetiredSync } from './checkpoint-index.js';
import { retireAfterCreate } from './retire-after-create.js';

/** The worker's index of each checkpoint directory it serves (one per agent): kept here, between calls. */
const indexes = new Map<string, CheckpointIndex>();
function indexOf(checkpointDir: string, dbPath: string): CheckpointIndex {
  const key = `${checkpointDir}\0${dbPath}`;
  let index = indexes.get(key);
  if (!index) {
    index = new CheckpointIndex(checkpointDir, dbPath);
    indexes.set(key, index);
  }
  return index;
}

/**
 * The worker thread that does the agent's file work synchronously, off the host's event loop and off
 * libuv's thread pool (which classic-level keeps busy). One job at a time; terminating the worker is
 * how a job is cancelled.
 */
export const workerOps = {
  /** Builds a checkpoint (the builder worker); the files worker's index takes it in with `addedAndRetire`. */
  build: ops.buildCheckpointDir,
  list: (checkpointDir: string, dbPath: string) => indexOf(checkpointDir, dbPath).list(),
  describe: (checkpointDir: string, dbPath: string, id: string) => indexOf(checkpointDir, dbPath).get(id),
  summary: (checkpointDir: string, dbPath: string) => indexOf(checkpointDir, dbPath).summary(),
  setPinned: (checkpointDir: string, dbPath: string, id: string, pinned: boolean) => indexOf(checkpointDir, dbPath).setPinned(id, pinned),
  /** Renames checkpoints aside (they are gone from the listing on return); their trees go with removeRetired. */
  retire: (checkpointDir: string, dbPath: string, ids: string[]) => indexOf(checkpointDir, dbPath).retire(ids),
  removeRetired: removeRetiredSync,
  addedAndRetire: (checkpointDir: string, dbPath: string, built: ops.BuiltCheckpoint, retention: Parameters<typeof retireAfterCreate>[2]) =>
    retireAfterCreate(indexOf(checkpointDir, dbPath), built, retention),
  cleanLeftovers: ops.cleanLeftoversSync,
  clone: ops.cloneDbSync,
  removeTree: ops.removeTreeSync,
  checkFiles: checkDbFilesSync,
} as const;

export type FsWorkerOps = typeof workerOps;

/**
 * Every op but `build` is synchronous and runs whole before the next message is read; `build` awaits
 * its fsyncs, and the builder is given one call at a time.
 */
serveWorkerOps(workerOps);
