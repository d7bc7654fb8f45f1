import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { BackupRecord, CheckpointRecord, CreateBackupRequest, CreateCheckpointRequest, LogArchiveReplicaStatus, LogArchiveStatus } from '../../shared/api.js';
import { AdminError, ErrorCodes, toAdminError, type ErrorCode } from '../../shared/errors.js';
import { canonicalJson } from '../repository/format.js';
import type { Repository } from '../repository/repository.js';
import { newCheckpointId } from '../checkpoint/checkpoint-id.js';
import { dbSequence } from './db-sequence.js';
import { manifestSequence, proveContinuity, type Continuity, type Opening } from './continuity-proof.js';
import { LogFollower, type ReadBatch } from './log-follower.js';
import { ArchiveWorker } from './archive-worker-client.js';
import type { ArchiveWorkerOps } from './archive-worker-ops.js';
import type { WorkerClient } from '../worker/worker-client.js';
import { baseName, encodeSegment, markName, MAX_TAIL_BYTES, parseWalName, segmentName, WAL_PREFIX, wholePasses, type BaseRecord, type MarkRecord, type SegmentInfo, type WalObject } from './segment.js';
import { SegmentSpool, type SpooledSegment } from './segment-spool.js';
import { bodyBytes, SEGMENT_BUFFER_BYTES, SegmentBuilder } from './segment-builder.js';
import { alignedPool } from '../fs/aligned-pool.js';
import { batchLast } from './write-batch.js';
import { HOUR_MS, MAX_MERGED_BYTES, MERGE_BUFFER_BYTES, MINUTE_MS, listSegments, planMerges, runMerges } from './segment-merger.js';
import { timelineWindows } from './timeline-windows.js';

/** What the archiver needs of the agent that hosts it. */
export interface LogArchiveHost {
  createCheckpoint(req: CreateCheckpointRequest): Promise<CheckpointRecord>;
  createBackup(req: CreateBackupRequest): Promise<BackupRecord>;
  /** The repository (opened by the host; the archiver never closes it). */
  openRepository(): Promise<Repository>;
  /** The replicas (backup.replicas): each receives every segment, base and mark, on its own. */
  replicas?: LogArchiveReplicaHost[];
  /** A thread lent for the archive's work (the first of the host's crypto pool: archive-threads.ts); default: one of its own. */
  thread?: WorkerClient<ArchiveWorkerOps>;
}

/** What the archiver needs of a replica repository. */
export interface LogArchiveReplicaHost {
  /** What logs, status and metrics call it (its URL without credentials). */
  name: string;
  /** The replica repository (opened by the host, created there if there is none; never closed here). */
  openRepository(): Promise<Repository>;
  /**
   * Backs the checkpoint up into the replica as the backup `backupId` (the id it has in the primary:
   * the base records name it), from the checkpoint itself, never by reading the primary. Nothing to do
   * when the replica holds it already. NOT_FOUND when it will never be there: the checkpoint is gone,
   * or the snapshot was dropped for that replica (more waited than backup.replicaPendingSnapshots).
   */
  backupInto(checkpointId: string, backupId: string): Promise<void>;
}


export interface LogArchiveConfig {
  /** Ship new batches at most this often (ms). */
  intervalMs: number;
  /** Read the logs this often (ms): bounds how long an acknowledged write waits to be read. */
  pollMs: number;
  /** After a failed base (checkpoint or backup), try again after this long (ms). */
  retryMs: number;
  /** Most bytes of batches read and not yet stored the archiver holds; beyond, the timeline ends (`spool_full`). */
  spoolBytes: number;
  /** Segment merging's windows (segment-merger.ts), or null: no merging. */
  merge: { windowMs: number; largeWindowMs: number } | null;
  /** Where batches waiting for the storage go past spoolMemoryBytes; null: beside the database (`<db>.log-archive-spool`). */
  spoolDir: string | null;
  /** Batches waiting in memory beyond this go to the spool directory. */
  spoolMemoryBytes: number;
  /** The most bytes of segments a replica's outbox holds (memory and its spool directory); beyond, that replica's timeline ends. */
  replicaBytes: number;
}

export interface LogArchiveOptions {
  /** Ship new batches at most this often (default 1000 ms). */
  intervalMs?: number;
  /** Read the logs this often (default: a quarter of the interval, at most 250 ms). */
  pollMs?: number;
  /**
   * While the storage cannot be reached, batches read wait — the first MEMORY_BYTES in memory, the rest
   * on disk, in the spool directory, as finished segments — up to this many bytes in all (default
   * 256 MiB: about four minutes of 1 KiB writes at 1,000/s), and are stored when it returns; past it,
   * the timeline ends with a declared gap (reason `spool_full`) rather than grow without bound or drop
   * batches silently. The writes made while a base is taken wait here too: at least 1 MiB.
   */
  spoolBytes?: number;
  /**
   * Merging of aged segments (default on: finished minutes become one segment, finished hours as few
   * as MAX_MERGED_BYTES each allows). The windows can be shortened for tests; `false` turns merging off.
   */
  merge?: false | { windowMs?: number; largeWindowMs?: number };
  /** The spool's directory (default: beside the database directory, `<db>.log-archive-spool`). */
  spoolDir?: string;
  /** Batches waiting for the storage kept in memory before the rest go to the spool directory (default 16 MiB). */
  spoolMemoryBytes?: number;
  /**
   * Segments waiting for a replica (backup.replicas) — the first spoolMemoryBytes in memory, the rest in
   * the replica's own spool directory (`<spool>/replicas/<name>`), which a restart finds again — up to
   * this many bytes in all (default 512 MiB: about eight minutes of 1 KiB writes at 1,000/s); past it,
   * the replica's copy of the timeline ends there (its window stops; the primary's goes on) and it joins
   * again at the next timeline.
   */
  replicaBytes?: number;
}

export const DEFAULT_SPOOL_BYTES = 256 * 1024 * 1024;
const REPLICA_BYTES = 512 * 1024 * 1024;

export function parseLogArchiveOptions(o: LogArchiveOptions | boolean | null | undefined): LogArchiveConfig | null {
  if (o === undefined || o === null || o === false) return null;
  const opts = o === true ? {} : o;
  const bad = (m: string) => new AdminError(ErrorCodes.INVALID_ARGUMENT, m);
  if (typeof opts !== 'object') throw bad('backup.logArchive must be an object, true or null');
  const intervalMs = opts.intervalMs ?? 1000;
  if (!Number.isFinite(intervalMs) || intervalMs < 10 || intervalMs > 3_600_000) throw bad(`backup.logArchive.intervalMs must be from 10 ms to 1 h, got ${String(opts.intervalMs)}`);
  const pollMs = opts.pollMs ?? Math.min(250, Math.max(10, Math.floor(intervalMs / 4)));
  if (!Number.isFinite(pollMs) || pollMs < 5 || pollMs > intervalMs) throw bad(`backup.logArchive.pollMs must be from 5 ms to the interval, got ${String(opts.pollMs)}`);
  const spoolBytes = opts.spoolBytes ?? DEFAULT_SPOOL_BYTES;
  // Below 1 MiB, the writes made while a base is being backed up could overflow it every time: no timeline would ever start.
  if (!Number.isSafeInteger(spoolBytes) || spoolBytes < 1024 * 1024) throw bad(`backup.logArchive.spoolBytes must be a whole number of bytes, at least 1 MiB, got ${String(opts.spoolBytes)}`);
  let merge: LogArchiveConfig['merge'] = null;
  if (opts.merge !== false) {
    const m = opts.merge ?? {};
    if (typeof m !== 'object' || m === null) throw bad('backup.logArchive.merge must be an object or false');
    const windowMs = m.windowMs ?? MINUTE_MS;
    const largeWindowMs = m.largeWindowMs ?? HOUR_MS;
    if (!Number.isSafeInteger(windowMs) || windowMs < 100) throw bad(`backup.logArchive.merge.windowMs must be at least 100 ms, got ${String(m.windowMs)}`);
    if (!Number.isSafeInteger(largeWindowMs) || largeWindowMs <= windowMs) throw bad(`backup.logArchive.merge.largeWindowMs must be more than windowMs, got ${String(m.largeWindowMs)}`);
    merge = { windowMs, largeWindowMs };
  }
  if (opts.spoolDir !== undefined && (typeof opts.spoolDir !== 'string' || opts.spoolDir === '')) throw bad('backup.logArchive.spoolDir must be a directory path');
  const spoolMemoryBytes = opts.spoolMemoryBytes ?? MEMORY_BYTES;
  if (!Number.isSafeInteger(spoolMemoryBytes) || spoolMemoryBytes < 64 * 1024) throw bad(`backup.logArchive.spoolMemoryBytes must be a whole number of bytes, at least 64 KiB, got ${String(opts.spoolMemoryBytes)}`);
  const replicaBytes = opts.replicaBytes ?? REPLICA_BYTES;
  if (!Number.isSafeInteger(replicaBytes) || replicaBytes < 64 * 1024) throw bad(`backup.logArchive.replicaBytes must be a whole number of bytes, at least 64 KiB, got ${String(opts.replicaBytes)}`);
  return { intervalMs, pollMs, retryMs: Math.max(1000, intervalMs), spoolBytes, merge, spoolDir: opts.spoolDir ?? null, spoolMemoryBytes, replicaBytes };
}

