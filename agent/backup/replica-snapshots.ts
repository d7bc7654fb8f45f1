import type { Logger } from 'pino';
import type { BackupRecord, BackupReplicaStatus, SnapshotRef } from '../../shared/api.js';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';

/** A primary snapshot to back up into a replica: what the replica's copy keeps of it. */
export interface ReplicaSnapshotJob {
  /** The primary's backup id: the replica's copy has the same. */
  backupId: string;
  checkpointId: string;
  /** The primary's time and pin (null for a snapshot that is not the primary's: a replica's own log archive base). */
  createdAt: string | null;
  pinned: boolean;
}

/** What the replicas' snapshots need of the backup manager. */
export interface ReplicaSnapshotsHost {
  /**
   * Backs `job` up into the replica at `url` from its checkpoint (never from the primary), unpaced,
   * outside the primary's backup slot: `held` when the replica has that backup already. Rejects with
   * NOT_FOUND when the checkpoint is gone, CANCELLED when `signal` fires.
   */
  backupInto(url: string, job: ReplicaSnapshotJob, signal: AbortSignal): Promise<'held' | 'copied'>;
  /** The replica's snapshot ids (a listing) and its newest snapshot (one read); nothing when it has no repository yet. */
  holdings(url: string): Promise<{ ids: Set<string>; newest: SnapshotRef | null }>;
  /** The primary's snapshots. */
  primarySnapshots(): Promise<BackupRecord[]>;
  /** The checkpoints that exist now. */
  checkpointIds(): Promise<Set<string>>;
}

/** Why a pending snapshot was given up (the `reason` label of node_admin_backup_replica_snapshots_dropped_total). */
export type ReplicaDropReason = 'pending_limit' | 'checkpoint_gone';

/** Told as it happens (the agent's metrics); must not throw. */
export interface ReplicaSnapshotsObserver {
  snapshotDropped(replica: string, reason: ReplicaDropReason): void;
}

/** A replica that fails is tried again after this, doubling up to REPLICA_RETRY_MAX_MS. */
const REPLICA_RETRY_MS = 1000;
/**
 * A replica away for long is asked again at least this often, as its log archive's sender does: a
 * returning one catches up within it. A failure of an unreachable replica costs one request (its
 * config); a backup cut short is resumed, not redone (its packs are reused, the hash cache skips reads).
 */
const REPLICA_RETRY_MAX_MS = 5_000;
/** The primary's snapshots remembered (id, time, pin) for `ensure`, beyond the queues: a base dropped from a queue keeps its time. */
const RECENT_SNAPSHOTS = 64;

interface Replica {
  url: string;
  /** What logs, status and metrics call it (its URL without credentials). */
  name: string;
  /** Snapshots waiting for it, oldest first. */
  queue: ReplicaSnapshotJob[];
  /**
   * Its backups, one at a time (one hash cache and one lock per replica): this queue's and the log
   * archive's bases (`ensure`). A backup asked for twice is run once: `running` by backup id.
   */
  lane: Promise<unknown>;
  running: Map<string, Promise<'held' | 'copied'>>;
  copying: ReplicaSnapshotJob | null;
  /** Its holdings were read after the start (the catch-up is queued). */
  scanned: boolean;
  failing: boolean;
  failures: number;
  newest: SnapshotRef | null;
  dropped: number;
  /** The ids dropped for it since the start (the newest RECENT_SNAPSHOTS): `ensure` gives them up too. */
  droppedIds: Set<string>;
  lastSuccessAt: number | null;
  lastError: { at: string; error: string } | null;
  /** What its loop waits for, and how to end the wait. */
  waiting: 'idle' | 'backoff' | null;
  wake: (() => void) | null;
  loop: Promise<void>;
}

/**
 * Every snapshot the agent makes in the primary, backed up into each replica (backup.replicas) from the
 * same checkpoint with the primary's id and time, deduplicated there, never read back from the primary.
 *
 * Contract:
 * - Each replica has its own queue, its own one-at-a-time lane of backups, retries with backoff
 *   (REPLICA_RETRY_MS doubling to REPLICA_RETRY_MAX_MS): a replica down or slow never holds up the
 *   primary (snapshotMade only queues) nor another replica.
 * - At most `limit` snapshots wait per replica: past it the oldest waiting one is dropped, logged once
 *   and counted (observer). A snapshot whose checkpoint is gone when its turn comes is dropped the same
 *   way. `heldCheckpoints` names the checkpoints still waited for: retention keeps them, so only the
 *   limit (or an explicit delete) lets one go.
 * - After a start, each replica is first scanned: of the primary's `limit` newest snapshots whose
 *   checkpoints still exist, those it lacks are queued (the queue lives in memory; this is how a
 *   restart finds it again). A scan that fails is retried like a backup.
 * - `ensure` backs one snapshot up now (the log archive's bases), through the same lane: one run if the
 *   queue asks for it too.
 * - status() answers from memory; stop() cancels what runs and resolves once every loop has ended.
 */
