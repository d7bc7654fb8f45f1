/**
 * The admin API: what travels over the socket, shared by the agent and the CLI.
 *
 * Routes (HTTP/1.1 + JSON on a Unix socket; every route is versioned under /v1):
 *   GET    /v1/status                      -> AgentStatus
 *   GET    /v1/checkpoints                 -> CheckpointRecord[] (oldest first)
 *   POST   /v1/checkpoints                 CreateCheckpointRequest -> 201 CheckpointRecord
 *   POST   /v1/checkpoints/cancel          -> CancelResult (stops the running create and empties the queue)
 *   POST   /v1/checkpoints/prune           PruneRequest -> PruneResult
 *   GET    /v1/checkpoints/{id}            -> CheckpointRecord
 *   DELETE /v1/checkpoints/{id}[?force=true] -> DeleteResult
 *   POST   /v1/checkpoints/{id}/pin        -> CheckpointRecord
 *   POST   /v1/checkpoints/{id}/unpin      -> CheckpointRecord
 *   POST   /v1/checkpoints/{id}/verify     -> VerifyReport
 *   GET    /v1/backups                     -> BackupRecord[] (oldest first; [] before the first backup)
 *   POST   /v1/backups                     CreateBackupRequest -> 200 application/x-ndjson stream:
 *                                          {"progress":BackupProgress} lines, then exactly one
 *                                          {"result":BackupRecord} or {"error":{"code","message"}} line
 *   POST   /v1/backups/cancel              -> CancelResult (stops the running backup)
 *   POST   /v1/backups/prune               PruneRequest -> BackupPruneResult (the agent's backup retention)
 *   POST   /v1/backups/verify              VerifyBackupsRequest -> BackupVerifyReport
 *   GET    /v1/backups/{id}                -> BackupRecord
 * Errors: a 4xx/5xx status and an ErrorBody (shared/errors.ts). A backup create that fails before its
 * stream starts (bad body, BUSY, BACKUP_NOT_CONFIGURED, no such checkpoint, storage refused) is an
 * ordinary error answer; once streaming, a failure arrives in-band as the last line (the Docker convention).
 */

import type { BackupProgress } from '../agent/backup/backup-types.js';

export const API_VERSION = 'v1';

export type CheckpointTrigger = 'manual' | 'scheduled' | 'offline';

export interface CheckpointRecord {
  /** Sortable by creation time, safe as a path segment: `20261122T210045123Z-a1b2`. */
  id: string;
  /** ISO 8601, UTC. */
  createdAt: string;
  label: string | null;
  pinned: boolean;
  trigger: CheckpointTrigger;
  /** A directory that classic-level can open as a database once copied (never open it in place). */
  path: string;
  /** Number of files in `path`. */
  files: number;
  /** Logical size: the sum of the sizes of the files in `path`. */
  bytes: number;
  /** What deleting this checkpoint would free: files linked by neither the live database nor another checkpoint. */
  exclusiveBytes: number;
}

export interface CreateCheckpointRequest {
  label?: string;
  pin?: boolean;
}

export interface RetentionPolicy {
  /** Keep the newest N checkpoints. */
  keepLast: number;
  /** Keep the newest checkpoint of each of the last N hours (likewise days, ISO weeks). */
  keepHourly: number;
  keepDaily: number;
  keepWeekly: number;
  /** The newest of each of the last N UTC calendar months (used by backups; 0 for checkpoints by default). */
  keepMonthly: number;
  /** Remove checkpoints older than this (ms), whatever the windows say; null: no limit. */
  maxAgeMs: number | null;
  /** Keep at least this many bytes free on the checkpoint filesystem: prune oldest unpinned first, then refuse creates. */
  minFreeBytes: number;
}

export interface PruneRequest {
  dryRun?: boolean;
}

export interface PruneDecision {
  id: string;
  /** Why it is removed: 'policy' (outside every keep rule), 'max-age', 'free-space'. */
  reason: 'policy' | 'max-age' | 'free-space';
}

export interface PruneResult {
  dryRun: boolean;
  removed: PruneDecision[];
  kept: string[];
  /** Bytes freed (or that would be freed with dryRun). */
  freedBytes: number;
}

