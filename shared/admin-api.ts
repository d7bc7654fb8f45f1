import type {
  AgentStatus,
  BackupProgress,
  BackupPruneResult,
  BackupRecord,
  BackupVerifyReport,
  CancelResult,
  ChangeBatch,
  ChangesRequest,
  ChangesSummary,
  CheckpointRecord,
  CopyBackupsRequest,
  CopyProgress,
  ArchiveCopyProgress,
  CopySummary,
  CreateBackupRequest,
  CreateCheckpointRequest,
  DeleteCheckpointOptions,
  DeleteResult,
  LogArchiveTimelines,
  PruneRequest,
  PruneResult,
  VerifyBackupsRequest,
  VerifyReport,
} from './api.js';

/**
 * Every operation the admin socket offers, once. The agent implements it in-process (its `Agent` adds
 * start/stop), the socket client implements it over the socket, and the route handlers depend on it
 * alone. routes.ts maps each operation to its route. Every method rejects with an AdminError
 * (shared/errors.ts) on failure, whichever side of the socket it runs on.
 */
export interface AdminApi {
  status(): Promise<AgentStatus>;
  /** Every checkpoint, oldest first. */
  listCheckpoints(): Promise<CheckpointRecord[]>;
  getCheckpoint(id: string): Promise<CheckpointRecord>;
  /**
   * Queues a create; resolves when this request's own checkpoint exists (renamed into place, fsynced).
   * Creates run one at a time; past the queue's bound, BUSY.
   */
  createCheckpoint(req?: CreateCheckpointRequest): Promise<CheckpointRecord>;
  /** A pinned checkpoint only with force (else CHECKPOINT_PINNED); the one being backed up never (BUSY). */
  deleteCheckpoint(id: string, options?: DeleteCheckpointOptions): Promise<DeleteResult>;
  pin(id: string): Promise<CheckpointRecord>;
  unpin(id: string): Promise<CheckpointRecord>;
  /** Applies the retention policy now (or, with dryRun, says what it would remove). */
  prune(req?: PruneRequest): Promise<PruneResult>;
  /** Reads the checkpoint back in full through a throwaway clone; a report with ok:false is not an error. */
  verify(id: string): Promise<VerifyReport>;
  /** Stops the running create and empties the queue. */
  cancel(): Promise<CancelResult>;

  // ---- remote backups (each rejects with BACKUP_NOT_CONFIGURED where no repository is configured) ----

  /**
   * Backs a checkpoint up (default: the newest; if there is none, one is taken first, label "backup").
   * One backup at a time: while one runs, another request is refused with BUSY. `onProgress` gets the
   * engine's progress (at most every 200 ms, at least every second). Cancelled by cancelBackup() or by
   * the agent stopping: CANCELLED; the packs already stored are reused by the next one.
   */
  createBackup(req?: CreateBackupRequest, onProgress?: (p: BackupProgress) => void): Promise<BackupRecord>;
  /** Stops the running backup (if any) and waits until it has stopped. */
  cancelBackup(): Promise<CancelResult>;
  /**
   * Copies backups (and with logArchive the log archive) from the agent's repository into another
   * (CopyBackupsRequest), as `backup copy --from` does offline: resumable, never deleting at the
   * destination, both ends locked shared (a prune of either is refused meanwhile). One copy at a time
   * (another: BUSY); the agent's own backups and its log archive go on meanwhile. `onProgress` as
   * the offline copy's. Cancelled by cancelCopy() or by the agent stopping: CANCELLED (a client that
   * goes away does not stop it).
   */
  copyBackups(req: CopyBackupsRequest, onProgress?: (p: CopyProgress | ArchiveCopyProgress) => void): Promise<CopySummary>;
  /** Stops the running copy (if any) and waits until it has stopped; what it stored is reused by the next. */
  cancelCopy(): Promise<CancelResult>;
  /** Every backup in the repository, oldest first ([] when the repository does not exist yet). */
  listBackups(): Promise<BackupRecord[]>;
  getBackup(id: string): Promise<BackupRecord>;
  /** Applies the backup retention and collects garbage (refused with BUSY while a backup runs). */
  pruneBackups(req?: PruneRequest): Promise<BackupPruneResult>;
  /** Checks the repository's structure, or with readData every byte; a report with ok:false is not an error. */
  verifyBackups(req?: VerifyBackupsRequest): Promise<BackupVerifyReport>;
  /**
   * The log archive's restorable windows (`backup timeline`): two listings of the repository (`wal/`,
   * `snapshots/`), no object read. Empty when the repository has no log archive (or does not exist yet).
   */
  backupTimeline(): Promise<LogArchiveTimelines>;
  /**
   * The archived write batches between two moments of one timeline (`backup changes`), oldest first,
   * each to `onBatch` as it is read (one segment of the archive in memory at a time; a promise it returns
   * is awaited, so a slow reader holds the listing up rather than let it pile up). Resolves with what was
   * covered. Moments outside every window: MOMENT_NOT_RESTORABLE.
   */
  backupChanges(req?: ChangesRequest, onBatch?: (b: ChangeBatch) => void | Promise<void>): Promise<ChangesSummary>;

  /**
   * The agent's Prometheus metrics in the text exposition format (METRICS_CONTENT_TYPE): from what the
   * agent already knows, never a request to the backup storage; answers in milliseconds.
   */
  metrics(): Promise<string>;
}

export type Operation = keyof AdminApi;