/**
 * Why a timeline ended (the `reason` label of node_admin_log_archive_timeline_breaks_total): `start`
 * an agent start that could not prove the database still the archived state (continuity-proof.ts: a
 * first start, a restore, a rollback, writes lost or never archived); `gap` a batch after a jump in sequence
 * numbers (a log gone before it could be opened); `fork` a batch whose sequence number goes back (the
 * database reopened on another history); `damaged` a log's bytes (checksum, format, torn record);
 * `replaced` the database directory replaced under the agent; `overlap` a batch straddling the base's
 * sequence; `read_error` reading the logs failed; `spool_full` the storage stayed unreachable (or too
 * slow) until more than `spoolBytes` of batches waited.
 */
export type BreakReason = 'start' | 'gap' | 'fork' | 'damaged' | 'replaced' | 'overlap' | 'read_error' | 'spool_full';

/**
 * What the archiver tells its observer (the agent's metrics) as it happens, so that a scrape reads
 * counters and never asks storage. Called synchronously; must not throw.
 */
export interface LogArchiveObserver {
  /** A segment of `bytes` bytes was stored at `at` (ms). */
  shipped(bytes: number, at: number): void;
  /** Storing a segment or a base record failed with this code (retried at the next interval). */
  shipFailed(code: ErrorCode): void;
  /** A timeline ended (or, `start`, this agent run begins a new one). */
  timelineBreak(reason: BreakReason): void;
}

/** Retries of a failed base back off up to this: after an outage, the new timeline starts at most this late. */
const MAX_BASE_RETRY_MS = 30_000;
/**
 * Once this much waits, a segment is shipped without waiting for the interval: a burst of writes then
 * makes several segments of about this size (memory and object size bounded) instead of filling the
 * spool between two intervals.
 */
const EARLY_SHIP_BYTES = 8 * 1024 * 1024;
/**
 * A segment holds whole passes up to about this much (more only if one pass is larger): what waited
 * through a slow upload goes up as several segments, so neither the host's memory (a segment is encoded
 * in one buffer) nor a restore's (it holds one segment at a time) grows with the backlog.
 */
const SEGMENT_BYTES = EARLY_SHIP_BYTES;
/** Merges carried out per run at most (each reads and writes up to 8 MiB stored, MAX_MERGED_RAW_BYTES of log). */
const MERGES_PER_RUN = 8;
/** Attempts at the continuity proof at start that fail on the storage before a new timeline is begun instead. */
const RESUME_ATTEMPTS = 3;
/** Reads of the MANIFEST at the start before the opening is given up (openingSequence). */
const OPENING_READS = 5;
/** Batches waiting in memory beyond this go to the spool on disk (whole passes, in segments of about EARLY_SHIP_BYTES). */
const MEMORY_BYTES = 16 * 1024 * 1024;
/** A pass of the follower hands over about this much at most (a burst is read, and shipped, in pieces). */
const PASS_BYTES = 4 * 1024 * 1024;
/** Failed shipments back off up to this between attempts (the first retry comes at the next interval). */
const SEND_BACKOFF_MS = 5_000;
/** The replicas' spool directories are in this one, inside the spool directory (which holds only `.seg` files of its own). */
const REPLICA_SPOOLS = 'replicas';

/**
 * A replica's spool directory's name: readable (its URL, which holds no credentials, made safe for a
 * file name) and unique (a digest of the whole URL), so that a restart finds the same one again.
 */
