import type { Logger } from 'pino';
import type {
  AgentStatus,
  CancelResult,
  CheckpointRecord,
  CheckpointTrigger,
  CreateCheckpointRequest,
  DeleteResult,
  PruneRequest,
  PruneResult,
  RetentionPolicy,
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
}
