import { CryptoPool, defaultCryptoThreads } from '../repository/crypto-pool.js';
import type { CryptoWorkerOps } from '../repository/crypto-worker-ops.js';
import type { ArchiveWorkerOps } from './archive-worker-ops.js';

/** What each thread of an agent's pool serves (archive-crypto-worker.ts). */
export type ArchiveThreadOps = CryptoWorkerOps & ArchiveWorkerOps;

/**
 * An agent's worker threads when it archives the log: its repositories' crypto pool (lent to them:
 * OpenOptions.threads), whose first thread also does the log archive's work (ArchiveWorker), so the
 * archive needs no isolate of its own. The agent closes it, after every user.
 */
export function archiveThreads(threads = defaultCryptoThreads()): CryptoPool<ArchiveThreadOps> {
  return new CryptoPool<ArchiveThreadOps>(threads, new URL('./archive-crypto-worker.js', import.meta.url));
}
