import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { AdminApi } from '../shared/admin-api.js';
import type { BackupPace, CheckpointRecord, CheckpointTrigger, CreateCheckpointRequest, RetentionPolicy } from '../shared/api.js';
import type { KeepKey } from '../shared/input-rules.js';
import type { LogArchiveOptions } from './log-archive/log-archiver.js';

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
  /**
   * `signedPayloadLimit`: bodies larger than this (packs; default 1 MiB) go UNSIGNED-PAYLOAD, not hashed
   * a second time; `Infinity` signs every body (s3-storage.ts).
   */
  s3?: { endpoint?: string; region?: string; forcePathStyle?: boolean; signedPayloadLimit?: number };
  /** Packs uploading at once (default 4; each holds up to 9 MiB in memory). */
  concurrency?: number;
  /** Upload cap in bytes per second; null or absent: none. */
  bandwidthLimit?: number | null;
  /**
   * How fast backups read the node's checkpoint files (default `auto`): `auto` backs off while the node
   * feels the backup (its event loop's delay, the latency of a small read of its own tables) and goes
   * back to full speed when it does not, never below a floor (8 MiB/s) so that a backup on a busy node
   * still finishes; `max` never holds back; `{ bytesPerSecond }` holds reads, and so uploads, to that
   * rate. The log archive is never paced. README "Pacing".
   */
  pace?: BackupPace;
  /**
   * The repository's password (a new repository is encrypted with it; an encrypted one is opened with
   * it): a file holding it, or a command that prints it. Absent: the file NODE_ADMIN_PASSWORD_FILE
   * names, else the systemd credential `node-admin-password` ($CREDENTIALS_DIRECTORY). Never logged.
   */
  password?: { file?: string; command?: string } | null;
  /**
   * Said explicitly: a repository created by this agent is not encrypted, and an unencrypted format 3
   * repository may receive new backups. Whoever can read the store then reads the database.
   */
  insecureNoEncryption?: boolean;
  /** Said explicitly: new backups and archived logs may go into a format 2 (unencrypted) repository. */
  allowFormat2?: boolean;
  /** scrypt's cost for the key a created repository gets (default N 2^16, r 8, p 1: ~0.5 s to unlock). */
  kdfCost?: { N: number; r: number; p: number };
  /** Where the hash cache lives (default: `<dirname(checkpointDir)>/cache`). */
  cacheDir?: string;
  /** What `pruneBackups` keeps (pinned backups always stay). Absent keys: keepLast 3, the rest 0. */
  retention?: Partial<Record<KeepKey, number>>;
  /**
   * Back scheduled checkpoints up automatically once they are taken. `scheduled`: every one;
   * `minIntervalMs`: at most one backup per interval (counted from the last successful backup of any
   * trigger). Failures are logged and shown in status; they never fail the checkpoint. Null: never.
   */
  promote?: { scheduled?: boolean; minIntervalMs?: number } | null;
  /**
   * Continuous archiving of the database's write-ahead log into the repository, for restores to any
   * moment (docs/log-archive-design.md). `true` or an object: on (default interval 1 s); absent, null or
   * false: off. At start the agent takes a checkpoint and a backup as the base of a new timeline.
   */
  logArchive?: LogArchiveOptions | boolean | null;
  /**
   * Continuous replicas: repository URLs (file:// or s3://, the same password and s3 options as the
   * primary), each created if there is none. Every snapshot the agent makes in the primary (a backup
   * through the socket, a promotion, a log archive base) and every archived segment, base and mark goes
   * to each after it lands, from the node's side (snapshots backed up from their checkpoints with the
   * primary's ids), never by reading the primary; each has its own queues, retries and backoff, so a
   * replica that is down never delays the primary or another replica. Needs `logArchive`.
   */
  replicas?: string[];
  /**
   * The most snapshots waiting per replica (default 3, from 1 to 1000): their checkpoints are kept by
   * retention until the replica has them; past the limit the oldest waiting one is dropped (logged,
   * counted in node_admin_backup_replica_snapshots_dropped_total) and its checkpoint is let go.
   */
  replicaPendingSnapshots?: number;
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
  /**
   * Prometheus metrics (README "Metrics"). `registry`: a prom-client Registry of the host's own, which
   * gets our metrics beside its own (the host serves it on its /metrics). The agent keeps them in a
   * registry of its own too: `agent.metrics()` and the socket's GET /v1/metrics serve ours alone.
   */
  metrics?: { registry?: Registry | null } | null;
  logger?: Logger;
}

/**
 * The checkpoint manager embedded in a node: the admin API (shared/admin-api.ts, where each operation's
 * contract is stated), served in-process and on the socket, plus its own life cycle. Every method
 * rejects with an AdminError (shared/errors.ts) on failure.
 */
export interface Agent extends AdminApi {
  /** Cleans leftovers of interrupted creates, opens the socket, starts the schedule. Called once. */
  start(): Promise<void>;
  /** Stops the schedule, cancels running and queued creates, closes and removes the socket. Idempotent. */
  stop(): Promise<void>;
  /** As AdminApi's, and in-process a host may say why it creates (the socket's creates are all `manual`). */
  createCheckpoint(req?: CreateCheckpointRequest & { trigger?: CheckpointTrigger }): Promise<CheckpointRecord>;
}
