import { lowerThreadPriority } from '../worker/lower-thread-priority.js';
import { serveWorkerOps } from '../worker/serve-worker-ops.js';
import { cryptoWorkerOps } from './crypto-worker-ops.js';

/** A worker thread of the sealed codec (crypto-pool.ts): serves crypto-worker-ops.ts. */

// Deferrable work: the host's own threads go first when the cores are busy (lower-thread-priority.ts).
lowerThreadPriority();
serveWorkerOps(cryptoWorkerOps);
