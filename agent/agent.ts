import path from 'node:path';
import { pino, type Logger } from 'pino';
import type {
  ArchiveCopyProgress,
  CopyBackupsRequest,
  CopyProgress,
  CopySummary,
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
  DeleteCheckpointOptions,
  DeleteResult,
  LogArchiveTimelines,
  ChangeBatch,
  ChangesRequest,
  ChangesSummary,
  OperationStatus,
  PruneRequest,
  PruneResult,
  RetentionPolicy,
  VerifyBackupsRequest,
  VerifyReport,
} from '../shared/api.js';
import { AdminError, ErrorCodes, toAdminError } from '../shared/errors.js';
import { parseLabel, parseOptionalBoolean } from '../shared/input-rules.js';
import { parseCopyBackups } from '../shared/routes.js';
import type { Agent, AgentOptions } from './agent-types.js';
import { BackupManager, parseBackupOptions } from './backup/backup-manager.js';
import { newCheckpointId } from './checkpoint/checkpoint-id.js';
import { FsWorkerClient } from './checkpoint/fs-worker-client.js';
import type { BuiltCheckpoint } from './checkpoint/checkpoint-dir.js';
import { verifyCheckpoint } from './checkpoint/verify-checkpoint.js';
import { diskSpace } from './fs/disk-space.js';
import { applyPolicy, parseRetention } from './retention/apply-policy.js';
import { Scheduler } from './scheduler.js';
import { AdminServer } from './admin-server/admin-server.js';
import { formatBytes } from '../shared/units.js';
import { AgentMetrics, type CheckpointFacts } from './metrics/agent-metrics.js';
import type { ReplicaFacts } from './metrics/replica-metrics.js';
import { LogArchiver, parseLogArchiveOptions, type LogArchiveConfig } from './log-archive/log-archiver.js';
import { logArchivePruneClient } from './log-archive/wal-prune.js';
import { archiveThreads, type ArchiveThreads } from './log-archive/archive-threads.js';
import { alignedPool } from './fs/aligned-pool.js';
import type { Storage } from './storage/storage.js';
import { parseStorageUrl, redactUrl } from './storage/open-storage.js';
import type { Repository } from './repository/repository.js';

export const AGENT_VERSION = '0.1.0';

/** Paths in pino's redact syntax that must never reach a log (credentials arrive with remote backups). */
export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'secretAccessKey',
  '*.secretAccessKey',
  '*.credentials',
  'credentials',
  'password',
  '*.password',
];

export function createAgent(options: AgentOptions): Agent {
  return new CheckpointAgent(options);
}

interface QueuedCreate {
  id: string;
  label: string | null;
  pinned: boolean;
  trigger: CheckpointTrigger;
  resolve: (r: CheckpointRecord) => void;
  reject: (e: unknown) => void;
}

class CheckpointAgent implements Agent {
  private readonly dbPath: string;
  private readonly checkpointDir: string;
  private readonly socketPath: string | null;
  private readonly retention: RetentionPolicy;
  private readonly maxQueued: number;
  private readonly log: Logger;
  /** Builds checkpoints, one at a time; terminated to cancel. */
  private readonly builder = new FsWorkerClient();
  /** Everything else (list, pin, delete): answers while a build or a verify runs. */
  private readonly files = new FsWorkerClient();
  /**
   * Verifies: reads every byte of a checkpoint (minutes for a large one), so not in `files`, where
   * status, list and pin would wait behind it.
   */
  private readonly reader = new FsWorkerClient();
  private readonly queue: QueuedCreate[] = [];
  private running: (OperationStatus & { cancelled: boolean; built: boolean }) | null = null;
  private readonly scheduler: Scheduler | null;
  private server: AdminServer | null = null;
  private readonly startedAt = new Date();
  private state: 'new' | 'started' | 'stopping' | 'stopped' = 'new';
  private readonly socketGroup: string | number | null;
  private readonly backups: BackupManager;
  /**
   * With the log archive: the crypto threads lent to every repository the backups open, the first of
   * them doing the archive's work too (archive-threads.ts: one V8 isolate fewer in the host); closed last.
   */
  private readonly threads: ArchiveThreads | null;
  private readonly agentMetrics: AgentMetrics;
  /** The checkpoint index's last answer (for scrapes while the files worker is busy with long work). */
  private lastFacts: CheckpointFacts | null = null;
  /** Log archiving (agent/log-archive/), when options.backup.logArchive asks for it. */
  private readonly archiveCfg: LogArchiveConfig | null;
  private archiver: LogArchiver | null = null;
  private archiveStorage: Promise<Storage> | null = null;
  /** The log archive's replicas (backup.replicas). */
  private readonly replicaUrls: string[];
  private readonly backupOptions: AgentOptions['backup'];

