/**
 * The admin API's wire types: every record, request, report and progress event that travels over the
 * socket, shared by the agent and the CLI. The routes are in routes.ts, the operations in admin-api.ts.
 * Nothing here is imported from the agent: an engine field renamed is a compile error, not a silent
 * change of the API.
 */

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

export interface DeleteCheckpointOptions {
  /** Delete it even if pinned. */
  force?: boolean;
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
  /** The log archiver; null when log archiving is off (agents before it have no such field). */
  logArchive?: LogArchiveStatus | null;
}

/**
 * The log archiver as `status` shows it: from what it holds in memory (and one fstat per open log for
 * `unreadBytes`), never a storage request.
 *
 * `state`: `starting` (taking the first base of this agent run), `following` (a timeline runs; nothing
 * being stored right now), `shipping` (a segment or base record is being stored), `retrying` (the last
 * storage attempt or base failed: `lastError` says why; retried at the next interval, or with backoff for
 * a base), `broken` (continuity was lost — `lastBreak` says why — and the new timeline's base is being
 * taken: writes since the break are not restorable yet), `stopped`.
 */
export interface LogArchiveStatus {
  state: 'starting' | 'following' | 'shipping' | 'retrying' | 'broken' | 'stopped';
  intervalMs: number;
  /** The current timeline: its id, its first base's last sequence and when it began; null while there is none. */
  timeline: { id: string; sequence: number; startedAt: string } | null;
  lag: {
    /** How long the oldest write not yet stored has waited (s): since the archive was last complete. */
    seconds: number;
    /** Batches read and not yet stored, and their bytes. */
    batches: number;
    bytes: number;
    /** Bytes of the live logs not yet read. */
    unreadBytes: number;
  };
  /** The last segment stored: when, and the last sequence number it holds. */
  lastShipped: { at: string; sequence: number; timeline: string } | null;
  /** Since the agent started. */
  shippedSegments: number;
  shippedBytes: number;
  /** Timelines ended by a break since the agent started (the start itself not counted). */
  breaks: number;
  lastBreak: { at: string; reason: string; detail: string } | null;
  /** The last failure (storage, base, reading the logs), kept after a later success; `error` is `CODE: message`. */
  lastError: { at: string; error: string } | null;
  /** Each replica (backup.replicas): what it holds and how far behind it is; absent without replicas. */
  replicas?: LogArchiveReplicaStatus[];
}

/** A log archive replica as `status` shows it. */
export interface LogArchiveReplicaStatus {
  /** Its URL without credentials. */
  name: string;
  /** `following`; `retrying` (its last request failed); `behind` (its outbox overflowed: its copy of the timeline ended, it joins the next); `stopped`. */
  state: 'following' | 'retrying' | 'behind' | 'stopped';
  /** How long the oldest write the replica does not hold yet has waited (s). */
  lagSeconds: number;
  /**
   * Segments waiting for it (in memory, or in its spool directory; with those a previous run left
   * there), and the bytes of this run's; of which in its spool directory.
   */
  waitingSegments: number;
  waitingBytes: number;
  spooledBytes: number;
  /** When a request to it last succeeded (ISO 8601), or null. */
  lastSuccess: string | null;
  lastError: { at: string; error: string } | null;
}

/** A base backup of a timeline, as `backup timeline` shows it (times ISO 8601). */
export interface TimelineBase {
  backup: string;
  sequence: number;
  from: string;
  usable: boolean;
  problem: string | null;
}

/** One timeline of the log archive: its restorable window (null ends: nothing restorable). */
export interface TimelineWindow {
  id: string;
  from: string | null;
  to: string | null;
  /** The sequence numbers the window restores: from its earliest usable base's to the last archived. */
  firstSequence: number | null;
  lastSequence: number | null;
  segments: number;
  /** A segment is missing after this sequence: nothing after it is claimed. */
  brokenAfterSequence: number | null;
  bases: TimelineBase[];
  /**
   * Its clean stops (`stop`: everything read stored, at `at`) and the restarts it went on through
   * (`resume`: an agent started at `at` on the database still at `sequence`, proven), oldest first.
   */
  marks: { kind: 'stop' | 'resume'; sequence: number; at: string }[];
}