export class ReplicaSnapshots {
  private readonly replicas: Replica[];
  private running = false;
  private readonly controller = new AbortController();
  /** The snapshots made since the start, the newest RECENT_SNAPSHOTS, by id. */
  private readonly recent = new Map<string, ReplicaSnapshotJob>();

  constructor(
    replicas: { url: string; name: string }[],
    private readonly limit: number,
    private readonly host: ReplicaSnapshotsHost,
    private readonly log: Logger,
    private readonly observer: ReplicaSnapshotsObserver | null = null,
  ) {
    this.replicas = replicas.map(({ url, name }) => ({
      url,
      name,
      queue: [],
      lane: Promise.resolve(),
      running: new Map(),
      copying: null,
      scanned: false,
      failing: false,
      failures: 0,
      newest: null,
      dropped: 0,
      droppedIds: new Set(),
      lastSuccessAt: null,
      lastError: null,
      waiting: null,
      wake: null,
      loop: Promise.resolve(),
    }));
  }

  start(): void {
    if (this.running || this.controller.signal.aborted) return;
    this.running = true;
    for (const r of this.replicas) r.loop = this.work(r);
  }

  /** Cancels the backups running into replicas; resolves once every replica's loop has ended. What waits is found again by the next start's scan. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.controller.abort();
    for (const r of this.replicas) r.wake?.();
    await Promise.all(this.replicas.map((r) => Promise.all([r.loop, r.lane])));
  }

  /** The agent made a snapshot in the primary: it waits for each replica in that replica's queue. */
  snapshotMade(record: BackupRecord): void {
    if (!this.running) return;
    const job: ReplicaSnapshotJob = { backupId: record.id, checkpointId: record.checkpoint.id, createdAt: record.createdAt, pinned: record.pinned };
    this.recent.set(job.backupId, job);
    for (const id of this.recent.keys()) {
      if (this.recent.size <= RECENT_SNAPSHOTS) break;
      this.recent.delete(id);
    }
    for (const r of this.replicas) this.enqueue(r, job);
  }

