import { serveWorkerOps } from '../worker/serve-worker-ops.js';
import { archiveWorkerOps } from './archive-worker-ops.js';

/** The log archive's own worker thread (an archiver without an agent's shared threads): serves archive-worker-ops.ts. */
serveWorkerOps(archiveWorkerOps);