export interface DeleteResult {
  deleted: string;
  freedBytes: number;
}

export interface CancelResult {
  /** Creates stopped: the running one (if any) plus every queued one. */
  cancelled: number;
}

export interface VerifyReport {
  id: string;
  ok: boolean;
  /** Entries read back from the checkpoint. */
  entries: number;
  durationMs: number;
  /** Why it failed, when !ok. */
  error?: { code: string; message: string };
}

export interface OperationStatus {
  kind: 'create';
  /** The id the checkpoint will have. */
  id: string;
  label: string | null;
  trigger: CheckpointTrigger;
  startedAt: string;
  phase: string;
}

export interface AgentStatus {
  version: string;
  pid: number;
  startedAt: string;
  dbPath: string;
  checkpointDir: string;
  socketPath: string | null;
  checkpoints: { count: number; pinned: number; bytes: number; exclusiveBytes: number };
  inProgress: OperationStatus | null;
  queued: number;
  schedule: {
    enabled: boolean;
    intervalMs: number | null;
    nextRunAt: string | null;
    lastRun: { at: string; ok: boolean; checkpointId: string | null; error: string | null } | null;
  };
  retention: RetentionPolicy;
  filesystem: { freeBytes: number; totalBytes: number };
  /** Remote backups; null when the agent has no backup repository configured. */
  backup: BackupStatus | null;
}

// ---- remote backups ----

/** The backup engine's own types are the wire format (agent/backup/backup-types.ts). */
export type { BackupProgress, BackupRecord } from '../agent/backup/backup-types.js';
export type { VerifyRepositoryReport as BackupVerifyReport } from '../agent/backup/verify-repository.js';
export type { PruneRepositoryResult as BackupPruneResult } from '../agent/backup/prune-repository.js';

export interface CreateBackupRequest {
  /** The checkpoint to back up; default: the newest, or a new one (label "backup") if there is none. */
  checkpointId?: string;
  /** Pin the backup: backup retention never removes it. */
  pin?: boolean;
}

export interface VerifyBackupsRequest {
  /** Only this backup; default: every backup in the repository. */
  id?: string;
  /** Download every referenced pack and re-hash every blob (slow: reads the whole repository). */
  readData?: boolean;
}

/** The running backup, as status shows it. Before the upload starts: phase `checkpointing` or `starting`, counters 0. */
export interface BackupInProgress extends Omit<BackupProgress, 'phase'> {
  phase: 'checkpointing' | 'starting' | BackupProgress['phase'];
  /** The checkpoint being backed up (null while it is still being taken). */
  checkpointId: string | null;
  startedAt: string;
}

export interface BackupStatus {
  /** The repository URL (`file:///...`, `s3://bucket/prefix`); URLs never carry credentials. */
  repository: string;
  inProgress: BackupInProgress | null;
  /** The last backup that ended (any trigger): when it ended, and how. `error` is `CODE: message`. */
  lastBackup: { at: string; ok: boolean; id: string | null; error: string | null } | null;
}

/** Backup ids: like checkpoint ids, lowercase (every object store accepts them): `20261122t213525139z-8dd2`. */
export const BACKUP_ID_PATTERN = /^\d{8}t\d{9}z-[0-9a-f]{4}$/;

export function isBackupId(value: unknown): value is string {
  return typeof value === 'string' && BACKUP_ID_PATTERN.test(value);
}

/** Checkpoint ids: UTC timestamp to the millisecond, a dash, 4 hex digits. */
export const CHECKPOINT_ID_PATTERN = /^\d{8}T\d{9}Z-[0-9a-f]{4}$/;

export function isCheckpointId(value: unknown): value is string {
  return typeof value === 'string' && CHECKPOINT_ID_PATTERN.test(value);
}

/** Where the example node puts its socket, and so where the CLI looks first. */
export const DEFAULT_SOCKET_PATH = 'var/run/admin.sock';
/** Where the systemd unit puts it (RuntimeDirectory=node-admin). */
export const SYSTEM_SOCKET_PATH = '/run/node-admin/admin.sock';
