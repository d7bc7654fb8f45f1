import { cryptoWorkerOps } from '../repository/crypto-worker-ops.js';
import { lowerThreadPriority } from '../worker/lower-thread-priority.js';
import { serveWorkerOps } from '../worker/serve-worker-ops.js';
import { archiveWorkerOps } from './archive-worker-ops.js';

/**
 * A thread of an agent's crypto pool (archive-threads.ts): the sealed codec's operations and the log
 * archive's, in one V8 isolate rather than two (an idle one holds about 8 MiB of the host's memory).
 * At the crypto threads' lowered priority (lower-thread-priority.ts): the archive already waited on
 * them to seal every segment, and at that priority a thread still gets about a tenth of a core when
 * the node takes every core, far more than the archive's 2-5 %.
 */
lowerThreadPriority();
serveWorkerOps({ ...cryptoWorkerOps, ...archiveWorkerOps });
