import type { Logger } from 'pino';
import type {
  AgentStatus,
  BackupProgress,
  BackupPruneResult,
  BackupRecord,
  BackupVerifyReport,
  CancelResult,
  CheckpointRecord,
  CheckpointTrigger,
  CreateBackupRequest,
  CreateCheckpointRequest,
  DeleteResult,
  PruneRequest,
  PruneResult,
  RetentionPolicy,
  VerifyBackupsRequest,
  VerifyReport,
} from '../shared/api.js';

export interface ScheduleOptions {
  /** Take a checkpoint every intervalMs. */
  intervalMs: number;
  /** The first scheduled checkpoint comes this long after start (default: intervalMs). */
  initialDelayMs?: number;
  /** After a failed scheduled checkpoint, try again this soon (default: min(intervalMs, 5 min)). */
  retryAfterMs?: number;
}

/** Remote backups of checkpoints into a repository (agent/backup/). */
export interface BackupOptions {
  /**
   * The repository: `file:///absolute/path` or `s3://bucket[/prefix]`. Never credentials in it (refused):
   * for S3 the SDK's standard chain finds them (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and
   * ~/.aws, web identity, instance metadata). The syntax is checked by start(); the storage is first used
   * by the first backup operation, which creates the repository if there is none.
   */
  repository: string;
  s3?: { endpoint?: string; region?: string; forcePathStyle?: boolean };
  /** Packs uploading at once (default 4; each holds up to 9 MiB in memory). */
  concurrency?: number;
  /** Upload cap in bytes per second; null or absent: none. */
  bandwidthLimit?: number | null;
  /** Where the hash cache lives (default: `<dirname(checkpointDir)>/cache`). */
  cacheDir?: string;
  /** What `pruneBackups` keeps (pinned backups always stay). Absent keys: keepLast 3, the rest 0. */
  retention?: { keepLast?: number; keepHourly?: number; keepDaily?: number; keepWeekly?: number; keepMonthly?: number };
  /**
   * Back scheduled checkpoints up automatically once they are taken. `scheduled`: every one;
   * `minIntervalMs`: at most one backup per interval (counted from the last successful backup of any
   * trigger). Failures are logged and shown in status; they never fail the checkpoint. Null: never.
   */
  promote?: { scheduled?: boolean; minIntervalMs?: number } | null;
}

export interface AgentOptions {
  /** The classic-level database directory of the host node. */
  dbPath: string;
  /** Where checkpoints live; best on the same filesystem as dbPath (hard links), else files are copied. */
  checkpointDir: string;
  /** The admin socket's path; null or absent: no socket (in-process use only). */
  socketPath?: string | null;
  /** A group (name or gid) that may use the socket too: socket 0660, directory 0750. */
  socketGroup?: string | number | null;
  retention?: Partial<RetentionPolicy>;
  schedule?: ScheduleOptions | null;
  /** Creates waiting behind the running one; more get BUSY (default 8). */
  maxQueuedCreates?: number;
  /** Remote backups; absent or null: backup operations answer BACKUP_NOT_CONFIGURED. */
  backup?: BackupOptions | null;
  logger?: Logger;
}

/**
 * The checkpoint manager embedded in a node. The admin socket offers exactly these operations.
 * Every method rejects with an AdminError (shared/errors.ts) on failure.
 */
export interface Agent {
  /** Cleans leftovers of interrupted creates, opens the socket, starts the schedule. Called once. */
  start(): Promise<void>;
  /** Stops the schedule, cancels running and queued creates, closes and removes the socket. Idempotent. */
  stop(): Promise<void>;
  status(): Promise<AgentStatus>;
  listCheckpoints(): Promise<CheckpointRecord[]>;
  getCheckpoint(id: string): Promise<CheckpointRecord>;
  /** Queues a create; resolves when this request's own checkpoint exists (renamed into place, fsynced). */
  createCheckpoint(req?: CreateCheckpointRequest & { trigger?: CheckpointTrigger }): Promise<CheckpointRecord>;
  deleteCheckpoint(id: string, options?: { force?: boolean }): Promise<DeleteResult>;
  pin(id: string): Promise<CheckpointRecord>;
  unpin(id: string): Promise<CheckpointRecord>;
  prune(req?: PruneRequest): Promise<PruneResult>;
  verify(id: string): Promise<VerifyReport>;
  cancel(): Promise<CancelResult>;

  // ---- remote backups (each rejects with BACKUP_NOT_CONFIGURED without options.backup) ----

  /**
   * Backs a checkpoint up (default: the newest; if there is none, one is taken first, label "backup").
   * One backup at a time: while one runs, another request is refused with BUSY (503 on the socket; try
   * again later). `onProgress` gets the engine's progress (at most every 200 ms, and at least every second).
   * Cancelled by cancelBackup() or stop(): CANCELLED; the packs already uploaded are reused by the next one.
   */
  createBackup(req?: CreateBackupRequest, onProgress?: (p: BackupProgress) => void): Promise<BackupRecord>;
  /** Stops the running backup (if any) and waits until it has stopped. */
  cancelBackup(): Promise<CancelResult>;
  /** Every backup in the repository, oldest first ([] when the repository does not exist yet). */
  listBackups(): Promise<BackupRecord[]>;
  getBackup(id: string): Promise<BackupRecord>;
  /** Applies options.backup.retention and collects garbage (refused with BUSY while a backup runs). */
  pruneBackups(req?: PruneRequest): Promise<BackupPruneResult>;
  /** Checks the repository's structure, or with readData every byte; a report with ok:false is not an error. */
  verifyBackups(req?: VerifyBackupsRequest): Promise<BackupVerifyReport>;
}