  constructor(options: AgentOptions) {
    if (!options.dbPath) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'dbPath is required');
    if (!options.checkpointDir) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'checkpointDir is required');
    this.dbPath = path.resolve(options.dbPath);
    this.checkpointDir = path.resolve(options.checkpointDir);
    this.socketPath = options.socketPath ? path.resolve(options.socketPath) : null;
    this.socketGroup = options.socketGroup ?? null;
    this.retention = parseRetention(options.retention ?? {});
    this.maxQueued = options.maxQueuedCreates ?? 8;
    this.log = (options.logger ?? pino({ redact: REDACT_PATHS })).child({ component: 'node-admin' });
    this.archiveCfg = options.backup ? parseLogArchiveOptions(options.backup.logArchive) : null;
    this.replicaUrls = options.backup ? parseReplicas(options.backup.replicas, options.backup.repository) : [];
    this.agentMetrics = new AgentMetrics(
      {
        checkpoints: () => this.checkpointFacts(),
        freeBytes: async () => (await this.diskSpace()).freeBytes,
        buffered: () => {
          const held = this.archiver?.bufferedBytes();
          return {
            pool_in_use: alignedPool.inUseBytes,
            pool_free: alignedPool.freeBytes,
            ...(this.archiveCfg ? { log_archive_pending: held?.pending ?? 0, log_archive_outbox: held?.outbox ?? 0 } : {}),
          };
        },
        ...(this.archiveCfg
          ? {
              logArchive: {
                lagSeconds: () => this.archiver?.lagSeconds() ?? null,
                lagBytes: async () => {
                  if (!this.archiver) return null;
                  const lag = await this.archiver.lagBytes();
                  return lag.bytes + lag.unreadBytes;
                },
              },
            }
          : {}),
        ...(this.replicaUrls.length > 0 ? { replicas: () => this.replicaFacts() } : {}),
      },
      { hostRegistry: options.metrics?.registry ?? null, minFreeBytes: this.retention.minFreeBytes },
    );
    this.threads = this.archiveCfg ? archiveThreads() : null;
    this.backups = new BackupManager(
      options.backup ? parseBackupOptions(options.backup, this.checkpointDir) : null,
      {
        listCheckpoints: () => this.listCheckpoints(),
        getCheckpoint: (id) => this.getCheckpoint(id),
        createCheckpoint: (req) => this.createCheckpoint(req),
        isStopping: () => this.state === 'stopping' || this.state === 'stopped',
        ...(this.threads ? { threads: this.threads.pool } : {}),
      },
      this.log,
      this.agentMetrics,
      {
        prune: logArchivePruneClient,
        timeline: async (listing) => {
          const [{ readWindows }, { timelineReport }] = await Promise.all([import('./log-archive/restore-to-moment.js'), import('./log-archive/timeline-report.js')]);
          return timelineReport(await readWindows(listing));
        },
        verify: async (repo, options) => (await import('./log-archive/archive-verify.js')).verifyArchive(repo, options),
        changes: async (repo, req, onBatch) => {
          const { archiveChanges, parseChangesRequest } = await import('./log-archive/archive-changes.js');
          const listing = archiveChanges(repo, parseChangesRequest(req));
          for (;;) {
            const next = await listing.next();
            if (next.done) return next.value;
            await onBatch(next.value);
          }
        },
        replicaLagSeconds: (name) => this.archiver?.replicaStatus().find((r) => r.name === name)?.lagSeconds ?? null,
      },
      this.replicaUrls,
    );
    this.backupOptions = options.backup;
    this.scheduler = options.schedule
      ? new Scheduler(options.schedule, async () => {
          const r = await this.createCheckpoint({ trigger: 'scheduled', label: 'scheduled' });
          this.backups.promote(r);
          return r.id;
        }, this.log)
      : null;
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'agent already started');
    this.state = 'started';
    try {
      this.backups.start();
      const removed = await this.files.call('cleanLeftovers', this.checkpointDir);
      if (removed.length > 0) this.log.warn({ removed }, 'removed leftovers of interrupted checkpoint work');
      // The checkpoint index is built by one scan of every checkpoint: now, in the background, rather
      // than in the time of the first request (which waits for it if it comes sooner). A failure here is
      // the first request's to report.
      this.summary().catch(() => {});
      if (this.socketPath) {
        this.server = new AdminServer(this, this.log);
        await this.server.listen(this.socketPath, this.socketGroup);
        this.log.info({ socket: this.socketPath }, 'admin socket listening');
      }
      this.scheduler?.start();
      if (this.archiveCfg) {
        const archiver = new LogArchiver(this.dbPath, this.archiveCfg, {
          createCheckpoint: (req) => this.createCheckpoint(req),
          createBackup: (req) => this.createBackup(req, undefined, 'log-archive'),
          openRepository: () => this.openArchiveRepository(),
          ...(this.threads ? { thread: this.threads.archive } : {}),
          replicas: this.replicaUrls.map((url) => ({
            name: redactUrl(url),
            openRepository: () => this.backups.replicaRepository(url),
            backupInto: (checkpointId: string, backupId: string) => this.backups.backupInto(url, checkpointId, backupId),
          })),
        }, this.log, this.agentMetrics.logArchive);
        await archiver.start();
        this.archiver = archiver;
      }
    } catch (err) {
      this.state = 'stopping';
      this.scheduler?.stop();
      await this.backups.abort().catch(() => {}); // the replicas' loops, started with the backups
      await this.server?.close().catch(() => {});
      this.server = null;
      await this.builder.cancel();
      await this.reader.close();
      await this.files.cancel();
      await this.threads?.pool.close();
      this.state = 'stopped';
      throw toAdminError(err);
    }
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    this.scheduler?.stop();
    // First: its last batches are shipped while the storage is open.
    await this.archiver?.stop().catch((err: unknown) => this.log.warn({ err: toAdminError(err).message }, 'log archive: stopping failed'));
    const backupStopped = this.backups.abort();
    const cancelled = this.cancelAll('the agent is stopping');
    if (cancelled > 0) this.log.info({ cancelled }, 'cancelled checkpoint work on stop');
    await this.builder.cancel();
    await this.reader.close(); // a verify in progress ends CANCELLED; its clone is removed with the leftovers below
    // The backup's stream (if any) gets its CANCELLED line before the socket closes.
    await backupStopped;
    await this.server?.close();
    this.server = null;
    await this.backups.close();
    const archiveStorage = this.archiveStorage;
    this.archiveStorage = null;
    await archiveStorage?.then((st) => st.close()).catch(() => {});
    // Whatever a cancelled build left is a staging directory: clean it now rather than at next start.
    await this.files.call('cleanLeftovers', this.checkpointDir).catch(() => {});
    await this.files.cancel();
    await this.threads?.pool.close(); // after every user: the archiver and the repositories it was lent to
    this.state = 'stopped';
  }

  async status(): Promise<AgentStatus> {
    // Totals kept by the files worker's index: no listing of every checkpoint (checkpoint-index.ts).
    const [checkpoints, disk] = await Promise.all([this.summary(), this.diskSpace()]);
    const running = this.running;
    return {
      version: AGENT_VERSION,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      dbPath: this.dbPath,
      checkpointDir: this.checkpointDir,
      socketPath: this.socketPath,
      checkpoints: { count: checkpoints.count, pinned: checkpoints.pinned, bytes: checkpoints.bytes, exclusiveBytes: checkpoints.exclusiveBytes },
      inProgress: running
        ? { kind: running.kind, id: running.id, label: running.label, trigger: running.trigger, startedAt: running.startedAt, phase: running.phase }
        : null,
      queued: this.queue.length,
      schedule: this.scheduler?.status() ?? { enabled: false, intervalMs: null, nextRunAt: null, lastRun: null },
      retention: this.retention,
      filesystem: disk,
      backup: this.backups.status(),
      logArchive: this.archiveCfg === null ? null : ((await this.archiver?.status()) ?? this.archiveStarting()),
    };
  }

  /** The archiver's status before it exists (the socket listens before the archiver starts). */
  /**
   * Each replica as the metrics show it: its snapshot queue's view (every replica, from the start) and,
   * when the log archive runs, the archiver's (the lag; the later of the two successes).
   */
  private replicaFacts(): ReplicaFacts[] {
    const archived = new Map((this.archiver?.replicaStatus() ?? []).map((r) => [r.name, r]));
    return (this.backups.status()?.replicas ?? []).map((s) => {
      const a = archived.get(s.name);
      const successes = [a?.lastSuccess, s.lastSuccess].filter((t): t is string => typeof t === 'string').map((t) => Date.parse(t));
      return {
        name: s.name,
        lagSeconds: a?.lagSeconds ?? null,
        lastSuccessAt: successes.length > 0 ? Math.max(...successes) : null,
        snapshotsPending: s.pending.length,
        newestSnapshotAt: s.newestSnapshot ? Date.parse(s.newestSnapshot.createdAt) : null,
      };
    });
  }

  private archiveStarting(): NonNullable<AgentStatus['logArchive']> {
    return {
      state: this.state === 'started' ? 'starting' : 'stopped',
      intervalMs: this.archiveCfg!.intervalMs,
      timeline: null,
      lag: { seconds: (Date.now() - this.startedAt.getTime()) / 1000, batches: 0, bytes: 0, unreadBytes: 0 },
      lastShipped: null,
      shippedSegments: 0,
      shippedBytes: 0,
      breaks: 0,
      lastBreak: null,
      lastError: null,
    };
  }

  /** The checkpoint index's totals, remembered for scrapes. */
  private async summary(): Promise<CheckpointFacts> {
    const s = await this.files.call('summary', this.checkpointDir, this.dbPath);
    this.lastFacts = s;
    return s;
  }

  /**
   * For a scrape: the index's totals (a stat and two readdirs in the files worker), or, while that
   * worker is busy with long work (a verify reading every entry, a large tree being removed), the last
   * ones it gave: a scrape must answer in milliseconds.
   */
  private async checkpointFacts(): Promise<CheckpointFacts | null> {
    if (this.state !== 'started' || (this.files.busy && this.lastFacts !== null)) return this.lastFacts;
    return this.summary().catch(() => this.lastFacts);
  }

  metrics(): Promise<string> {
    return this.agentMetrics.exposition();
  }

  listCheckpoints(): Promise<CheckpointRecord[]> {
    return this.files.call('list', this.checkpointDir, this.dbPath);
  }

  getCheckpoint(id: string): Promise<CheckpointRecord> {
    return this.files.call('describe', this.checkpointDir, this.dbPath, id);
  }

  createCheckpoint(req: CreateCheckpointRequest & { trigger?: CheckpointTrigger } = {}): Promise<CheckpointRecord> {
    if (this.state === 'stopping' || this.state === 'stopped') {
      return Promise.reject(new AdminError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping'));
    }
    let label: string | null;
    let pinned: boolean;
    try {
      label = parseLabel(req.label);
      pinned = parseOptionalBoolean(req.pin, 'pin') === true;
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(
        new AdminError(ErrorCodes.BUSY, `${this.queue.length} checkpoint requests are already waiting; try again later`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ id: newCheckpointId(), label, pinned, trigger: req.trigger ?? 'manual', resolve, reject });
      void this.pump();
    });
  }

  /** Runs queued creates one at a time; each request gets its own checkpoint. */
  private async pump(): Promise<void> {
    if (this.running) return;
    const next = this.queue.shift();
    if (!next) return;
    const op = {
      kind: 'create' as const,
      id: next.id,
      label: next.label,
      trigger: next.trigger,
      startedAt: new Date().toISOString(),
      phase: 'checking free space',
      cancelled: false,
      // Once built, the checkpoint exists and is answered as created: a cancel no longer applies.
      built: false,
    };
    this.running = op;
    try {
      next.resolve(await this.agentMetrics.withMetrics('checkpoint', () => this.runCreate(next, op)));
    } catch (err) {
      next.reject(err);
    } finally {
      this.running = null;
      void this.pump();
    }
  }

  /** One create, from the free-space guard to the answer; rejects with CANCELLED if it was cancelled. */
  private async runCreate(next: QueuedCreate, op: OperationStatus & { cancelled: boolean; built: boolean }): Promise<CheckpointRecord> {
    try {
      await this.guardFreeSpace();
      if (op.cancelled) throw new AdminError(ErrorCodes.CANCELLED, `checkpoint ${next.id} was cancelled`);
      op.phase = 'linking';
      const built = await this.builder.call('build', {
        dbPath: this.dbPath,
        checkpointDir: this.checkpointDir,
        id: next.id,
        label: next.label,
        pinned: next.pinned,
        trigger: next.trigger,
      });
      op.built = true;
      op.phase = 'applying retention';
      const record = await this.indexAndRetire(built);
      this.log.info({ checkpoint: record.id, files: record.files, bytes: record.bytes, trigger: record.trigger, ms: Date.now() - Date.parse(op.startedAt) }, 'checkpoint created');
      this.archiver?.checkpointCreated(record, Date.now());
      return record;
    } catch (err) {
      const e = op.cancelled ? new AdminError(ErrorCodes.CANCELLED, `checkpoint ${next.id} was cancelled`) : toAdminError(err);
      if (e.code === ErrorCodes.CANCELLED) {
        // The build worker was terminated mid-way: its staging directory is the only trace.
        await this.files.call('removeTree', path.join(this.checkpointDir, `.staging-${next.id}`)).catch(() => {});
        // ...unless the cancel raced the end of the build and the checkpoint was already renamed into place: CANCELLED keeps nothing.
        await this.removeCheckpoints([next.id]).catch(() => {});
      }
      this.log.warn({ checkpoint: next.id, code: e.code, err: e.message }, 'checkpoint failed');
      throw e;
    }
  }

  /**
   * After a build: the files worker indexes the new checkpoint, applies retention in memory and renames
   * what it removes aside (no longer listed) in one trip; the removed trees are deleted after the answer,
   * queued in the same worker, so any later request sees them gone.
   */
  private async indexAndRetire(built: BuiltCheckpoint): Promise<CheckpointRecord> {
    try {
      const disk = this.retention.minFreeBytes > 0 ? await this.diskSpace() : null;
      const r = await this.files.call('addedAndRetire', this.checkpointDir, this.dbPath, built, {
        policy: this.retention,
        now: Date.now(),
        disk,
        protect: this.protectedCheckpoints(),
      });
      if (r.error !== null) this.log.error({ err: r.error }, 'retention after create failed');
      for (const x of r.removed) this.log.info({ checkpoint: x.id, reason: x.reason, freedBytes: x.freedBytes }, 'checkpoint pruned');
      if (r.removed.length > 0) {
        const doomed = r.removed.map((x) => x.doomed);
        // Queued now, before the answer goes out: every request after this one finds them gone.
        this.files
          .call('removeRetired', this.checkpointDir, doomed)
          .catch((err: unknown) => this.log.warn({ doomed, err: toAdminError(err).message }, 'removing pruned checkpoints failed; the next start removes them'));
      }
      return r.record;
    } catch (err) {
      // The checkpoint is made and durable: answer with it even if the index could not take it in.
      this.log.error({ err: toAdminError(err).message }, 'retention after create failed');
      return this.getCheckpoint(built.meta.id);
    }
  }

  /**
   * What retention keeps whatever its policy says (as if pinned): the checkpoint a backup reads, and
   * those a replica still waits for (at most backup.replicaPendingSnapshots each).
   */
  private protectedCheckpoints(): string[] {
    const inUse = this.backups.checkpointInUse;
    return [...(inUse !== null ? [inUse] : []), ...this.backups.checkpointsHeldForReplicas];
  }

  /** Takes checkpoints out of the listing (renamed aside), then removes their trees. */
  private async removeCheckpoints(ids: string[]): Promise<{ id: string; freedBytes: number }[]> {
    const retired = await this.files.call('retire', this.checkpointDir, this.dbPath, ids);
    await this.files.call('removeRetired', this.checkpointDir, retired.map((x) => x.doomed));
    return retired;
  }

  /**
   * Before a create: below the minimum free space, prune oldest unpinned checkpoints (the policy's
   * free-space rule); still below, refuse rather than fill the disk the node lives on.
   */
  private async guardFreeSpace(): Promise<void> {
    const min = this.retention.minFreeBytes;
    if (min <= 0) return;
    let disk = await this.diskSpace();
    if (disk.freeBytes >= min) return;
    await this.prune({});
    disk = await this.diskSpace();
    if (disk.freeBytes < min) {
      throw new AdminError(
        ErrorCodes.INSUFFICIENT_SPACE,
        `only ${formatBytes(disk.freeBytes)} free on the checkpoint filesystem, below the minimum of ${formatBytes(min)}; free space or unpin old checkpoints`,
      );
    }
  }

  private diskSpace(): Promise<{ freeBytes: number; totalBytes: number }> {
    // The checkpoint directory may not exist before the first checkpoint: its parent tells the same.
    return diskSpace(this.checkpointDir).catch(() => diskSpace(path.dirname(this.checkpointDir)));
  }

  async deleteCheckpoint(id: string, options: DeleteCheckpointOptions = {}): Promise<DeleteResult> {
    const record = await this.getCheckpoint(id);
    if (id === this.backups.checkpointInUse) {
      throw new AdminError(ErrorCodes.BUSY, `checkpoint ${id} is being backed up; try again when the backup is over (or cancel it)`);
    }
    const replica = this.backups.replicaReading(id);
    if (replica !== null) {
      throw new AdminError(ErrorCodes.BUSY, `checkpoint ${id} is being backed up into the replica ${replica}; try again when that is over`);
    }
    if (record.pinned && !options.force) {
      throw new AdminError(ErrorCodes.CHECKPOINT_PINNED, `checkpoint ${id} is pinned; unpin it or use --force`);
    }
    return this.agentMetrics.withMetrics('checkpoint_delete', async () => {
      const removed = await this.removeCheckpoints([id]);
      if (removed.length === 0) throw new AdminError(ErrorCodes.NOT_FOUND, `no checkpoint ${id}`);
      const freedBytes = removed[0]!.freedBytes;
      this.log.info({ checkpoint: id, freedBytes, forced: record.pinned }, 'checkpoint deleted');
      return { deleted: id, freedBytes };
    });
  }

  async pin(id: string): Promise<CheckpointRecord> {
    return this.files.call('setPinned', this.checkpointDir, this.dbPath, id, true);
  }

  async unpin(id: string): Promise<CheckpointRecord> {
    return this.files.call('setPinned', this.checkpointDir, this.dbPath, id, false);
  }

  prune(req: PruneRequest = {}): Promise<PruneResult> {
    // A dry run changes nothing: not a prune the metrics count.
    return req.dryRun === true ? this.runPrune(true) : this.agentMetrics.withMetrics('checkpoint_prune', () => this.runPrune(false));
  }

  private async runPrune(dryRun: boolean): Promise<PruneResult> {
    const [records, disk] = await Promise.all([this.listCheckpoints(), this.diskSpace()]);
    const protect = new Set(this.protectedCheckpoints());
    const outcome = applyPolicy(
      // The checkpoint a backup is reading, and those a replica waits for, count as pinned meanwhile.
      records.map((r) => ({ id: r.id, createdAt: new Date(r.createdAt), pinned: r.pinned || protect.has(r.id), exclusiveBytes: r.exclusiveBytes })),
      this.retention,
      new Date(),
      disk,
    );
    const byId = new Map(records.map((r) => [r.id, r]));
    let freedBytes = 0;
    const removed = [];
    if (dryRun) {
      for (const decision of outcome.remove) {
        freedBytes += byId.get(decision.id)?.exclusiveBytes ?? 0;
        removed.push(decision);
      }
    } else {
      // One by one, as before: each freedBytes counts what removing the ones before it made exclusive.
      for (const decision of outcome.remove) {
        const r = await this.removeCheckpoints([decision.id]);
        if (r.length === 0) continue; // gone meanwhile
        freedBytes += r[0]!.freedBytes;
        removed.push(decision);
        this.log.info({ checkpoint: decision.id, reason: decision.reason, freedBytes: r[0]!.freedBytes }, 'checkpoint pruned');
      }
    }
    return { dryRun, removed, kept: outcome.keep, freedBytes };
  }

  async verify(id: string): Promise<VerifyReport> {
    const record = await this.getCheckpoint(id);
    return this.agentMetrics.withMetrics('checkpoint_verify', () => this.runVerify(id, record), (r) => (r.ok ? null : ErrorCodes.CORRUPT));
  }

  private async runVerify(id: string, record: CheckpointRecord): Promise<VerifyReport> {
    const report = await verifyCheckpoint(id, record.path, this.checkpointDir, {
      clone: (src, dst) => this.reader.call('clone', src, dst),
      removeTree: (p) => this.reader.call('removeTree', p),
      checkFiles: (dir) => this.reader.call('checkFiles', dir),
    });
    this.log.info({ checkpoint: id, ok: report.ok, entries: report.entries, error: report.error?.message }, 'checkpoint verified');
    return report;
  }

  async cancel(): Promise<CancelResult> {
    const cancelled = this.cancelAll('cancelled by request');
    if (this.running?.cancelled) await this.builder.cancel();
    this.log.info({ cancelled }, 'checkpoint work cancelled');
    return { cancelled };
  }

  /** Rejects every queued create and marks the running one cancelled (its worker is terminated by the caller). */
  private cancelAll(why: string): number {
    let n = 0;
    for (const q of this.queue.splice(0)) {
      q.reject(new AdminError(ErrorCodes.CANCELLED, `checkpoint ${q.id} was cancelled: ${why}`));
      n++;
    }
    if (this.running && !this.running.cancelled && !this.running.built) {
      this.running.cancelled = true;
      n++;
    }
    return n;
  }

  // ---- remote backups (agent/backup/backup-manager.ts) ----

  async createBackup(req: CreateBackupRequest = {}, onProgress?: (p: BackupProgress) => void, by: 'manual' | 'log-archive' = 'manual'): Promise<BackupRecord> {
    const record = await this.backups.createBackup(req, onProgress, by);
    const archiver = this.archiver;
    if (archiver) {
      // A backup of a checkpoint taken during the current timeline becomes one of its bases.
      const checkpoint = await this.getCheckpoint(record.checkpoint.id).catch(() => null);
      if (checkpoint) await archiver.backupCreated(record, checkpoint.path);
    }
    return record;
  }

  /** The archiver's repository: its own storage handle, the backups' config and keys. */
  private openArchiveRepository(): Promise<Repository> {
    return this.openArchiveStorage().then((storage) => this.backups.repositoryOn(storage));
  }

  /** The archiver's own handle on the repository's storage (opened on first use, closed at stop). */
  private openArchiveStorage(): Promise<Storage> {
    if (!this.archiveStorage) {
      const b = this.backupOptions!;
      const opening = import('./storage/open-storage.js').then(({ openStorage }) =>
        openStorage(b.repository, { logger: this.log, ...(b.s3 ? { s3: b.s3 } : {}) }),
      );
      this.archiveStorage = opening;
      opening.catch(() => {
        if (this.archiveStorage === opening) this.archiveStorage = null;
      });
    }
    return this.archiveStorage;
  }

  cancelBackup(): Promise<CancelResult> {
    return this.backups.cancelBackup();
  }

  /** In-process callers' requests pass the socket's checks too (parseCopyBackups). */
  copyBackups(req: CopyBackupsRequest, onProgress?: (p: CopyProgress | ArchiveCopyProgress) => void): Promise<CopySummary> {
    return this.backups.copyBackups(parseCopyBackups(req), onProgress);
  }

  cancelCopy(): Promise<CancelResult> {
    return this.backups.cancelCopy();
  }

  listBackups(): Promise<BackupRecord[]> {
    return this.backups.listBackups();
  }

  getBackup(id: string): Promise<BackupRecord> {
    return this.backups.getBackup(id);
  }

  pruneBackups(req: PruneRequest = {}): Promise<BackupPruneResult> {
    return this.backups.pruneBackups(req);
  }

  verifyBackups(req: VerifyBackupsRequest = {}): Promise<BackupVerifyReport> {
    return this.backups.verifyBackups(req);
  }

  backupTimeline(): Promise<LogArchiveTimelines> {
    return this.backups.timeline();
  }

  backupChanges(req: ChangesRequest = {}, onBatch?: (b: ChangeBatch) => void | Promise<void>): Promise<ChangesSummary> {
    return this.backups.changes(req, onBatch ?? (() => {}));
  }
}

/**
 * backup.replicas: repository URLs (file:// or s3://, as the primary's), each checked now (no I/O) so
 * that a bad one stops the node at start; never the primary itself, never twice. With the log archive
 * off, a replica receives the snapshots alone.
 */
function parseReplicas(replicas: unknown, primary: string): string[] {
  if (replicas === undefined || replicas === null) return [];
  const bad = (m: string) => new AdminError(ErrorCodes.INVALID_ARGUMENT, m);
  if (!Array.isArray(replicas) || replicas.some((r) => typeof r !== 'string' || r === '')) throw bad('backup.replicas must be a list of repository URLs');
  const urls = replicas as string[];
  for (const url of urls) {
    parseStorageUrl(url);
    if (url === primary) throw bad(`backup.replicas names the primary repository ${redactUrl(url)}`);
  }
  if (new Set(urls).size !== urls.length) throw bad('backup.replicas names a repository twice');
  return urls;
}