/** `backup timeline`: the restorable windows of the repository's log archive, oldest first, and the gaps between them. */
export interface LogArchiveTimelines {
  timelines: TimelineWindow[];
  gaps: { from: string; to: string }[];
  /**
   * Through the agent with backup.replicas: what each replica holds, from its own listings. Absent
   * from `--repo` answers, from agents without replicas and from agents before replicas held snapshots.
   */
  replicas?: ReplicaHoldings[];
}

/** A snapshot named by its id and when it was made (ISO 8601; a replica's copy keeps the primary's time). */
export interface SnapshotRef {
  id: string;
  createdAt: string;
}

/**
 * One replica in `backup timeline` through the agent: its newest snapshot and how many it holds, its
 * log archive's windows and gaps (as the primary's are computed, from the replica's own listings), and
 * its lag as the agent knows it. A replica that cannot be listed has `error` (`CODE: message`), no
 * windows and no snapshot: the command still answers for the others.
 */
export interface ReplicaHoldings {
  /** Its URL without credentials. */
  name: string;
  newestSnapshot: SnapshotRef | null;
  snapshots: number;
  timelines: TimelineWindow[];
  gaps: { from: string; to: string }[];
  /** The log archive's lag at the replica (s), from the agent's memory (status's logArchive.replicas[].lagSeconds); null while unknown. */
  lagSeconds: number | null;
  /** Snapshots of the primary the agent still has to back up into it (BackupReplicaStatus.pending). */
  pendingSnapshots: number;
  error: string | null;
}

/**
 * `backup changes`: which archived write batches to list. Moments as shared/input-rules.ts parses them
 * (`from` exclusive: the state at it; `to` inclusive); both in one timeline.
 */
export interface ChangesRequest {
  /** Default: the timeline's earliest usable base (every archived batch of it). */
  from?: string;
  /** Default: the newest moment of the timeline (`latest`). */
  to?: string;
  /** Default: the timeline holding `to` (or `from`), else the newest. */
  timeline?: string;
  /** Only batches changing this key (UTF-8), and of them only its entries. */
  key?: string;
  /** Only batches changing a key with this prefix (UTF-8), and of them only those entries. */
  prefix?: string;
  /** With each put, its value. */
  values?: boolean;
}

/** One entry of a listed batch. Keys and values are UTF-8 where they are valid UTF-8, else base64 (`keyEncoding`, `valueEncoding`). */
export interface ChangeEntry {
  type: 'put' | 'del';
  key: string;
  keyEncoding?: 'base64';
  /** A put's value length in bytes. */
  valueBytes?: number;
  /** A put's value (only when asked for). */
  value?: string;
  valueEncoding?: 'base64';
}

/** One archived write batch: its sequence numbers (`sequence` … `last`), when the archiver read it, its counts, and its entries (those the filter matched). */
export interface ChangeBatch {
  timeline: string;
  sequence: number;
  last: number;
  time: string;
  puts: number;
  deletes: number;
  changes: ChangeEntry[];
}

/** What a `backup changes` listing covered: the batches after `from` up to `to`, in one timeline. */
export interface ChangesSummary {
  timeline: string;
  from: string;
  to: string;
  /** Batches listed (matching the filter) and read. */
  batches: number;
  scanned: number;
  segments: number;
  /** The sequence numbers of the first and last batch read (null when none). */
  firstSequence: number | null;
  lastSequence: number | null;
}

// ---- remote backups ----

/** What a backup reports while it runs (one NDJSON line each over the socket). */
export interface BackupProgress {
  phase: 'uploading' | 'finishing';
  filesDone: number;
  filesTotal: number;
  /** Bytes of the checkpoint accounted for (read and hashed, or known from the hash cache). */
  bytesDone: number;
  bytesTotal: number;
  /** Bytes actually read from disk (unchanged tables are not read). */
  bytesRead: number;
  /** Bytes stored in the repository (packs). */
  bytesUploaded: number;
  bytesPerSecond: number;
}

