import type { Repository } from './repository.js';

/**
 * A client of the repository that keeps objects of its own beside the backups' snapshots and packs (the
 * log archive, under `wal/`), as prune asks it. Prune applies the backup retention, and asks each client
 * what it needs kept and what may go; it never reads a client's objects itself.
 *
 * Contract: `survey` is called once per prune, under prune's exclusive lock, after the snapshots were
 * listed; it may list and read the client's objects but never writes. What it returns decides nothing by
 * itself: prune keeps `protect` beyond its policy, then deletes `doomed(kept)` right after the snapshots
 * it removes (so an interrupted prune leaves what the next one deletes).
 */
export interface PruneClient {
  survey(repo: Repository, snapshots: ReadonlySet<string>): Promise<PruneSurvey>;
}

export interface PruneSurvey {
  /** A snapshot the retention must keep beyond its policy (the client would lose its newest window), or null. */
  protect: string | null;
  /** The client's objects no longer needed once `kept` are the snapshots kept, and the bytes they hold. */
  doomed(kept: ReadonlySet<string>): { names: string[]; bytes: number };
}