export function replicaSpoolName(name: string): string {
  const readable = name.replace(/^[a-z0-9+]+:\/\//i, '').replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+/, '').slice(0, 64);
  return `${readable}-${createHash('sha256').update(name).digest('hex').slice(0, 12)}`;
}

/**
 * When a sender (the primary's, a replica's) may try again after its `failures`-th failure in a row:
 * doubling from one interval up to SEND_BACKOFF_MS; half an interval early, so that the tick that
 * comes at the interval sends.
 */
function sendAfterFailure(failures: number, intervalMs: number): number {
  return Date.now() + Math.min(SEND_BACKOFF_MS, intervalMs * 2 ** failures) - intervalMs / 2;
}

/**
 * A finished segment: cut once from the batches read (its bounds never change, whatever the storage
 * does), then offered to each destination's outbox. Its batches are shared by every outbox that holds it.
 */
interface CutSegment {
  info: SegmentInfo;
  batches: ReadBatch[];
  /** The payload bytes of its batches. */
  bytes: number;
}

/** A segment in a destination's outbox: in memory, or in that destination's spool on disk (the primary's while its storage is away; a replica's past spoolMemoryBytes). */
interface OutboxSegment {
  info: SegmentInfo;
  /** Null once the segment is in the spool (the file then holds it). */
  batches: ReadBatch[] | null;
  bytes: number;
  spooled: SpooledSegment | null;
}

/**
 * What one destination has still to store of a timeline, oldest first, and how far it has got: its
 * cursor. The segments are stored strictly in order; the base records and marks that name them are
 * stored once the segments they count on are.
 */
interface Outbox {
  segments: OutboxSegment[];
  /** Payload bytes of the segments held in memory, and file bytes of those in the spool. */
  memoryBytes: number;
  diskBytes: number;
  /** The last sequence stored in a segment at this destination (the base's before the first). */
  shipped: number;
  /** Bases not stored yet: each waits for the segments covering everything read before it. */
  waitingBases: Omit<BaseRecord, 'version' | 'to' | 'last'>[];
  /** Marks not stored yet (a resume's, while the storage fails): stored with the next shipment. */
  waitingMarks: MarkRecord[];
  /** The timeline ended here (a break, or a replica's outbox overflowing): what it holds is offered once, then let go. */
  closed: boolean;
  /** A base record or a mark of the timeline is stored at this destination: its window is live. */
  baseStored: boolean;
  /**
   * A replica's outbox of a timeline that goes on after a restart: whether the replica holds it whole up
   * to the resume point is checked (a listing) before anything is stored there.
   */
  unverified: boolean;
}

function newOutbox(shipped: number): Outbox {
  return { segments: [], memoryBytes: 0, diskBytes: 0, shipped, waitingBases: [], waitingMarks: [], closed: false, baseStored: false, unverified: false };
}

/** A destination's spool directory, and the writes of its outbox's segments there: one run at a time. */
interface Spill {
  spool: SegmentSpool;
  chain: Promise<void>;
  /** A run started beside the sender (spillBeside) is in flight. */
  running: boolean;
}

function newSpill(spool: SegmentSpool): Spill {
  return { spool, chain: Promise.resolve(), running: false };
}

/**
 * Segment merging at one destination: the run in flight, when the last began, whether a segment was
 * stored since, and the body bytes of the segments it knows (encoded or read here; the planner's
 * measure of what a merge would hold: segment-merger.ts). Only the current timeline's listed segments
 * are kept there.
 */
interface MergeState {
  run: Promise<void> | null;
  lastAt: number;
  since: boolean;
  bodies: Map<string, number>;
}

function newMergeState(): MergeState {
  return { run: null, lastAt: 0, since: false, bodies: new Map() };
}

/** A replica: its own queue of requests, cursor (per timeline, in Timeline.replicas), retries and backoff. */
interface Replica {
  host: LogArchiveReplicaHost;
  /** Its requests, one at a time: never the primary's queue, nor another replica's. */
  work: Promise<void>;
  queued: boolean;
  failures: number;
  sendAfter: number;
  failing: boolean;
  /** Every batch read at or before this time (ms) is stored at the replica (with a base there); null: never yet. */
  storedUntil: number | null;
  lastSuccessAt: number | null;
  lastError: { at: string; error: string } | null;
  /** Backups of bases into the replica, one at a time, beside its segments; how many wait or run. */
  baseWork: Promise<void>;
  baseBackups: number;
  merge: MergeState;
  /** Its spool directory (what waits for it past spoolMemoryBytes, and what a stop could not store there) and the spills into it. */
  spill: Spill;
  /**
   * The files a previous run left in its spool (listed at start, before anything of this run is
   * spilled): stored at the replica, oldest first, before anything else; empty once they are.
   */
  leftovers: { file: string; info: SegmentInfo | null }[];
}

interface Timeline {
  id: string;
  /** The first base's last sequence: batches up to it are not archived. */
  sequence: number;
  /**
   * The cutter's cursor: every batch read by this time (ms) is in a segment cut already; the next
   * segment covers batches read after it.
   */
  segmentFrom: number;
  /** Checkpoints taken while this timeline runs, and when each was complete: candidate bases. */
  candidates: Map<string, number>;
  /** The primary repository's outbox and cursor. */
  primary: Outbox;
  /** Each replica's outbox and cursor. */
  replicas: Map<Replica, Outbox>;
}

/**
 * Continuous archiving of the database's write-ahead log into the backup repository.
 *
 * Contract: from start() to stop() it follows the live logs (LogFollower), and ships the batches it read
 * as segments of the current timeline, at most once per interval and only when something new was read
 * (an idle node costs no storage request). A timeline starts with a base — a checkpoint and backup it
 * takes itself, whose last sequence it reads from the checkpoint — and lasts while every batch follows
 * the previous one; on any break (a jump in sequence numbers, a damaged log) it ends, and a new timeline
 * with a new base begins. An agent start goes on with the archive's newest timeline when the database is
 * provably its state (continuity-proof.ts: the opening is taken in start(), before the host writes), else
 * begins a new one; a clean stop stores a mark that the timeline is complete up to then. Segments are cut
 * once, at each interval, whatever the storage does, and handed to each destination's outbox (the
 * primary's: memory, then the spool directory, up to spoolBytes; beyond, the timeline ends: `spool_full`;
 * each replica's: memory, then its own spool directory, up to replicaBytes; beyond, only that replica's
 * copy ends); each destination's
 * sender stores its outbox in order with its own retries and backoff, then the base records and marks
 * its segments reach. Backups the agent makes of checkpoints it took during a timeline
 * become more bases of it. What it holds is shown by status() (no storage request) and told to its
 * observer as it happens (metrics). Layout and reasoning: docs/log-archive-design.md.
 */
export class LogArchiver {
  /** Checksums and digests, off the host's event loop. */
  private readonly worker: ArchiveWorker;
  private follower: LogFollower | null = null;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private wake: (() => void) | null = null;
  /** Storage work and timeline changes, one at a time. */
  private work: Promise<void> = Promise.resolve();
  private shipTimer: NodeJS.Timeout | null = null;

  /** Batches read and not yet cut into a segment (or, before the base, not yet known to be needed), in order. */
  private pending: ReadBatch[] = [];
  /** The payload bytes in `pending`: with the outbox's, bounded by the config's spoolBytes. */
  private pendingBytes = 0;
  /** The primary's shipment queued, not yet begun. */
  private shipQueued = false;
  /** Failed shipments to the primary in a row, and when the next may start (backoff). */
  private sendFailures = 0;
  private sendAfter = 0;
  private readonly diskSpool: SegmentSpool;
  /** The primary's spills into diskSpool. */
  private readonly primarySpill: Spill;
  /** Segment merging: the run in flight (beside shipping, never in its queue), when the last began, whether a segment was stored since. */
  private readonly merge: MergeState = newMergeState();
  private readonly replicas: Replica[];
  /** The last sequence number of the stream read since the last break, and where the stream began. */
  private lastSeq: number | null = null;
  private streamFirst: number | null = null;
  /** When the last pass ended: everything read by then is in `pending` or shipped. */
  private lastPassEnd = 0;
  /** Bumped at every break: a base begun before it is discarded. */
  private generation = 0;
  private timeline: Timeline | null = null;
  private baseRunning = false;
  private baseRetry: NodeJS.Timeout | null = null;
  private baseFailures = 0;
  /** A checkpoint taken for a base whose backup has not succeeded yet. */
  private baseCheckpoint: { generation: number; id: string; sequence: number; completedAt: number } | null = null;
  private startedAt = 0;
  /** The database as start() found it, until the continuity proof has decided (null: a new timeline). */
  private opening: Opening | null = null;
  private resumeFailures = 0;
  /** The proof in flight: a stop lets it decide first, so that what was read meanwhile is shipped if the timeline goes on. */
  private resuming: Promise<boolean> | null = null;

  // ---- what status and metrics show (kept as it happens: a status asks no storage) ----
  private stopped = false;
  /** Storage puts in flight (a segment, a base record). */
  private shipping = 0;
  /** The last storage attempt failed (until one succeeds). */
  private shipFailing = false;
  private timelineStartedAt = 0;
  /** The current timeline has stored something (its first base record at least). */
  private timelineStored = false;
  private everTimeline = false;
  /** Every batch read at or before this time (ms) was stored, or is in a base; null: never yet. */
  private storedUntil: number | null = null;
  private lastShipped: LogArchiveStatus['lastShipped'] = null;
  private shippedSegments = 0;
  private shippedBytes = 0;
  private breaks = 0;
  private lastBreak: LogArchiveStatus['lastBreak'] = null;
  private lastError: LogArchiveStatus['lastError'] = null;

  constructor(
    private readonly dbPath: string,
    private readonly cfg: LogArchiveConfig,
    private readonly host: LogArchiveHost,
    private readonly log: Logger,
    private readonly observer: LogArchiveObserver | null = null,
  ) {
    this.worker = new ArchiveWorker(host.thread ?? null);
    const spoolDir = cfg.spoolDir ?? path.join(path.dirname(dbPath), `${path.basename(dbPath)}.log-archive-spool`);
    this.replicas = (host.replicas ?? []).map((h) => ({
      host: h,
      work: Promise.resolve(),
      queued: false,
      failures: 0,
      sendAfter: 0,
      failing: false,
      storedUntil: null,
      lastSuccessAt: null,
      lastError: null,
      baseWork: Promise.resolve(),
      baseBackups: 0,
      merge: newMergeState(),
      spill: newSpill(new SegmentSpool(path.join(spoolDir, REPLICA_SPOOLS, replicaSpoolName(h.name)), this.worker.sha256)),
      leftovers: [],
    }));
    this.diskSpool = new SegmentSpool(spoolDir, this.worker.sha256);
    this.primarySpill = newSpill(this.diskSpool);
  }

  /**
   * Opens the logs that exist now (so that nothing written from here on is missed), takes the opening
   * (the database's MANIFEST sequence and a first read of its logs: the continuity proof's local half,
   * which must see the database before the host writes to it), then runs. The proof itself, against the
   * repository, comes after (tryResume).
   */
  async start(): Promise<void> {
    this.follower = new LogFollower(this.dbPath, this.worker);
    let sequence: number | null = null;
    try {
      await this.follower.open();
      // After the logs are open: a write from here on is in the first pass, so a quiet pass means the
      // database held exactly this sequence when the pass ended.
      sequence = await this.openingSequence();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new AdminError(ErrorCodes.NOT_FOUND, `the database directory ${this.dbPath} does not exist: open the database before starting an agent that archives its log`);
      }
      throw err;
    }
    // Before anything of this run can be spilled there: what a previous run left for each replica.
    for (const r of this.replicas) r.leftovers = await r.spill.spool.list();
    await this.warnForgottenReplicaSpools();
    this.startedAt = Date.now();
    this.lastPassEnd = this.startedAt;
    this.running = true;
    const first = await this.follower.pass(PASS_BYTES);
    this.opening = sequence === null ? null : { sequence, at: first.readAt, quiet: first.batches.length === 0 && !first.more && first.problem === null };
    this.take(first.batches, first.problem, first.readAt, first.problemKind);
    this.loop = this.readLoop();
    this.shipTimer = setInterval(() => this.tick(), this.cfg.intervalMs);
    this.shipTimer.unref();
    if (this.opening === null) {
      this.observer?.timelineBreak('start');
      void this.enqueue(() => this.shipLeftovers()).catch(() => {}); // logged there
    }
    this.startBase();
    this.log.info({ intervalMs: this.cfg.intervalMs, pollMs: this.cfg.pollMs, spool: this.diskSpool.dir }, 'log archiver started');
  }

  /**
   * The MANIFEST's last sequence at the start, or null (then a new timeline begins, which is always
   * right). Read again a few times before giving up, and logged when it does: CURRENT and the MANIFEST it
   * names are two reads, and a MANIFEST replaced between them (a new one named, the old deleted) fails
   * the second. (A record half-appended does not: replayManifest stops at the last complete one.)
   */
  private async openingSequence(): Promise<number | null> {
    let failure: unknown = null;
    for (let attempt = 0; attempt < OPENING_READS; attempt++) {
      try {
        return await manifestSequence(this.dbPath);
      } catch (err) {
        failure = err;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    this.log.info({ err: toAdminError(failure).message }, "log archive: the database's MANIFEST could not be read at the start; a new timeline begins");
    return null;
  }

  /**
   * The continuity proof (continuity-proof.ts), the first thing the base's loop does after a start: the
   * segments a previous run spooled are stored first (they may be its timeline's end), then the archive's
   * newest timeline is compared with the opening. True when the timeline goes on (no base: its resume
   * mark is stored with the next shipment); false when a new timeline begins. A storage failure throws
   * (retried like a base), RESUME_ATTEMPTS times, and then a new timeline begins.
   */
  private async tryResume(generation: number, atStop = false): Promise<boolean> {
    const opening = this.opening!;
    let verdict: Continuity;
    try {
      await this.enqueue(() => this.shipLeftovers());
      if ((await this.diskSpool.list()).length > 0) throw new AdminError(ErrorCodes.STORAGE_UNAVAILABLE, 'segments spooled before the restart could not be stored yet');
      verdict = await proveContinuity(await this.host.openRepository(), this.dbPath, opening);
    } catch (err) {
      if (++this.resumeFailures < RESUME_ATTEMPTS) throw err;
      verdict = { continue: false, reason: `the proof could not be made: ${toAdminError(err).message}` };
    }
    let resumed = false;
    await this.enqueue(async () => {
      if (this.opening !== opening || generation !== this.generation) return; // a break meanwhile: a new timeline
      this.opening = null;
      if (verdict.continue && this.streamFirst !== null && this.streamFirst !== verdict.sequence + 1) {
        verdict = { continue: false, reason: `the logs read since the start begin at sequence ${this.streamFirst}, not ${verdict.sequence + 1}` };
      }
      if (!verdict.continue) {
        // At the stop no base follows: what this run read has no timeline to go into.
        if (atStop) this.log.warn({ reason: verdict.reason }, 'log archive: the database cannot be proven the archived state; what this run read is not archived (the next start takes a new base)');
        else this.log.info({ reason: verdict.reason }, 'log archive: the database cannot be proven the archived state; a new timeline begins with a new base');
        this.observer?.timelineBreak('start');
        return;
      }
      const { timeline: id, sequence, end, check } = verdict;
      const mark: MarkRecord = { version: 1, kind: 'resume', timeline: id, last: sequence, at: opening.at, from: end, proof: check };
      this.timeline = {
        id,
        sequence,
        segmentFrom: end,
        candidates: new Map(),
        primary: { ...newOutbox(sequence), waitingMarks: [mark] },
        replicas: new Map(this.replicas.map((r) => [r, { ...newOutbox(sequence), waitingMarks: [mark], unverified: true }])),
      };
      this.timelineStartedAt = Date.now();
      this.timelineStored = false;
      this.everTimeline = true;
      this.baseFailures = 0;
      resumed = true;
      this.log.info({ timeline: id, sequence, downSince: new Date(end).toISOString(), proof: check }, 'log archive: the database is the archived state; the timeline goes on');
      await this.ship().catch((err: unknown) => this.log.warn({ timeline: id, err: toAdminError(err).message }, 'log archive: upload failed; retrying at the next interval'));
    });
    return resumed;
  }

  /**
   * Segments a previous run wrote to the spool and could not store (the storage was away when it
   * stopped or crashed): they end that run's timeline, in order, and are stored now, oldest first. One
   * that cannot be stored stays for the next start (logged); a damaged one is deleted (a gap, declared
   * by the windows).
   */
  private async shipLeftovers(): Promise<void> {
    for (const { file, info } of await this.diskSpool.list()) {
      try {
        if (!info) throw new AdminError(ErrorCodes.CORRUPT, `${path.basename(file)} is not a spooled segment`);
        await this.store(segmentName(info), await this.diskSpool.read({ info, file }));
        this.log.info({ timeline: info.timeline, first: info.first, last: info.last }, 'log archive: a segment spooled before the restart stored');
      } catch (err) {
        if (toAdminError(err).code !== ErrorCodes.CORRUPT) {
          this.log.warn({ file, err: toAdminError(err).message }, 'log archive: a segment spooled before the restart could not be stored; trying again at the next start');
          return;
        }
        this.log.error({ file, err: toAdminError(err).message }, 'log archive: a spooled segment is damaged; deleted (its batches are a gap in that timeline)');
      }
      await this.diskSpool.remove({ file });
    }
  }

  /**
   * Segments a previous run left for a replica (its spool directory, listed at start): stored there
   * first, oldest first, in the replica's queue, before anything else of this run (they may be the end
   * of the timeline that goes on, which the replica must hold before its copy can go on). Throws on a
   * storage failure (the replica's backoff, then again); a damaged file is deleted (a gap in that
   * replica's copy, declared by its windows).
   */
  private async shipReplicaLeftovers(r: Replica): Promise<void> {
    while (r.leftovers.length > 0) {
      const { file, info } = r.leftovers[0]!;
      try {
        if (!info) throw new AdminError(ErrorCodes.CORRUPT, `${path.basename(file)} is not a spooled segment`);
        await this.storeAt(r, segmentName(info), await r.spill.spool.read({ info, file }));
        this.log.info({ timeline: info.timeline, first: info.first, last: info.last, replica: r.host.name }, 'log archive: a segment spooled for a replica before the restart stored there');
      } catch (err) {
        if (toAdminError(err).code !== ErrorCodes.CORRUPT) throw err;
        this.log.error({ file, replica: r.host.name, err: toAdminError(err).message }, "log archive: a replica's spooled segment is damaged; deleted (its batches are a gap in that replica's copy)");
      }
      await r.spill.spool.remove({ file });
      r.leftovers.shift();
    }
  }

  /** A replica spool directory with segments that no configured replica owns (a replica removed from the options) is said once, at start: nothing deletes it. */
  private async warnForgottenReplicaSpools(): Promise<void> {
    const root = path.join(this.diskSpool.dir, REPLICA_SPOOLS);
    const known = new Set(this.replicas.map((r) => path.basename(r.spill.spool.dir)));
    let names: string[];
    try {
      names = await fs.promises.readdir(root);
    } catch {
      return; // none yet
    }
    for (const n of names) {
      if (known.has(n)) continue;
      const segments = (await new SegmentSpool(path.join(root, n)).list().catch(() => [])).length;
      if (segments > 0) this.log.warn({ dir: path.join(root, n), segments }, 'log archive: segments spooled for a replica that is no longer configured; kept (delete the directory if that replica is gone for good)');
    }
  }

  /** A last read and upload, then stops following. Idempotent. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.shipTimer) clearInterval(this.shipTimer);
    if (this.baseRetry) clearTimeout(this.baseRetry);
    this.wake?.();
    await this.loop;
    await this.resuming?.catch(() => {});
    // A proof that met a storage failure waits for its retry (up to MAX_BASE_RETRY_MS): without one more
    // attempt here, what this run read has no timeline, is neither shipped nor spooled, and the next
    // start cannot prove continuity either (LevelDB folds these logs into a table when it opens).
    if (this.opening !== null && this.timeline === null && !this.baseRunning) {
      await this.tryResume(this.generation, true).catch((err: unknown) => this.log.warn({ err: toAdminError(err).message }, 'log archive: the continuity proof failed again at the stop; what this run read is not archived'));
    }
    try {
      const t = this.timeline;
      if (t) this.cut(t);
      await this.enqueue(() => this.ship()).catch(async (err: unknown) => {
        // The storage is away: what was read goes to the spool, stored by the next start.
        this.log.warn({ err: toAdminError(err).message }, 'log archive: the last shipment failed; what was read waits in the spool for the next start');
        if (t) await this.spill(t, null, 0);
      });
      await this.enqueue(() => this.markStop()).catch((err: unknown) => this.log.warn({ err: toAdminError(err).message }, 'log archive: the stop could not be recorded'));
      await this.work;
      // Each replica's last attempt, side by side (one that is down answers with its own failure).
      await Promise.all(this.replicas.map((r) => this.queueReplica(r).then(() => this.enqueueReplica(r, () => this.markStop(r)))));
      // What a replica could not store waits in its spool: the next start stores it there first.
      if (t) {
        await Promise.all(
          this.replicas.map((r) => this.spill(t, r, 0).catch((err: unknown) => this.log.error({ replica: r.host.name, err: toAdminError(err).message }, "log archive: writing a replica's outbox to its spool at the stop failed; its copy of the timeline ends there"))),
        );
      }
      await this.merge.run;
      await Promise.all(this.replicas.map((r) => r.merge.run));
    } finally {
      await this.follower?.close();
      await this.worker.close();
      this.stopped = true;
    }
    this.log.info({ timeline: this.timeline?.id ?? null }, 'log archiver stopped');
  }

  /**
   * At a clean stop with everything read stored: a mark that the timeline is complete up to the last
   * pass, so that the moments until the next start (which may go on with the timeline) restore too.
   */
  private async markStop(dest: Replica | null = null): Promise<void> {
    const t = this.timeline;
    const box = dest === null ? t?.primary : t?.replicas.get(dest);
    if (!t || !box || box.closed || !box.baseStored || this.pending.length > 0 || box.segments.length > 0 || box.waitingBases.length > 0 || box.waitingMarks.length > 0) return;
    if (dest !== null && dest.leftovers.length > 0) return;
    if ((this.lastSeq !== null && this.lastSeq > box.shipped) || t.segmentFrom < this.lastPassEnd) return;
    const mark: MarkRecord = { version: 1, kind: 'stop', timeline: t.id, last: box.shipped, at: this.lastPassEnd };
    await this.storeAt(dest, markName(mark), Buffer.from(canonicalJson(mark)));
    this.log.info({ timeline: t.id, sequence: box.shipped, ...(dest ? { replica: dest.host.name } : {}) }, 'log archive: stop recorded');
  }

  /** The agent took a checkpoint: during a timeline, a backup of it can become a base. */
  checkpointCreated(record: CheckpointRecord, completedAt: number): void {
    this.timeline?.candidates.set(record.id, completedAt);
  }

  /** The agent made a backup: if its checkpoint was taken during the current timeline, it becomes a base. */
  backupCreated(record: BackupRecord, checkpointPath: string): Promise<void> {
    const timeline = this.timeline;
    const completedAt = timeline?.candidates.get(record.checkpoint.id);
    if (!timeline || completedAt === undefined || !this.running) return Promise.resolve();
    return this.enqueue(async () => {
      if (this.timeline !== timeline) return;
      const { sequence } = await dbSequence(checkpointPath);
      if (sequence < timeline.sequence) return;
      await this.registerBase(timeline, record.id, record.checkpoint.id, sequence, completedAt);
    }).catch((err: unknown) => this.log.warn({ backup: record.id, err: toAdminError(err).message }, 'log archive: registering a base failed'));
  }

  /**
   * How long the oldest write not yet stored has waited (s): 0 right after a shipment; on an idle node
   * the time since the last pass (under the poll interval); growing while storage fails or no timeline
   * runs (starting, broken: writes since then are not restorable yet).
   */
  lagSeconds(now = Date.now()): number {
    const upToDate = this.timeline !== null && this.timelineStored && this.pending.length === 0 && this.timeline.primary.segments.length === 0;
    const since = upToDate ? this.lastPassEnd : (this.storedUntil ?? this.startedAt);
    return Math.max(0, now - since) / 1000;
  }

  /** Bytes not yet stored: of the batches read and waiting, and of the live logs not read yet (one fstat per open log). */
  async lagBytes(): Promise<{ batches: number; bytes: number; unreadBytes: number }> {
    const unreadBytes = this.follower && !this.stopped ? this.follower.unreadBytes() : 0;
    const box = this.timeline?.primary;
    const batches = this.pending.length + (box?.segments.reduce((n, s) => n + (s.batches?.length ?? 0), 0) ?? 0);
    return { batches, bytes: this.pendingBytes + (box ? box.memoryBytes + box.diskBytes : 0), unreadBytes };
  }

  /** What `status` shows (shared/api.ts LogArchiveStatus); no storage request. */
  async status(): Promise<LogArchiveStatus> {
    const now = Date.now();
    const lag = await this.lagBytes();
    const t = this.timeline;
    const state: LogArchiveStatus['state'] = this.stopped
      ? 'stopped'
      : this.shipFailing || this.baseRetry !== null
        ? 'retrying'
        : this.shipping > 0
          ? 'shipping'
          : t !== null
            ? 'following'
            : this.everTimeline
              ? 'broken'
              : 'starting';
    return {
      state,
      intervalMs: this.cfg.intervalMs,
      timeline: t ? { id: t.id, sequence: t.sequence, startedAt: new Date(this.timelineStartedAt).toISOString() } : null,
      lag: { seconds: this.lagSeconds(now), ...lag },
      lastShipped: this.lastShipped,
      shippedSegments: this.shippedSegments,
      shippedBytes: this.shippedBytes,
      breaks: this.breaks,
      lastBreak: this.lastBreak,
      lastError: this.lastError,
      ...(this.replicas.length > 0 ? { replicas: this.replicaStatus(now) } : {}),
    };
  }

  private failed(err: unknown): void {
    const e = toAdminError(err);
    this.lastError = { at: new Date().toISOString(), error: `${e.code}: ${e.message}` };
  }

  /** A storage attempt failed: remembered for status, counted for metrics. */
  private storeFailed(err: unknown): void {
    this.shipFailing = true;
    this.failed(err);
    this.observer?.shipFailed(toAdminError(err).code);
  }

  /** Stores one object, counted as a shipment in flight, its failure remembered. */
  private async store(name: string, data: Buffer): Promise<void> {
    this.shipping++;
    try {
      const repo = await this.host.openRepository();
      await repo.putObject(name, data);
      this.shipFailing = false;
    } catch (err) {
      this.storeFailed(err);
      throw err;
    } finally {
      this.shipping--;
    }
  }

  /** The current timeline and its first sequence (tests and status). */
  get current(): { id: string; sequence: number } | null {
    return this.timeline ? { id: this.timeline.id, sequence: this.timeline.sequence } : null;
  }

  private enqueue(fn: () => Promise<void>): Promise<void> {
    const next = this.work.then(fn);
    this.work = next.catch(() => {});
    return next;
  }

  private async readLoop(): Promise<void> {
    while (this.running) {
      let more = false;
      try {
        const pass = await this.follower!.pass(PASS_BYTES);
        this.take(pass.batches, pass.problem, pass.readAt, pass.problemKind);
        more = pass.more;
      } catch (err) {
        this.log.error({ err: toAdminError(err).message }, 'log archive: reading the logs failed');
        this.failed(err);
        this.break('read_error', 'reading the logs failed');
      }
      if (!this.running) break;
      if (more) {
        await new Promise<void>((resolve) => setImmediate(resolve)); // the node's own work first
        continue;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.cfg.pollMs);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
    // The last passes: what was written up to stop is shipped by stop(). In passes of PASS_BYTES, as
    // always (no segment has to hold one larger pass), up to what the logs held now: a node that keeps
    // writing does not keep the stop going (the next start's base covers the rest).
    try {
      let budget = this.follower!.unreadBytes() + PASS_BYTES;
      for (let more = true; more && budget > 0; ) {
        const pass = await this.follower!.pass(PASS_BYTES);
        this.take(pass.batches, pass.problem, pass.readAt, pass.problemKind);
        budget -= Math.max(1, pass.bytesRead);
        more = pass.more && pass.problem === null;
      }
    } catch {
      // stop() ships what was read before
    }
  }

  /** Appends a pass's batches to the stream, ending the timeline where they do not follow on. */
  private take(batches: ReadBatch[], problem: string | null, readAt: number, problemKind: 'damaged' | 'replaced' | null = null): void {
    for (let i = 0; i < batches.length; i++) {
      const b = batches[i]!;
      const t = this.timeline;
      const follows = this.lastSeq === null ? t === null || b.seq <= t.sequence + 1 : b.seq === this.lastSeq + 1;
      if (!follows) {
        // This pass is not claimed by the old timeline (its batches before the break are dropped); the
        // batches from here on start a new stream.
        const expected = this.lastSeq !== null ? this.lastSeq + 1 : t!.sequence + 1;
        this.break(b.seq < expected ? 'fork' : 'gap', `sequence ${b.seq} does not follow ${this.lastSeq ?? (t ? t.sequence : '?')}`);
        this.setPending([]);
        for (const rest of batches.slice(i)) this.append(rest);
        this.lastPassEnd = readAt;
        this.checkSpool();
        return;
      }
      this.append(b);
    }
    if (problem !== null) {
      this.break(problemKind ?? 'damaged', problem);
      this.setPending([]);
      this.lastSeq = null;
      this.streamFirst = null;
    }
    this.lastPassEnd = readAt;
    this.checkSpool();
    this.shipEarly();
  }

  /**
   * Each interval: what was read since the last cut becomes finished segments in the outbox (whatever
   * the storage does: the segments' bounds never depend on an outage), then the primary's sender is
   * woken unless it is backing off.
   */
  private tick(): void {
    const t = this.timeline;
    if (t) this.cut(t);
    const now = Date.now();
    if (now >= this.sendAfter) this.queueShip();
    for (const r of this.replicas) if (now >= r.sendAfter) void this.queueReplica(r);
    this.checkSpool();
  }

  /**
   * Cuts `pending` into finished segments of the timeline (whole passes, about SEGMENT_BYTES each) and
   * puts them in its outbox; the last covers up to `to` (the last pass's end). With nothing pending, the
   * cursor moves on to `to`: every batch read by then is in a segment cut already.
   */
  private cut(timeline: Timeline, to = this.lastPassEnd): void {
    let rest = this.pending;
    while (rest.length > 0) {
      const chunk = wholePasses(rest, SEGMENT_BYTES);
      const lastRead = chunk.at(-1)!.readAt;
      // Not the last: it covers up to its own last pass (the next pass's batches are in the next one).
      const end = chunk.length === rest.length ? Math.max(to, lastRead) : lastRead;
      const info: SegmentInfo = { timeline: timeline.id, first: chunk[0]!.seq, last: batchLast(chunk.at(-1)!), from: Math.min(timeline.segmentFrom, chunk[0]!.readAt), to: end };
      timeline.segmentFrom = Math.max(timeline.segmentFrom, end);
      this.offer(timeline, { info, batches: chunk, bytes: chunk.reduce((n, b) => n + b.payload.length, 0) });
      rest = rest.slice(chunk.length);
    }
    timeline.segmentFrom = Math.max(timeline.segmentFrom, to);
    if (this.pending.length > 0) this.setPending([]);
  }

  /** A segment just cut goes to every destination's outbox of its timeline. */
  private offer(timeline: Timeline, seg: CutSegment): void {
    const put = (box: Outbox) => {
      box.segments.push({ info: seg.info, batches: seg.batches, bytes: seg.bytes, spooled: null });
      box.memoryBytes += seg.bytes;
    };
    put(timeline.primary);
    for (const [r, rb] of timeline.replicas) {
      if (rb.closed) continue;
      put(rb);
      if (rb.memoryBytes + rb.diskBytes > this.cfg.replicaBytes) {
        // Never held without bound, never a silent hole: the replica's copy of this timeline ends at what
        // it stored (its window stops there; the primary's goes on), and it joins the next timeline.
        rb.closed = true;
        this.letGo(rb, r);
        const why = `${this.cfg.replicaBytes} bytes of segments waited for the replica ${r.host.name}`;
        r.lastError = { at: new Date().toISOString(), error: `${ErrorCodes.STORAGE_UNAVAILABLE}: ${why}` };
        this.log.error({ timeline: timeline.id, replica: r.host.name, replicaBytes: this.cfg.replicaBytes, stored: rb.shipped }, 'log archive: a replica fell too far behind; its copy of the timeline ends here (the primary goes on)');
      } else if (rb.memoryBytes > this.cfg.spoolMemoryBytes) {
        // A replica away or slower than the writes: what waits for it goes to its spool, not the
        // host's memory (whether or not it fails: the primary's outbox holds the same batches only
        // until the primary stores them).
        this.spillBeside(timeline, r);
      }
    }
  }

  /**
   * The primary's shipment, unless one already waits in the queue. A failing upload can take longer
   * than the interval (the storage's retries: 1.4 s against connections reset, far longer against
   * connect timeouts), and a shipment queued at every tick piled up behind it without bound; the work
   * queued after them — the stop's last shipment — waited for every one. Cutting and spilling never
   * wait in this queue: in the power-cut case (interval 100 ms) a spill queued behind the retries came
   * 31 s into the outage, and everything read meanwhile was in memory only, for a crash to take.
   */
  private queueShip(): void {
    if (this.shipQueued) return;
    this.shipQueued = true;
    void this.enqueue(async () => {
      this.shipQueued = false;
      try {
        await this.ship();
        this.sendFailures = 0;
        this.sendAfter = 0;
      } catch (err) {
        // Backing off: up to SEND_BACKOFF_MS between attempts while the storage stays away.
        this.sendAfter = sendAfterFailure(this.sendFailures++, this.cfg.intervalMs);
        throw err;
      }
    }).catch(() => {}); // remembered by store(); retried at a later interval
  }

  private shipEarly(): void {
    // A burst: cut now, so that segments stay about SEGMENT_BYTES; not sent early while uploads fail
    // (the interval's retry is enough, and the spool is what bounds the wait).
    const t = this.timeline;
    if (t === null || this.pendingBytes < EARLY_SHIP_BYTES) return;
    this.cut(t);
    if (!this.shipFailing) this.queueShip();
  }

  /**
   * Writes a destination outbox's segments held in memory (the primary's, or replica `dest`'s), oldest
   * first, to that destination's spool directory (atomic files, named as they will be stored), until at
   * most `keep` bytes of them are in memory. Beside the sender, never in its queue: a segment stored
   * meanwhile has its file deleted here, and one spooled while its upload was in flight has it deleted
   * by the sender.
   */
  private spill(timeline: Timeline, dest: Replica | null, keep: number): Promise<void> {
    const state = this.spillOf(dest);
    const spool = state.spool;
    const run = state.chain.then(async () => {
      const box = dest === null ? timeline.primary : timeline.replicas.get(dest);
      if (!box) return;
      for (const s of box.segments.slice()) {
        if (box.memoryBytes <= keep || box.closed) break;
        if (s.batches === null || !box.segments.includes(s)) continue;
        const spooled = await spool.write(s.info, await encodeSegment(s.info, s.batches, this.worker.sha256));
        if (box.closed || !box.segments.includes(s)) {
          await spool.remove(spooled); // stored meanwhile, or its timeline ended
          continue;
        }
        s.spooled = spooled;
        s.batches = null;
        box.memoryBytes -= s.bytes;
        box.diskBytes += spooled.bytes;
        // Said once the file is durable: from here a crash of the machine no longer loses these batches
        // (the next start stores them), which is what an operator reading the log of an outage wants to know.
        this.log.info({ timeline: timeline.id, first: s.info.first, last: s.info.last, to: s.info.to, bytes: spooled.bytes, ...(dest ? { replica: dest.host.name } : {}) }, 'log archive: a segment written to the spool');
      }
    });
    state.chain = run.catch(() => {});
    return run;
  }

  /**
   * A spill beside the sender, down to what a burst leaves in memory, unless one runs already for that
   * destination (the primary's: null); a failure is logged and the batches stay in memory.
   */
  private spillBeside(timeline: Timeline, dest: Replica | null): void {
    const state = this.spillOf(dest);
    if (state.running) return;
    state.running = true;
    this.spill(timeline, dest, Math.min(EARLY_SHIP_BYTES, this.cfg.spoolMemoryBytes / 2))
      .catch((err: unknown) => this.log.error({ ...(dest ? { replica: dest.host.name } : {}), err: toAdminError(err).message }, 'log archive: writing to the spool failed; the batches stay in memory'))
      .finally(() => (state.running = false));
  }

  private spillOf(dest: Replica | null): Spill {
    return dest === null ? this.primarySpill : dest.spill;
  }

  /** Lets a destination's outbox go (its copy of the timeline ended): its segments leave memory, their spool files are deleted. */
  private letGo(box: Outbox, dest: Replica | null): void {
    const spooled = box.segments.splice(0).flatMap((s) => (s.spooled ? [s.spooled] : []));
    box.memoryBytes = box.diskBytes = 0;
    const spool = this.spillOf(dest).spool;
    void (async () => {
      for (const f of spooled) await spool.remove(f);
    })().catch((err: unknown) => this.log.warn({ ...(dest ? { replica: dest.host.name } : {}), err: toAdminError(err).message }, 'log archive: deleting spooled segments failed (the next start stores them)'));
  }

  private setPending(batches: ReadBatch[]): void {
    this.pending = batches;
    this.pendingBytes = batches.reduce((n, b) => n + b.payload.length, 0);
  }

  /**
   * More read than the spool may hold (the storage unreachable, or slower than the writes): never grow
   * without bound, never drop a batch silently. With a timeline, it ends (`spool_full`: what it read is
   * still offered to the storage once, then the gap is declared). Without one (its base cannot be
   * stored either), what waits for the base is let go and the base is taken afresh when it can be: a new
   * checkpoint holds those writes.
   */
  private checkSpool(): void {
    const t = this.timeline;
    const waiting = this.pendingBytes + (t ? t.primary.memoryBytes + t.primary.diskBytes : 0);
    if (waiting <= this.cfg.spoolBytes) {
      // Only while uploads fail: a healthy storage catching up on a burst is faster from memory than
      // through the disk (the bench's 500 MB burst filled the spool when it spilled then).
      if (t && this.shipFailing && this.pendingBytes + t.primary.memoryBytes > this.cfg.spoolMemoryBytes) this.spillBeside(t, null);
      return;
    }
    const why = `${waiting} bytes of batches waited for the storage, more than the spool's ${this.cfg.spoolBytes}`;
    if (this.timeline !== null) {
      this.log.error({ timeline: this.timeline.id, waitingBytes: waiting, spoolBytes: this.cfg.spoolBytes }, 'log archive: the spool is full; the timeline ends here (a declared gap)');
      this.break('spool_full', why);
      return;
    }
    this.log.warn({ waitingBytes: waiting, spoolBytes: this.cfg.spoolBytes }, 'log archive: the spool is full while no base could be stored; a new base will be taken');
    this.failed(new AdminError(ErrorCodes.STORAGE_UNAVAILABLE, why));
    // The stream now starts after what is let go (continuity is still checked from lastSeq): a base in
    // flight whose checkpoint is older than that is refused when it lands, and the next is taken anew.
    this.baseCheckpoint = null;
    this.setPending([]);
    this.streamFirst = this.lastSeq === null ? null : this.lastSeq + 1;
    if (this.opening !== null) {
      this.opening = null; // what was let go cannot be in a timeline that goes on
      this.observer?.timelineBreak('start');
    }
  }

  private append(b: ReadBatch): void {
    const t = this.timeline;
    if (this.streamFirst === null) this.streamFirst = b.seq;
    this.lastSeq = batchLast(b);
    if (t && batchLast(b) <= t.sequence) return; // already in the base
    if (t && b.seq <= t.sequence) {
      this.break('overlap', `batch ${b.seq}..${batchLast(b)} straddles the base's sequence ${t.sequence}`);
      return;
    }
    this.pending.push(b);
    this.pendingBytes += b.payload.length;
  }

  /**
   * Ends the current timeline where continuity is lost: what it read before the break pass is shipped
   * (claiming up to the last whole pass), then a new base starts a new timeline.
   */
  private break(reason: BreakReason, why: string): void {
    const old = this.timeline;
    this.log.warn({ timeline: old?.id ?? null, reason, why }, 'log archive: continuity lost; the timeline ends and a new one begins with a new base');
    this.breaks++;
    this.lastBreak = { at: new Date().toISOString(), reason, detail: why };
    this.observer?.timelineBreak(reason);
    this.generation++;
    if (this.opening !== null) {
      this.opening = null; // the start's new timeline is this break's
      this.observer?.timelineBreak('start');
    }
    // What was read before the break pass ends the old timeline: cut now, up to the last whole pass.
    if (old) this.cut(old);
    this.timeline = null;
    this.setPending([]);
    this.lastSeq = null;
    this.streamFirst = null;
    if (old) {
      for (const [r, rb] of old.replicas) {
        if (rb.closed) continue;
        rb.closed = true;
        // Offered once, in the replica's own queue, then let go.
        void this.enqueueReplica(r, async () => {
          await this.sendSegments(old, rb, r).catch((err: unknown) => this.log.warn({ timeline: old.id, replica: r.host.name, err: toAdminError(err).message }, 'log archive: the end of a timeline could not be stored at a replica'));
          this.letGo(rb, r);
        });
      }
      const box = old.primary;
      box.closed = true;
      if (box.segments.length > 0) {
        // Offered once, in order after what is in flight (which shifts what it stores): what cannot be
        // stored now is the declared gap (the spool's files of it are deleted).
        void this.enqueue(() => this.sendSegments(old, box, null))
          .catch((err: unknown) => this.log.error({ timeline: old.id, err: toAdminError(err).message }, 'log archive: the end of a timeline could not be shipped'))
          .finally(() => this.letGo(box, null));
      }
    }
    this.startBase();
  }

  /**
   * Takes a checkpoint and backs it up, as the base of a new timeline; retried until it works or the
   * archiver stops, backing off (a backup of another checkpoint may hold the one backup slot for long).
   * A retry reuses the checkpoint already taken while no break happened since (its sequence is still
   * covered by the logs read), so a failing backup does not pile up checkpoints.
   */
  private startBase(): void {
    if (this.baseRunning || !this.running) return;
    this.baseRunning = true;
    const generation = this.generation;
    void (async () => {
      try {
        if (this.opening !== null && (await (this.resuming = this.tryResume(generation)).finally(() => (this.resuming = null)))) {
          this.baseRunning = false;
          if (generation !== this.generation) this.startBase();
          return;
        }
        if (generation !== this.generation) {
          // A break while the proof ran: its base is the one to take.
          this.baseRunning = false;
          this.startBase();
          return;
        }
        let taken = this.baseCheckpoint?.generation === generation ? this.baseCheckpoint : null;
        if (!taken) {
          const checkpoint = await this.host.createCheckpoint({ label: 'log-archive-base' });
          const completedAt = Date.now();
          // Read now: retention may prune the checkpoint once no backup holds it.
          const { sequence } = await dbSequence(checkpoint.path);
          taken = { generation, id: checkpoint.id, sequence, completedAt };
          this.baseCheckpoint = taken;
        }
        const backup = await this.host.createBackup({ checkpointId: taken.id }).catch((err: unknown) => {
          if (toAdminError(err).code === ErrorCodes.NOT_FOUND) this.baseCheckpoint = null; // pruned meanwhile
          throw err;
        });
        this.baseCheckpoint = null;
        const { sequence, completedAt } = taken;
        await this.enqueue(async () => {
          if (generation !== this.generation || !this.running) return;
          if (this.lastSeq !== null && this.streamFirst! > sequence + 1) {
            throw new Error(`the logs read begin at sequence ${this.streamFirst}, after the base's ${sequence}`);
          }
          const timeline: Timeline = {
            id: newCheckpointId().toLowerCase(),
            sequence,
            segmentFrom: Math.min(this.startedAt, completedAt),
            candidates: new Map(),
            primary: newOutbox(sequence),
            replicas: new Map(this.replicas.map((r) => [r, newOutbox(sequence)])),
          };
          const straddles = this.pending.find((b) => b.seq <= sequence && batchLast(b) > sequence);
          if (straddles) throw new Error(`batch ${straddles.seq}..${batchLast(straddles)} straddles the base's sequence ${sequence}`);
          // The base's own last batch, if it was read here: a later start compares it when no segment follows.
          const last = this.pending.find((b) => batchLast(b) === sequence);
          const tail = last && last.payload.length <= MAX_TAIL_BYTES ? { readAt: last.readAt, batch: last.payload.toString('base64') } : undefined;
          this.setPending(this.pending.filter((b) => b.seq > sequence));
          this.timeline = timeline;
          this.timelineStartedAt = Date.now();
          this.timelineStored = false;
          this.everTimeline = true;
          this.baseFailures = 0;
          this.log.info({ timeline: timeline.id, backup: backup.id, sequence }, 'log archive: timeline started');
          // What was read while the base was taken goes out at once, as the first segments.
          this.cut(timeline);
          // The timeline exists now; a failed upload leaves its base waiting for the next shipment.
          await this.registerBase(timeline, backup.id, taken.id, sequence, completedAt, tail).catch((err: unknown) =>
            this.log.warn({ timeline: timeline.id, err: toAdminError(err).message }, 'log archive: upload failed; retrying at the next interval'),
          );
        });
        this.baseRunning = false;
        if (generation !== this.generation) this.startBase();
      } catch (err) {
        this.baseRunning = false;
        if (!this.running) return;
        this.failed(err);
        const retryMs = Math.min(MAX_BASE_RETRY_MS, this.cfg.retryMs * 2 ** this.baseFailures++);
        this.log.warn({ err: toAdminError(err).message, retryMs }, 'log archive: taking a base failed; retrying');
        this.baseRetry = setTimeout(() => {
          this.baseRetry = null;
          if (this.timeline === null) this.startBase();
        }, retryMs);
        this.baseRetry.unref();
      }
    })();
  }

  /**
   * Records a base: it waits in the timeline until a shipment covers everything read up to a pass that
   * ended after its checkpoint, and is then stored with that shipment's end as its `to` (at the next
   * interval at the latest; retried with every later shipment if it fails).
   */
  private async registerBase(timeline: Timeline, backup: string, checkpoint: string, sequence: number, from: number, tail?: BaseRecord['tail']): Promise<void> {
    const base = { timeline: timeline.id, backup, sequence, from, ...(tail ? { tail } : {}) };
    timeline.primary.waitingBases.push(base);
    for (const [r, rb] of timeline.replicas) this.replicateBase(r, rb, checkpoint, base);
    await this.ship();
  }

  /**
   * The base's backup goes to the replica from its checkpoint, with the same backup id (deduplicated
   * there), beside the replica's segments; its record waits in the replica's outbox until then.
   * Retried with backoff while the replica fails; given up on NOT_FOUND (the checkpoint is gone, or the
   * snapshot was dropped for that replica; logged: that
   * replica's copy of the timeline then has no base from it).
   */
  private replicateBase(r: Replica, box: Outbox, checkpoint: string, base: Outbox['waitingBases'][number]): void {
    this.replicaBaseWork(
      r,
      () => !box.closed,
      async () => {
        await r.host.backupInto(checkpoint, base.backup);
        box.waitingBases.push(base);
        this.log.info({ timeline: base.timeline, backup: base.backup, replica: r.host.name }, 'log archive: a base backed up into a replica');
      },
      (err, retryMs) => {
        if (toAdminError(err).code === ErrorCodes.NOT_FOUND) {
          this.log.error({ timeline: base.timeline, backup: base.backup, checkpoint, replica: r.host.name, err: toAdminError(err).message }, 'log archive: a base will not be backed up into a replica (its checkpoint is gone, or it was dropped there)');
          return false;
        }
        this.log.warn({ backup: base.backup, replica: r.host.name, err: toAdminError(err).message, retryMs }, 'log archive: backing a base up into a replica failed; retrying');
        return true;
      },
    );
  }

  /**
   * A base's work for replica `r` (its backup, then its record into the outbox), in the replica's base
   * queue: one at a time, beside its segments, counted in `baseBackups` while it waits or runs. Tried
   * while the archiver runs and `goOn()` holds; after a failure, `retry` logs it and says whether to try
   * again, after a backoff doubling from retryMs up to MAX_BASE_RETRY_MS.
   */
  private replicaBaseWork(r: Replica, goOn: () => boolean, attempt: () => Promise<void>, retry: (err: unknown, retryMs: number) => boolean): void {
    r.baseBackups++;
    const run = r.baseWork.then(async () => {
      for (let n = 0; this.running && goOn(); n++) {
        try {
          await attempt();
          return;
        } catch (err) {
          if (!this.running) return;
          this.replicaFailed(r, err);
          const retryMs = Math.min(MAX_BASE_RETRY_MS, this.cfg.retryMs * 2 ** n);
          if (!retry(err, retryMs)) return;
          await new Promise<void>((resolve) => setTimeout(resolve, retryMs).unref());
        }
      }
    });
    r.baseWork = run.catch(() => {}).finally(() => r.baseBackups--);
  }

  /**
   * The primary's sender: its outbox, oldest first, then the marks and bases waiting (never a request
   * when there is nothing: an idle node stays silent). Throws at the first failure; what is not stored
   * stays for the next attempt.
   */
  private async ship(): Promise<void> {
    const timeline = this.timeline;
    if (!timeline) return;
    const covered = await this.send(timeline, timeline.primary, null);
    // Everything read by the cutter's cursor is stored (and no base waits): up to date.
    if (this.timeline === timeline && timeline.primary.waitingBases.length === 0) {
      this.timelineStored = true;
      this.storedUntil = Math.max(this.storedUntil ?? 0, covered);
    }
  }

  /** A replica's sender, in its own queue: the same as the primary's, with its own backoff. */
  private queueReplica(r: Replica): Promise<void> {
    if (r.queued) return r.work;
    r.queued = true;
    return this.enqueueReplica(r, async () => {
      r.queued = false;
      try {
        await this.shipReplicaLeftovers(r);
        const t = this.timeline;
        const box = t?.replicas.get(r);
        if (!t || !box || box.closed) return;
        if (box.unverified) await this.verifyReplica(t, r, box);
        if (box.closed) return;
        const covered = await this.send(t, box, r);
        r.failures = 0;
        r.sendAfter = 0;
        if (box.baseStored && box.waitingBases.length === 0 && r.baseBackups === 0) r.storedUntil = Math.max(r.storedUntil ?? 0, covered);
      } catch {
        r.sendAfter = sendAfterFailure(r.failures++, this.cfg.intervalMs);
      }
    });
  }

  /**
   * A timeline that goes on after a restart, at a replica: if the replica holds it whole up to the
   * resume point, it goes on there too (with the resume mark). If the replica holds nothing of it (a
   * replica added since, or one that never got its first base), it gets a base of its own: a checkpoint
   * backed up into it alone, registered only there. If it holds a copy with a hole or cut short (it was
   * behind when the agent stopped or was killed), its copy of the timeline cannot go on: it waits for the
   * next timeline (`backup copy --log-archive` fills it from the primary). Throws on a storage failure
   * (retried with the replica's backoff).
   */
  private async verifyReplica(t: Timeline, r: Replica, box: Outbox): Promise<void> {
    const repo = await r.host.openRepository();
    const objects: WalObject[] = [];
    for await (const o of repo.list(`${WAL_PREFIX}${t.id}/`)) {
      const parsed = parseWalName(o.name);
      if (parsed) objects.push(parsed);
    }
    const backups = new Set<string>();
    for await (const o of repo.list('snapshots/')) backups.add(o.name.slice('snapshots/'.length));
    const held = timelineWindows(objects, backups).timelines.find((w) => w.id === t.id);
    box.unverified = false;
    if (held && held.from !== null && held.brokenAfter === null && held.lastSequence === t.sequence) return;
    box.waitingMarks = []; // it would extend a window the replica does not have
    if (held === undefined) {
      this.log.info({ timeline: t.id, replica: r.host.name }, 'log archive: a replica holds nothing of the timeline that goes on; it gets a base of its own');
      this.replicaOwnBase(t, r, box);
      return;
    }
    box.closed = true;
    this.letGo(box, r);
    r.lastError = { at: new Date().toISOString(), error: `${ErrorCodes.STORAGE_UNAVAILABLE}: the replica's copy of timeline ${t.id} ends before sequence ${t.sequence}` };
    this.log.error({ timeline: t.id, replica: r.host.name, replicaEnds: held.lastSequence, sequence: t.sequence }, "log archive: a replica's copy of the timeline that goes on is cut short; it waits for the next timeline (backup copy --log-archive fills it)");
  }

  /** A base for one replica only: a checkpoint of its own, backed up into that replica under a new backup id. */
  private replicaOwnBase(t: Timeline, r: Replica, box: Outbox): void {
    this.replicaBaseWork(
      r,
      () => !box.closed && this.timeline === t,
      async () => {
        const checkpoint = await this.host.createCheckpoint({ label: 'log-archive-replica-base' });
        const from = Date.now();
        const { sequence } = await dbSequence(checkpoint.path);
        const backup = newCheckpointId().toLowerCase();
        await r.host.backupInto(checkpoint.id, backup);
        box.waitingBases.push({ timeline: t.id, backup, sequence, from });
        this.log.info({ timeline: t.id, backup, sequence, replica: r.host.name }, 'log archive: a base of its own backed up into a replica');
      },
      (err, retryMs) => {
        this.log.warn({ replica: r.host.name, err: toAdminError(err).message, retryMs }, "log archive: a replica's own base failed; retrying");
        return true;
      },
    );
  }

  private enqueueReplica(r: Replica, fn: () => Promise<void>): Promise<void> {
    const next = r.work.then(fn);
    r.work = next.catch(() => {});
    return r.work;
  }

  /** Stores an outbox's segments, then its marks, then the bases they cover; returns the time covered. */
  private async send(timeline: Timeline, box: Outbox, dest: Replica | null): Promise<number> {
    await this.sendSegments(timeline, box, dest);
    // The outbox is empty: every batch read by the cutter's cursor is stored here.
    const covered = timeline.segmentFrom;
    const who = dest ? { replica: dest.host.name } : {};
    while (box.waitingMarks.length > 0) {
      const mark = box.waitingMarks[0]!;
      await this.storeAt(dest, markName(mark), Buffer.from(canonicalJson(mark)));
      box.waitingMarks.shift();
      box.baseStored = true;
      this.log.info({ timeline: timeline.id, kind: mark.kind, sequence: mark.last, ...who }, 'log archive: mark stored');
    }
    // A base waits for the segments covering a pass ended after its checkpoint: its record then says it
    // is restorable from the start (`to` >= `from`), even if the node writes nothing more.
    const ready = box.waitingBases.filter((b) => b.from <= covered);
    for (const b of ready) {
      const record: BaseRecord = { version: 1, ...b, to: covered, last: box.shipped };
      await this.storeAt(dest, baseName(record), Buffer.from(canonicalJson(record)));
      box.waitingBases.splice(box.waitingBases.indexOf(b), 1);
      box.baseStored = true;
      this.log.info({ timeline: timeline.id, backup: b.backup, sequence: b.sequence, ...who }, 'log archive: base registered');
    }
    return covered;
  }

  /**
   * Stores an outbox's segments, oldest first (what is cut meanwhile too), each let go once stored. Each
   * is encoded into a buffer of the process's pool, reused segment after segment and read in place by
   * the worker threads that hash and seal it; one larger than that buffer gets one of its own.
   */
  private async sendSegments(timeline: Timeline, box: Outbox, dest: Replica | null): Promise<void> {
    const merge = dest === null ? this.merge : dest.merge;
    const spool = this.spillOf(dest).spool;
    let lease: Buffer | null = null;
    try {
      while (box.segments.length > 0) {
        const s = box.segments[0]!;
        let data: Buffer;
        if (s.batches !== null) {
          lease ??= alignedPool.take(1, SEGMENT_BUFFER_BYTES)[0]!;
          data = (await SegmentBuilder.encode(lease, s.info, s.batches, this.worker.sha256)) ?? (await encodeSegment(s.info, s.batches, this.worker.sha256));
          if (this.cfg.merge) merge.bodies.set(segmentName(s.info), bodyBytes(s.batches));
        } else {
          data = await spool.read(s.spooled!);
        }
        await this.storeSegment(timeline, box, dest, s.info, data);
        if (box.segments[0] !== s) continue; // let go meanwhile (a replica's outbox overflowed)
        box.segments.shift();
        if (s.spooled) {
          box.diskBytes -= s.spooled.bytes;
          await spool.remove(s.spooled);
        } else {
          box.memoryBytes -= s.bytes; // a spill in flight deletes its file when it sees it gone
        }
      }
    } finally {
      // Nothing reads it any more: the store it was encoded for has settled.
      if (lease) alignedPool.give([lease]);
    }
  }

  /** Stores one segment (the next in order of its outbox), and counts it. */
  private async storeSegment(timeline: Timeline, box: Outbox, dest: Replica | null, info: SegmentInfo, data: Buffer): Promise<void> {
    try {
      await this.storeAt(dest, segmentName(info), data);
    } catch (err) {
      this.log.warn({ timeline: timeline.id, first: info.first, last: info.last, ...(dest ? { replica: dest.host.name } : {}), err: toAdminError(err).message }, 'log archive: upload failed; retrying at the next interval');
      throw err;
    }
    box.shipped = info.last;
    if (dest !== null) {
      if (box.baseStored && box.waitingBases.length === 0 && dest.baseBackups === 0) dest.storedUntil = Math.max(dest.storedUntil ?? 0, info.to);
      dest.merge.since = true;
      this.maybeMerge(timeline.id, dest);
      return;
    }
    const at = Date.now();
    if (this.timeline === timeline && this.timelineStored && box.waitingBases.length === 0) this.storedUntil = Math.max(this.storedUntil ?? 0, info.to);
    this.shippedSegments++;
    this.shippedBytes += data.length;
    this.lastShipped = { at: new Date(at).toISOString(), sequence: info.last, timeline: timeline.id };
    this.observer?.shipped(data.length, at);
    this.merge.since = true;
    this.maybeMerge(timeline.id, null);
  }

  /** Stores one object at a destination: the primary (store()), or a replica, its success or failure remembered. */
  private async storeAt(dest: Replica | null, name: string, data: Buffer): Promise<void> {
    if (dest === null) return this.store(name, data);
    try {
      const repo = await dest.host.openRepository();
      await repo.putObject(name, data);
      dest.failing = false;
      dest.lastSuccessAt = Date.now();
    } catch (err) {
      this.replicaFailed(dest, err);
      throw err;
    }
  }

  private replicaFailed(r: Replica, err: unknown): void {
    const e = toAdminError(err);
    r.failing = true;
    r.lastError = { at: new Date().toISOString(), error: `${e.code}: ${e.message}` };
  }

  /**
   * Bytes of the log this archiver holds in memory: batches read and not yet cut into a segment
   * (`pending`), and segments cut and not yet stored at every destination (`outbox`: a segment that
   * several outboxes share counts once; those spilled to the spool directory are on disk, not here).
   */
  bufferedBytes(): { pending: number; outbox: number } {
    const t = this.timeline;
    const seen = new Set<ReadBatch[]>();
    let outbox = 0;
    for (const box of t ? [t.primary, ...t.replicas.values()] : []) {
      for (const s of box.segments) {
        if (s.batches === null || seen.has(s.batches)) continue;
        seen.add(s.batches);
        outbox += s.bytes;
      }
    }
    return { pending: this.pendingBytes, outbox };
  }

  /** What each replica holds and how far behind it is (no storage request). */
  replicaStatus(now = Date.now()): LogArchiveReplicaStatus[] {
    const t = this.timeline;
    return this.replicas.map((r) => {
      const box = t?.replicas.get(r);
      const upToDate = box !== undefined && !box.closed && box.baseStored && this.pending.length === 0 && box.segments.length === 0 && r.leftovers.length === 0 && box.waitingBases.length === 0 && r.baseBackups === 0;
      const since = upToDate ? this.lastPassEnd : (r.storedUntil ?? this.startedAt);
      const state: LogArchiveReplicaStatus['state'] = this.stopped ? 'stopped' : box?.closed ? 'behind' : r.failing ? 'retrying' : 'following';
      return {
        name: r.host.name,
        state,
        lagSeconds: Math.max(0, now - since) / 1000,
        waitingSegments: (box?.segments.length ?? 0) + r.leftovers.length,
        waitingBytes: (box?.memoryBytes ?? 0) + (box?.diskBytes ?? 0),
        spooledBytes: box?.diskBytes ?? 0,
        lastSuccess: r.lastSuccessAt === null ? null : new Date(r.lastSuccessAt).toISOString(),
        lastError: r.lastError,
      };
    });
  }

  /**
   * At most once per merge window, and only after a segment was stored since the last run (an idle node
   * makes no request): merges the current timeline's finished windows (segment-merger.ts) at one
   * destination. Runs beside shipping, not in its queue, so a long merge never holds up the RPO: it
   * touches only finished windows, shipping only adds newer segments. A failure is logged and tried
   * again at the next run.
   */
  private maybeMerge(timeline: string, dest: Replica | null): void {
    const cfg = this.cfg.merge;
    const state = dest === null ? this.merge : dest.merge;
    if (!cfg || state.run || !state.since || Date.now() - state.lastAt < cfg.windowMs) return;
    state.since = false;
    state.lastAt = Date.now();
    const who = dest ? { replica: dest.host.name } : {};
    state.run = (async () => {
      let buffer: Buffer | null = null;
      try {
        const repo = await (dest === null ? this.host.openRepository() : dest.host.openRepository());
        const listed = await listSegments(repo, timeline);
        const names = new Set(listed.map((s) => s.name));
        for (const name of state.bodies.keys()) if (!names.has(name)) state.bodies.delete(name);
        const plan = planMerges(listed, { windowMs: cfg.windowMs, largeWindowMs: cfg.largeWindowMs }, MAX_MERGED_BYTES, state.bodies);
        // Bounded work per run: a backlog is merged over the next runs.
        const limited = { merges: plan.merges.slice(0, MERGES_PER_RUN), leftovers: plan.leftovers };
        if (limited.merges.length === 0 && limited.leftovers.length === 0) return;
        buffer = alignedPool.take(1, MERGE_BUFFER_BYTES)[0]!;
        const done = await runMerges(repo, limited, this.worker.sha256, { buffer, bodies: state.bodies });
        this.log.debug({ timeline, ...done, ...who }, 'log archive: segments merged');
      } catch (err) {
        this.log.warn({ timeline, ...who, err: toAdminError(err).message }, 'log archive: merging segments failed; trying again at the next run');
      } finally {
        // runMerges has settled: no read, hash or store of the buffer is left.
        if (buffer) alignedPool.give([buffer]);
        state.run = null;
      }
    })();
  }
}