/** A backup as listed and returned: the snapshot plus, from the run that made it, what it cost. */
export interface BackupRecord {
  id: string;
  createdAt: string;
  pinned: boolean;
  checkpoint: { id: string; label: string | null; createdAt: string; trigger: string };
  files: number;
  bytes: number;
  bytesRead?: number;
  bytesUploaded?: number;
  blobsUploaded?: number;
  packsUploaded?: number;
  durationMs?: number;
  /** Seconds the run's reads were held back by its pace (BackupPace; 0 with `max`). */
  pacedSeconds?: number;
  /** Whether the repository holding it is encrypted (format 3 with keys): false says plainly that it is not. */
  encrypted?: boolean;
}

/** Which snapshots a copy takes (exactly one way): given ids, the newest N, those made since a time, or all. */
export type CopySelection = { ids: string[] } | { latest: number } | { since: string } | { all: true };

/**
 * `backup copy` through the agent (POST /v1/backups/copy): from the agent's own repository into `to`.
 * The destination is reached with `s3` where given, else with the agent's own S3 settings; opened with
 * the password in `passwordFile` (a path the agent reads) where given, else the agent's own password
 * source; a destination that does not exist is made with the source's keys. Never a command to run:
 * the socket does not make the agent execute anything.
 */
export interface CopyBackupsRequest {
  /** The destination repository: `s3://bucket[/prefix]` or `file:///absolute/path`. */
  to: string;
  /** Which backups; absent only with `logArchive` (then: the backups its timelines start from). */
  select?: CopySelection;
  /** Also the log archive (segments, timelines) and the backups its timelines start from. */
  logArchive?: boolean;
  /** At most this many bytes per second stored at the destination. */
  limitUploadBytesPerSecond?: number;
  s3?: { endpoint?: string; region?: string; forcePathStyle?: boolean };
  /** An absolute path. */
  passwordFile?: string;
  insecureNoEncryption?: boolean;
  allowFormat2?: boolean;
}

/** What a copy between repositories reports while it runs (one NDJSON line each with --json). */
export interface CopyProgress {
  phase: 'planning' | 'copying' | 'finishing';
  /** Snapshots selected that the destination lacks, and of them copied so far. */
  snapshotsTotal: number;
  snapshotsDone: number;
  /** Stored bytes of the source blobs the copy may have to send (planned), and of them dealt with so far. */
  bytesTotal: number;
  bytesDone: number;
  /** Stored bytes read from the source (packs and blobs). */
  bytesRead: number;
  /** What was stored at the destination: packs, the blobs in them, their bytes. */
  packsSent: number;
  blobsSent: number;
  bytesSent: number;
  bytesPerSecond: number;
}

/** What a copy did. */
export interface CopySummary {
  from: string;
  to: string;
  /** `packs`: packs moved byte for byte (same keys); `blobs`: blobs opened and sealed again for the destination. */
  mode: 'packs' | 'blobs';
  /** The destination was made by this copy, with the source's keys (or, from a plain source, keys of its own). */
  created: boolean;
  /** Snapshots written at the destination, and those selected that it had already. */
  copied: string[];
  alreadyThere: string[];
  packsSent: number;
  blobsSent: number;
  bytesSent: number;
  bytesRead: number;
  /** Packs stored by an earlier, interrupted copy, indexed at the destination from their headers. */
  packsRecovered: number;
  durationMs: number;
  /** With --log-archive: what of the log archive was copied, and the destination's windows after it. */
  logArchive?: ArchiveCopySummary;
}

/** `backup copy --log-archive`: the archived log segments and timeline records copied. */
export interface ArchiveCopySummary {
  timelines: number;
  /** Segments stored at the destination, and the bytes they hold (before compression and sealing). */
  segments: number;
  bytes: number;
  /** Base records and marks stored at the destination. */
  records: number;
  /** Objects the destination held already. */
  present: number;
  /** The destination's restorable windows after the copy (`backup timeline` of it). */
  windows: LogArchiveTimelines;
}

/** A progress line of `backup copy --log-archive --json` while the log archive is copied. */
export interface ArchiveCopyProgress {
  phase: 'log-archive';
  /** Objects (segments, then records) stored at the destination so far, and their bytes. */
  objects: number;
  bytes: number;
}

/** What `backup verify` found; ok:false is a report, not an error. */
export interface BackupVerifyReport {
  ok: boolean;
  snapshots: number;
  blobs: number;
  packs: number;
  /** The log archive's segments checked (the whole repository only; read back with readData). */
  segments: number;
  /** Bytes downloaded and re-hashed (readData only). */
  bytesRead: number;
  /** Each names the object at fault. */
  errors: string[];
}