  /**
   * Backs one snapshot up into the replica `url` now, through its lane (the log archive's bases: its
   * base record waits for it). The primary's time and pin are kept (it is taken out of the queue once
   * there). Rejects when the attempt fails (the caller retries), and with NOT_FOUND when the snapshot
   * was dropped for that replica: the limit holds for bases too.
   */
  async ensure(url: string, checkpointId: string, backupId: string): Promise<void> {
    const r = this.replicas.find((x) => x.url === url);
    if (!r) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'not a configured replica');
    if (r.droppedIds.has(backupId)) throw new AdminError(ErrorCodes.NOT_FOUND, `snapshot ${backupId} was dropped for the replica ${r.name}: more snapshots waited for it than backup.replicaPendingSnapshots allows`);
    const known = r.queue.find((j) => j.backupId === backupId) ?? this.recent.get(backupId);
    await this.run(r, known ?? { backupId, checkpointId, createdAt: null, pinned: false });
  }

  /** The checkpoints a replica still waits for or reads now: retention keeps them. */
  heldCheckpoints(): Set<string> {
    const held = new Set<string>();
    for (const r of this.replicas) {
      for (const j of r.queue) held.add(j.checkpointId);
      if (r.copying) held.add(r.copying.checkpointId);
    }
    return held;
  }

  /** The replica reading checkpoint `id` right now, if any (a delete of it is refused meanwhile). */
  readingCheckpoint(id: string): string | null {
    return this.replicas.find((r) => r.copying?.checkpointId === id)?.name ?? null;
  }

  status(): BackupReplicaStatus[] {
    return this.replicas.map((r) => ({
      name: r.name,
      state: !this.running ? 'stopped' : r.copying !== null ? 'copying' : r.failing ? 'retrying' : !r.scanned ? 'scanning' : r.queue.length > 0 ? 'copying' : 'idle',
      newestSnapshot: r.newest,
      pending: r.queue.map((j) => ({ id: j.backupId, createdAt: j.createdAt ?? '' })),
      copying: r.copying?.backupId ?? null,
      dropped: r.dropped,
      lastSuccess: r.lastSuccessAt === null ? null : new Date(r.lastSuccessAt).toISOString(),
      lastError: r.lastError,
    }));
  }

  /** A replica's loop: its scan first, then its queue, oldest first, each retried with backoff until done or dropped. */
  private async work(r: Replica): Promise<void> {
    while (this.running) {
      const job = r.scanned ? r.queue[0] : undefined;
      try {
        if (!r.scanned) {
          await this.scan(r);
          r.scanned = true;
          r.failures = 0;
        } else if (!job) {
          await this.pause(r, 'idle', null);
        } else {
          await this.run(r, job);
          r.failures = 0;
        }
      } catch (err) {
        if (!this.running) return;
        const e = toAdminError(err);
        if (job && e.code === ErrorCodes.NOT_FOUND) {
          this.drop(r, job, 'checkpoint_gone', e.message);
          continue;
        }
        const retryMs = Math.min(REPLICA_RETRY_MAX_MS, REPLICA_RETRY_MS * 2 ** r.failures++);
        this.log.warn({ replica: r.name, backup: job?.backupId ?? null, err: e.message, retryMs }, job ? 'backing a snapshot up into a replica failed; retrying' : 'reading what a replica holds failed; retrying');
        await this.pause(r, 'backoff', retryMs);
      }
    }
  }

  /** Waits: `idle` until a snapshot is queued, `backoff` for `ms`; either until stop. */
  private async pause(r: Replica, kind: 'idle' | 'backoff', ms: number | null): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = ms === null ? null : setTimeout(resolve, ms);
      r.waiting = kind;
      r.wake = () => {
        if (t) clearTimeout(t);
        resolve();
      };
    });
    r.waiting = null;
    r.wake = null;
  }

  /**
   * What the replica lacks of the primary's newest snapshots whose checkpoints still exist (at most
   * `limit`), queued; and its newest snapshot for status.
   */
  private async scan(r: Replica): Promise<void> {
    const [records, checkpoints, held] = await Promise.all([this.host.primarySnapshots(), this.host.checkpointIds(), this.host.holdings(r.url)]);
    this.succeeded(r, held.newest);
    const candidates = records
      .filter((s) => checkpoints.has(s.checkpoint.id))
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0))
      .slice(-this.limit);
    const lacking = candidates.filter((s) => !held.ids.has(s.id));
    for (const s of lacking) this.enqueue(r, { backupId: s.id, checkpointId: s.checkpoint.id, createdAt: s.createdAt, pinned: s.pinned });
    this.log.info({ replica: r.name, newest: held.newest?.id ?? null, queued: lacking.map((s) => s.id) }, lacking.length > 0 ? 'a replica lacks some of the newest snapshots; they are queued for it' : 'a replica holds the newest snapshots');
  }

  private enqueue(r: Replica, job: ReplicaSnapshotJob): void {
    if (r.queue.some((j) => j.backupId === job.backupId) || r.copying?.backupId === job.backupId) return;
    r.queue.push(job);
    r.queue.sort((a, b) => ((a.createdAt ?? '') < (b.createdAt ?? '') ? -1 : (a.createdAt ?? '') > (b.createdAt ?? '') ? 1 : 0));
    // The oldest waiting goes (an attempt at it in flight ends as it ends: nothing more is tried).
    while (r.queue.length > this.limit) this.drop(r, r.queue[0]!, 'pending_limit', `more than ${this.limit} snapshots waited for the replica`);
    if (r.waiting === 'idle') r.wake?.();
  }

  private drop(r: Replica, job: ReplicaSnapshotJob, reason: ReplicaDropReason, why: string): void {
    const i = r.queue.indexOf(job);
    if (i < 0) return;
    r.queue.splice(i, 1);
    r.dropped++;
    r.droppedIds.add(job.backupId);
    for (const id of r.droppedIds) {
      if (r.droppedIds.size <= RECENT_SNAPSHOTS) break;
      r.droppedIds.delete(id);
    }
    this.observer?.snapshotDropped(r.name, reason);
    this.log.warn({ replica: r.name, backup: job.backupId, checkpoint: job.checkpointId, reason, why }, 'a snapshot will not be backed up into a replica (backup copy from the primary can fill it)');
  }

  /** One backup into the replica, in its lane; one run for a snapshot asked for twice. */
  private run(r: Replica, job: ReplicaSnapshotJob): Promise<'held' | 'copied'> {
    if (!this.running) return Promise.reject(new AdminError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping'));
    const already = r.running.get(job.backupId);
    if (already) return already;
    const attempt = r.lane.then(async () => {
      if (!this.running) throw new AdminError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping');
      r.copying = job;
      try {
        const result = await this.host.backupInto(r.url, job, this.controller.signal);
        const i = r.queue.findIndex((j) => j.backupId === job.backupId);
        if (i >= 0) r.queue.splice(i, 1);
        this.succeeded(r, job.createdAt === null ? null : { id: job.backupId, createdAt: job.createdAt });
        if (result === 'copied') this.log.info({ replica: r.name, backup: job.backupId, checkpoint: job.checkpointId }, 'a snapshot backed up into a replica');
        return result;
      } catch (err) {
        if (this.running) {
          const e = toAdminError(err);
          r.failing = true;
          r.lastError = { at: new Date().toISOString(), error: `${e.code}: ${e.message}` };
        }
        throw err;
      } finally {
        r.copying = null;
      }
    });
    r.running.set(job.backupId, attempt);
    r.lane = attempt.catch(() => {});
    void r.lane.then(() => {
      if (r.running.get(job.backupId) === attempt) r.running.delete(job.backupId);
    });
    return attempt;
  }

  private succeeded(r: Replica, snapshot: SnapshotRef | null): void {
    r.failing = false;
    r.lastSuccessAt = Date.now();
    if (snapshot !== null && (r.newest === null || snapshot.createdAt > r.newest.createdAt)) r.newest = snapshot;
  }
}
