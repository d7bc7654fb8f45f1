import { CryptoPool, defaultCryptoThreads } from '../repository/crypto-pool.js';
import type { CryptoWorkerOps } from '../repository/crypto-worker-ops.js';
import type { WorkerClient } from '../worker/worker-client.js';
import type { ArchiveWorkerOps } from './archive-worker-ops.js';

/** What each thread of an agent's pool serves (archive-crypto-worker.ts). */
export type ArchiveThreadOps = CryptoWorkerOps & ArchiveWorkerOps;

/**
 * An agent's worker threads when it archives the log: its repositories' crypto pool (`pool`, lent to
 * them: OpenOptions.threads), whose first thread (`archive`) also does the log archive's work
 * (ArchiveWorker), so the archive needs no isolate of its own. The agent closes the pool, after every
 * user.
 */
export interface ArchiveThreads {
  pool: CryptoPool;
  archive: WorkerClient<ArchiveThreadOps>;
}

export function archiveThreads(threads = defaultCryptoThreads()): ArchiveThreads {
  const pool = new CryptoPool(threads, new URL('./archive-crypto-worker.js', import.meta.url));
  // Sound here, and only here: every thread of this pool runs archive-crypto-worker.ts, which serves
  // ArchiveThreadOps (the crypto ops and the archive's).
  return { pool, archive: pool.first as unknown as WorkerClient<ArchiveThreadOps> };
}