/** What `backup prune` removed (or would, with dryRun) and what it kept. */
export interface BackupPruneResult {
  dryRun: boolean;
  removed: PruneDecision[];
  kept: string[];
  /**
   * A backup the policy would have removed and that was kept (it is in `kept`): the newest base of the
   * log archive's newest timeline, without which that timeline would have no restorable window. Null: none.
   */
  logArchiveBase: string | null;
  packsDeleted: number;
  packsRewritten: number;
  bytesFreed: number;
  /** Log archive objects (wal/: segments, base records) no kept backup needs any more. */
  walObjectsDeleted: number;
}

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
  /**
   * The read rate the backup is held to now, bytes/s: the fixed pace, or auto's current rate; null
   * while it is not held back (pace `max`, or auto at full speed). Absent from agents before pacing.
   */
  paceBytesPerSecond?: number | null;
  /** Seconds its reads were held back by the pace so far. Absent from agents before pacing. */
  pacedSeconds?: number;
}

/**
 * How fast backups read the node's checkpoint files (AgentOptions.backup.pace): `auto` backs off while
 * the node feels the backup (its event loop's delay, the latency of its own table reads), `max` never
 * holds back, a rate holds reads to that many bytes per second.
 */
export type BackupPace = 'auto' | 'max' | { bytesPerSecond: number };

export interface BackupStatus {
  /** The repository URL (`file:///...`, `s3://bucket/prefix`); URLs never carry credentials. */
  repository: string;
  inProgress: BackupInProgress | null;
  /** The pace setting backups run with (absent from agents before pacing). */
  pace?: BackupPace;
  /** The last backup that ended (any trigger): when it ended, and how. `error` is `CODE: message`. */
  lastBackup: { at: string; ok: boolean; id: string | null; error: string | null } | null;
  /**
   * The repository's format as the agent found it when it first opened it (null until then): format 3
   * encrypted (with the key in use), format 3 made with --insecure-no-encryption, or format 2.
   */
  encryption: { format: 2 | 3; encrypted: boolean; keyId: string | null } | null;
  /** Where the repository's password comes from (a file's path, a command, a credential), never the password; null: none given. */
  passwordSource: string | null;
  /** Each replica (backup.replicas): the snapshots the agent backs up into it. Absent without replicas. */
  replicas?: BackupReplicaStatus[];
}

/**
 * A replica's snapshots as `status` shows them, from the agent's memory (no storage request). Every
 * snapshot the agent makes in the primary is backed up into each replica from its checkpoint, with the
 * primary's id, in the replica's own queue.
 *
 * `state`: `scanning` (after a start, finding which of the primary's newest snapshots it lacks: until
 * then `newestSnapshot` is unknown), `idle` (nothing waits), `copying` (a snapshot is being backed up
 * into it), `retrying` (its last attempt failed: `lastError`; tried again with backoff), `stopped`.
 */
export interface BackupReplicaStatus {
  /** Its URL without credentials. */
  name: string;
  state: 'scanning' | 'idle' | 'copying' | 'retrying' | 'stopped';
  /** The newest snapshot it holds as far as the agent knows (its listing at start, then what it backed up there); null: none known. */
  newestSnapshot: SnapshotRef | null;
  /** Snapshots of the primary waiting for it, oldest first (at most backup.replicaPendingSnapshots: older ones are dropped). */
  pending: SnapshotRef[];
  /** The snapshot being backed up into it now, or null. */
  copying: string | null;
  /** Snapshots given up since the agent started: more than the limit waited, or their checkpoint was gone. */
  dropped: number;
  /** When a snapshot was last backed up into it or found there (ISO 8601), or null. */
  lastSuccess: string | null;
  lastError: { at: string; error: string } | null;
}

/** Where the example node puts its socket, and so where the CLI looks first. */
export const DEFAULT_SOCKET_PATH = 'var/run/admin.sock';
/** Where the systemd unit puts it (RuntimeDirectory=node-admin). */
export const SYSTEM_SOCKET_PATH = '/run/node-admin/admin.sock';
