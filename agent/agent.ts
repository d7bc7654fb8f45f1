import path from 'node:path';
import { pino, type Logger } from 'pino';
import type {
  AgentStatus,
  BackupInProgress,
  BackupProgress,
  BackupPruneResult,
  BackupRecord,
  BackupStatus,
  BackupVerifyReport,
  CancelResult,
  CheckpointRecord,
  CheckpointTrigger,
  CreateBackupRequest,
  CreateCheckpointRequest,
  DeleteResult,
  OperationStatus,
  PruneRequest,
  PruneResult,
  RetentionPolicy,
  VerifyBackupsRequest,
  VerifyReport,
} from '../shared/api.js';
import { isBackupId, isCheckpointId } from '../shared/api.js';
import { AdminError, ErrorCodes, toAdminError } from '../shared/errors.js';
import type { Agent, AgentOptions, BackupOptions } from './agent-types.js';
import type { Repository } from './backup/repository/repository.js';
import type { Snapshot } from './backup/repository/format.js';
import type { Storage } from './backup/storage/storage.js';
import { newCheckpointId } from './checkpoint/checkpoint-id.js';
import { FsWorkerClient } from './checkpoint/fs-worker-client.js';
import { verifyCheckpoint } from './checkpoint/verify-checkpoint.js';
import { diskSpace } from './fs/disk-space.js';
import { applyPolicy, parseRetention } from './retention/apply-policy.js';
import { Scheduler } from './scheduler.js';
import { AdminServer } from './admin-server/admin-server.js';
import { formatBytes } from './format-bytes.js';

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

const MAX_LABEL_LENGTH = 200;

/** Labels are shown in tables and logs: one line, printable, bounded. */
export function parseLabel(label: unknown): string | null {
  if (label === undefined || label === null) return null;
  if (typeof label !== 'string') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'label must be a string');
  if (label.length > MAX_LABEL_LENGTH) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `label is longer than ${MAX_LABEL_LENGTH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(label)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'label must not contain control characters');
  return label.length === 0 ? null : label;
}

/** The backup options, checked and with defaults. */
interface BackupConfig {
  repository: string;
  s3: NonNullable<BackupOptions['s3']> | undefined;
  concurrency: number;
  bandwidthLimit: number | null;
  cacheDir: string;
  retention: NonNullable<BackupOptions['retention']>;
  /** null: no automatic backups. */
  promote: { minIntervalMs: number | null } | null;
}

function parseBackupOptions(o: BackupOptions, checkpointDir: string): BackupConfig {
  const bad = (message: string) => new AdminError(ErrorCodes.INVALID_ARGUMENT, message);
  if (typeof o !== 'object' || o === null) throw bad('backup options must be an object');
  if (typeof o.repository !== 'string' || o.repository === '') {
    throw bad('backup.repository is required: file:///path or s3://bucket/prefix');
  }
  let concurrency = 4;
  if (o.concurrency !== undefined) {
    if (!Number.isSafeInteger(o.concurrency) || o.concurrency < 1 || o.concurrency > 64) {
      throw bad(`backup.concurrency must be a whole number from 1 to 64, got ${String(o.concurrency)}`);
    }
    concurrency = o.concurrency;
  }
  let bandwidthLimit: number | null = null;
  if (o.bandwidthLimit !== undefined && o.bandwidthLimit !== null) {
    if (typeof o.bandwidthLimit !== 'number' || !Number.isFinite(o.bandwidthLimit) || o.bandwidthLimit <= 0) {
      throw bad(`backup.bandwidthLimit must be a positive number of bytes per second, got ${String(o.bandwidthLimit)}`);
    }
    bandwidthLimit = o.bandwidthLimit;
  }
  const retention: BackupConfig['retention'] = {};
  for (const key of ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly'] as const) {
    const value = o.retention?.[key];
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value < 0) throw bad(`backup.retention.${key} must be a non-negative integer, got ${String(value)}`);
    retention[key] = value;
  }
  let promote: BackupConfig['promote'] = null;
  if (o.promote) {
    const min = o.promote.minIntervalMs;
    if (min !== undefined && (typeof min !== 'number' || !Number.isFinite(min) || min < 0)) {
      throw bad(`backup.promote.minIntervalMs must be a non-negative number of milliseconds, got ${String(min)}`);
    }
    const enabled = o.promote.scheduled === true || (o.promote.scheduled === undefined && min !== undefined);
    if (enabled) promote = { minIntervalMs: min ?? null };
  }
  return {
    repository: o.repository,
    s3: o.s3 ? { ...o.s3 } : undefined,
    concurrency,
    bandwidthLimit,
    cacheDir: path.resolve(o.cacheDir ?? path.join(path.dirname(checkpointDir), 'cache')),
    retention,
    promote,
  };
}

/** A URL as it may be shown: never a user:password part (openStorage refuses those anyway). */
function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/).*@/i, '$1***@');
}

/** The repository URL's syntax, at start: no I/O, and no AWS SDK (open-storage loads it only to open an s3:// storage). */
async function checkRepositoryUrl(cfg: BackupConfig): Promise<void> {
  const { parseStorageUrl } = await import('./backup/storage/open-storage.js');
  parseStorageUrl(cfg.repository);
}

function backupRecordOf(s: Snapshot): BackupRecord {
  return { id: s.id, createdAt: s.createdAt, pinned: s.pinned, checkpoint: s.checkpoint, files: s.files, bytes: s.bytes };
}

/** The backup engine, loaded on first use: it pulls in the S3 SDK, which an agent without backups never needs. */
interface BackupEngine {
  openStorage: (typeof import('./backup/storage/open-storage.js'))['openStorage'];
  Repository: (typeof import('./backup/repository/repository.js'))['Repository'];
  HashCache: (typeof import('./backup/hash-cache.js'))['HashCache'];
  backupCheckpoint: (typeof import('./backup/backup-checkpoint.js'))['backupCheckpoint'];
  verifyRepository: (typeof import('./backup/verify-repository.js'))['verifyRepository'];
  pruneRepository: (typeof import('./backup/prune-repository.js'))['pruneRepository'];
}

let backupEngine: Promise<BackupEngine> | null = null;

function loadBackupEngine(): Promise<BackupEngine> {
  backupEngine ??= Promise.all([
    import('./backup/storage/open-storage.js'),
    import('./backup/repository/repository.js'),
    import('./backup/hash-cache.js'),
    import('./backup/backup-checkpoint.js'),
    import('./backup/verify-repository.js'),
    import('./backup/prune-repository.js'),
  ]).then(([storage, repository, cache, backup, verify, prune]) => ({
    openStorage: storage.openStorage,
    Repository: repository.Repository,
    HashCache: cache.HashCache,
    backupCheckpoint: backup.backupCheckpoint,
    verifyRepository: verify.verifyRepository,
    pruneRepository: prune.pruneRepository,
  }));
  return backupEngine;
}

/** The running backup. */
interface BackupRun {
  controller: AbortController;
  state: BackupInProgress;
  /** Settles (never rejects) once the backup is over. */
  done: Promise<void>;
}

/** With a backup running, the stream gets its last progress again at least this often (keeps clients' idle timers and bars alive). */
const BACKUP_HEARTBEAT_MS = 1000;

class CheckpointAgent implements Agent {
  private readonly dbPath: string;
  private readonly checkpointDir: string;
  private readonly socketPath: string | null;
  private readonly retention: RetentionPolicy;
  private readonly maxQueued: number;
  private readonly log: Logger;
  /** Builds checkpoints, one at a time; terminated to cancel. */
  private readonly builder = new FsWorkerClient();
  /** Everything else (list, pin, delete, clone): answers while a build runs. */
  private readonly files = new FsWorkerClient();
  private readonly queue: QueuedCreate[] = [];
  private running: (OperationStatus & { cancelled: boolean; built: boolean }) | null = null;
  private readonly scheduler: Scheduler | null;
  private server: AdminServer | null = null;
  private readonly startedAt = new Date();
  private state: 'new' | 'started' | 'stopping' | 'stopped' = 'new';
  private readonly socketGroup: string | number | null;
  private readonly backup: BackupConfig | null;
  /** The backup storage, opened on first use (shared by every backup operation; each opens its own Repository). */
  private storage: Promise<Storage> | null = null;
  private backupRun: BackupRun | null = null;
  private lastBackup: BackupStatus['lastBackup'] = null;
  /** When the last successful backup ended (for promote.minIntervalMs). */
  private lastBackupOkAt: number | null = null;
  /** A checkpoint being backed up: retention keeps it and delete refuses it until the backup is over. */
  private backingUp: string | null = null;
  private pruningBackups = false;

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
    this.backup = options.backup ? parseBackupOptions(options.backup, this.checkpointDir) : null;
    this.scheduler = options.schedule
      ? new Scheduler(options.schedule, async () => {
          const r = await this.createCheckpoint({ trigger: 'scheduled', label: 'scheduled' });
          this.promote(r);
          return r.id;
        }, this.log)
      : null;
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'agent already started');
    this.state = 'started';
    try {
      // Only the URL's syntax (no I/O): a bad one should stop the node now, not fail the first backup.
      if (this.backup) await checkRepositoryUrl(this.backup);
      const removed = await this.files.call('cleanLeftovers', this.checkpointDir);
      if (removed.length > 0) this.log.warn({ removed }, 'removed leftovers of interrupted checkpoint work');
      if (this.socketPath) {
        this.server = new AdminServer(this, this.log);
        await this.server.listen(this.socketPath, this.socketGroup);
        this.log.info({ socket: this.socketPath }, 'admin socket listening');
      }
      this.scheduler?.start();
    } catch (err) {
      this.state = 'stopping';
      await this.server?.close().catch(() => {});
      this.server = null;
      await this.builder.cancel();
      await this.files.cancel();
      this.state = 'stopped';
      throw toAdminError(err);
    }
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    this.scheduler?.stop();
    const backup = this.backupRun;
    if (backup) {
      backup.controller.abort();
      this.log.info({ checkpoint: backup.state.checkpointId }, 'cancelling the running backup on stop');
    }
    const cancelled = this.cancelAll('the agent is stopping');
    if (cancelled > 0) this.log.info({ cancelled }, 'cancelled checkpoint work on stop');
    await this.builder.cancel();
    // The backup's stream (if any) gets its CANCELLED line before the socket closes.
    await backup?.done;
    await this.server?.close();
    this.server = null;
    const storage = this.storage;
    this.storage = null;
    await storage?.then((s) => s.close()).catch(() => {});
    // Whatever a cancelled build left is a staging directory: clean it now rather than at next start.
    await this.files.call('cleanLeftovers', this.checkpointDir).catch(() => {});
    await this.files.cancel();
    this.state = 'stopped';
  }

  async status(): Promise<AgentStatus> {
    const [records, disk] = await Promise.all([this.listCheckpoints(), this.diskSpace()]);
    const running = this.running;
    return {
      version: AGENT_VERSION,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      dbPath: this.dbPath,
      checkpointDir: this.checkpointDir,
      socketPath: this.socketPath,
      checkpoints: {
        count: records.length,
        pinned: records.filter((r) => r.pinned).length,
        bytes: records.reduce((s, r) => s + r.bytes, 0),
        exclusiveBytes: records.reduce((s, r) => s + r.exclusiveBytes, 0),
      },
      inProgress: running
        ? { kind: running.kind, id: running.id, label: running.label, trigger: running.trigger, startedAt: running.startedAt, phase: running.phase }
        : null,
      queued: this.queue.length,
      schedule: this.scheduler?.status() ?? { enabled: false, intervalMs: null, nextRunAt: null, lastRun: null },
      retention: this.retention,
      filesystem: disk,
      backup: this.backup
        ? {
            repository: redactUrl(this.backup.repository),
            inProgress: this.backupRun ? { ...this.backupRun.state } : null,
            lastBackup: this.lastBackup,
          }
        : null,
    };
  }

  listCheckpoints(): Promise<CheckpointRecord[]> {
    return this.files.call('list', this.checkpointDir);
  }

  getCheckpoint(id: string): Promise<CheckpointRecord> {
    return this.files.call('describe', this.checkpointDir, id);
  }

  createCheckpoint(req: CreateCheckpointRequest & { trigger?: CheckpointTrigger } = {}): Promise<CheckpointRecord> {
    if (this.state === 'stopping' || this.state === 'stopped') {
      return Promise.reject(new AdminError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping'));
    }
    let label: string | null;
    try {
      label = parseLabel(req.label);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(
        new AdminError(ErrorCodes.BUSY, `${this.queue.length} checkpoint requests are already waiting; try again later`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ id: newCheckpointId(), label, pinned: req.pin === true, trigger: req.trigger ?? 'manual', resolve, reject });
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
      await this.guardFreeSpace();
      if (op.cancelled) throw new AdminError(ErrorCodes.CANCELLED, `checkpoint ${next.id} was cancelled`);
      op.phase = 'linking';
      const record = await this.builder.call('create', {
        dbPath: this.dbPath,
        checkpointDir: this.checkpointDir,
        id: next.id,
        label: next.label,
        pinned: next.pinned,
        trigger: next.trigger,
      });
      op.built = true;
      this.log.info({ checkpoint: record.id, files: record.files, bytes: record.bytes, trigger: record.trigger, ms: Date.now() - Date.parse(op.startedAt) }, 'checkpoint created');
      op.phase = 'applying retention';
      await this.prune({}).catch((err: unknown) => this.log.error({ err: toAdminError(err).message }, 'retention after create failed'));
      next.resolve(record);
    } catch (err) {
      const e = op.cancelled ? new AdminError(ErrorCodes.CANCELLED, `checkpoint ${next.id} was cancelled`) : toAdminError(err);
      if (e.code === ErrorCodes.CANCELLED) {
        // The build worker was terminated mid-way: its staging directory is the only trace.
        await this.files.call('removeTree', path.join(this.checkpointDir, `.staging-${next.id}`)).catch(() => {});
        // ...unless the cancel raced the end of the build and the checkpoint was already renamed into place: CANCELLED keeps nothing.
        await this.files.call('delete', this.checkpointDir, next.id).catch(() => {});
      }
      this.log.warn({ checkpoint: next.id, code: e.code, err: e.message }, 'checkpoint failed');
      next.reject(e);
    } finally {
      this.running = null;
      void this.pump();
    }
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

  async deleteCheckpoint(id: string, options: { force?: boolean } = {}): Promise<DeleteResult> {
    const record = await this.getCheckpoint(id);
    if (id === this.backingUp) {
      throw new AdminError(ErrorCodes.BUSY, `checkpoint ${id} is being backed up; try again when the backup is over (or cancel it)`);
    }
    if (record.pinned && !options.force) {
      throw new AdminError(ErrorCodes.CHECKPOINT_PINNED, `checkpoint ${id} is pinned; unpin it or use --force`);
    }
    const { freedBytes } = await this.files.call('delete', this.checkpointDir, id);
    this.log.info({ checkpoint: id, freedBytes, forced: record.pinned }, 'checkpoint deleted');
    return { deleted: id, freedBytes };
  }

  async pin(id: string): Promise<CheckpointRecord> {
    return this.files.call('setPinned', this.checkpointDir, id, true);
  }

  async unpin(id: string): Promise<CheckpointRecord> {
    return this.files.call('setPinned', this.checkpointDir, id, false);
  }

  async prune(req: PruneRequest = {}): Promise<PruneResult> {
    const dryRun = req.dryRun === true;
    const [records, disk] = await Promise.all([this.listCheckpoints(), this.diskSpace()]);
    const outcome = applyPolicy(
      // The checkpoint a backup is reading counts as pinned until the backup is over.
      records.map((r) => ({ id: r.id, createdAt: new Date(r.createdAt), pinned: r.pinned || r.id === this.backingUp, exclusiveBytes: r.exclusiveBytes })),
      this.retention,
      new Date(),
      disk,
    );
    const byId = new Map(records.map((r) => [r.id, r]));
    let freedBytes = 0;
    const removed = [];
    for (const decision of outcome.remove) {
      if (dryRun) {
        freedBytes += byId.get(decision.id)?.exclusiveBytes ?? 0;
        removed.push(decision);
        continue;
      }
      try {
        const r = await this.files.call('delete', this.checkpointDir, decision.id);
        freedBytes += r.freedBytes;
        removed.push(decision);
        this.log.info({ checkpoint: decision.id, reason: decision.reason, freedBytes: r.freedBytes }, 'checkpoint pruned');
      } catch (err) {
        if (toAdminError(err).code !== ErrorCodes.NOT_FOUND) throw err;
      }
    }
    return { dryRun, removed, kept: outcome.keep, freedBytes };
  }

  async verify(id: string): Promise<VerifyReport> {
    const record = await this.getCheckpoint(id);
    const report = await verifyCheckpoint(id, record.path, this.checkpointDir, {
      clone: (src, dst) => this.files.call('clone', src, dst),
      removeTree: (p) => this.files.call('removeTree', p),
      checkFiles: (dir) => this.files.call('checkFiles', dir),
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

  // ---- remote backups ----

  private requireBackup(): BackupConfig {
    if (!this.backup) {
      throw new AdminError(ErrorCodes.BACKUP_NOT_CONFIGURED, 'this agent has no backup repository configured (AgentOptions.backup; the example node: --backup-repo)');
    }
    return this.backup;
  }

  private openStorage(cfg: BackupConfig): Promise<Storage> {
    if (!this.storage) {
      const opening = loadBackupEngine().then((e) =>
        e.openStorage(cfg.repository, { logger: this.log, ...(cfg.s3 ? { s3: cfg.s3 } : {}) }),
      );
      this.storage = opening;
      // A failed open is not kept: the next operation tries again.
      opening.catch(() => {
        if (this.storage === opening) this.storage = null;
      });
    }
    return this.storage;
  }

  /** A Repository of its own for each operation (its index is per-operation state). */
  private async openRepository(cfg: BackupConfig, create: boolean): Promise<Repository> {
    const [engine, storage] = await Promise.all([loadBackupEngine(), this.openStorage(cfg)]);
    return engine.Repository.open(storage, { create });
  }

  /** Null when there is no repository yet (nothing was ever backed up). */
  private async openExistingRepository(cfg: BackupConfig): Promise<Repository | null> {
    try {
      return await this.openRepository(cfg, false);
    } catch (err) {
      if (toAdminError(err).code === ErrorCodes.REPOSITORY_NOT_FOUND) return null;
      throw err;
    }
  }

  createBackup(req: CreateBackupRequest = {}, onProgress?: (p: BackupProgress) => void): Promise<BackupRecord> {
    return this.startBackup(req, onProgress, 'manual');
  }

  /** Claims the one backup slot synchronously (so that a second request is BUSY at once), then runs. */
  private startBackup(req: CreateBackupRequest, onProgress: ((p: BackupProgress) => void) | undefined, trigger: 'manual' | 'scheduled'): Promise<BackupRecord> {
    let cfg: BackupConfig;
    try {
      cfg = this.requireBackup();
      if (this.state === 'stopping' || this.state === 'stopped') throw new AdminError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping');
      if (req.checkpointId !== undefined && !isCheckpointId(req.checkpointId)) {
        throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a checkpoint id: ${JSON.stringify(req.checkpointId)} (expected like 20261122T210045123Z-a1b2)`);
      }
      if (req.pin !== undefined && typeof req.pin !== 'boolean') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'pin must be true or false');
      const running = this.backupRun;
      if (running) {
        const of = running.state.checkpointId ? ` of checkpoint ${running.state.checkpointId}` : '';
        throw new AdminError(ErrorCodes.BUSY, `a backup${of} is already running (since ${running.state.startedAt}); try again later or cancel it`);
      }
      if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is being pruned; try again later');
    } catch (err) {
      return Promise.reject(err);
    }
    const run: BackupRun = {
      controller: new AbortController(),
      state: {
        phase: 'starting',
        checkpointId: req.checkpointId ?? null,
        startedAt: new Date().toISOString(),
        filesDone: 0,
        filesTotal: 0,
        bytesDone: 0,
        bytesTotal: 0,
        bytesRead: 0,
        bytesUploaded: 0,
        bytesPerSecond: 0,
      },
      done: Promise.resolve(),
    };
    this.backupRun = run;
    const result = this.runBackup(cfg, req, run, onProgress, trigger).finally(() => {
      if (this.backupRun === run) this.backupRun = null;
    });
    run.done = result.then(
      () => {},
      () => {},
    );
    return result;
  }

  private async runBackup(
    cfg: BackupConfig,
    req: CreateBackupRequest,
    run: BackupRun,
    onProgress: ((p: BackupProgress) => void) | undefined,
    trigger: 'manual' | 'scheduled',
  ): Promise<BackupRecord> {
    const signal = run.controller.signal;
    const state = run.state;
    const cancelled = () => new AdminError(ErrorCodes.CANCELLED, `backup${state.checkpointId ? ` of checkpoint ${state.checkpointId}` : ''} was cancelled`);
    let last: BackupProgress | null = null;
    let lastSentAt = 0;
    const send = (p: BackupProgress) => {
      lastSentAt = Date.now();
      try {
        onProgress?.(p);
      } catch (err) {
        this.log.warn({ err: toAdminError(err).message }, 'backup progress listener failed');
      }
    };
    const heartbeat = setInterval(() => {
      if (last && Date.now() - lastSentAt >= BACKUP_HEARTBEAT_MS) send({ ...last });
    }, BACKUP_HEARTBEAT_MS / 2);
    heartbeat.unref();
    try {
      const engine = await loadBackupEngine();
      let checkpoint: CheckpointRecord;
      if (req.checkpointId !== undefined) {
        this.backingUp = req.checkpointId;
        checkpoint = await this.getCheckpoint(req.checkpointId);
      } else {
        const newest = (await this.listCheckpoints()).at(-1);
        if (newest) {
          this.backingUp = newest.id;
          // Again, now that retention keeps it: it may have been pruned between the list and now.
          checkpoint = await this.getCheckpoint(newest.id);
        } else {
          state.phase = 'checkpointing';
          const created = await this.createCheckpoint({ label: 'backup' });
          this.backingUp = created.id;
          checkpoint = await this.getCheckpoint(created.id);
        }
      }
      state.checkpointId = checkpoint.id;
      state.phase = 'starting';
      if (signal.aborted) throw cancelled();
      const repo = await this.openRepository(cfg, true);
      if (signal.aborted) throw cancelled();
      const cache = engine.HashCache.load(path.join(cfg.cacheDir, `hash-cache-${repo.config.id}.json`));
      this.log.info({ checkpoint: checkpoint.id, repository: redactUrl(cfg.repository), trigger }, 'backup started');
      const record = await engine.backupCheckpoint({
        repo,
        checkpoint,
        cache,
        concurrency: cfg.concurrency,
        bandwidthLimit: cfg.bandwidthLimit,
        signal,
        pinned: req.pin === true,
        onProgress: (p) => {
          Object.assign(state, p);
          last = p;
          send(p);
        },
      });
      this.lastBackup = { at: new Date().toISOString(), ok: true, id: record.id, error: null };
      this.lastBackupOkAt = Date.now();
      this.log.info(
        {
          backup: record.id,
          checkpoint: checkpoint.id,
          trigger,
          files: record.files,
          bytes: record.bytes,
          bytesRead: record.bytesRead,
          bytesUploaded: record.bytesUploaded,
          ms: record.durationMs,
        },
        'backup created',
      );
      return record;
    } catch (err) {
      const e = signal.aborted ? cancelled() : toAdminError(err);
      this.lastBackup = { at: new Date().toISOString(), ok: false, id: null, error: `${e.code}: ${e.message}` };
      const level = e.code === ErrorCodes.CANCELLED ? 'info' : trigger === 'scheduled' ? 'error' : 'warn';
      this.log[level]({ checkpoint: state.checkpointId, trigger, code: e.code, err: e.message }, 'backup failed');
      throw e;
    } finally {
      clearInterval(heartbeat);
      this.backingUp = null;
    }
  }

  /** After a scheduled checkpoint: back it up if options.backup.promote says so. Never fails the checkpoint. */
  private promote(checkpoint: CheckpointRecord): void {
    const promote = this.backup?.promote;
    if (!promote || this.state !== 'started') return;
    if (promote.minIntervalMs !== null && this.lastBackupOkAt !== null && Date.now() - this.lastBackupOkAt < promote.minIntervalMs) {
      this.log.debug({ checkpoint: checkpoint.id }, 'scheduled backup skipped: the last backup is recent enough');
      return;
    }
    if (this.backupRun) {
      this.log.warn({ checkpoint: checkpoint.id }, 'scheduled backup skipped: another backup is running');
      return;
    }
    // Failures are logged (and shown in status) by runBackup.
    this.startBackup({ checkpointId: checkpoint.id }, undefined, 'scheduled').catch(() => {});
  }

  async cancelBackup(): Promise<CancelResult> {
    this.requireBackup();
    const run = this.backupRun;
    if (!run) return { cancelled: 0 };
    const first = !run.controller.signal.aborted;
    run.controller.abort();
    this.log.info({ checkpoint: run.state.checkpointId }, 'backup cancelled by request');
    await run.done;
    return { cancelled: first ? 1 : 0 };
  }

  async listBackups(): Promise<BackupRecord[]> {
    const cfg = this.requireBackup();
    const repo = await this.openExistingRepository(cfg);
    if (!repo) return [];
    return (await repo.listSnapshots()).map(backupRecordOf);
  }

  async getBackup(id: string): Promise<BackupRecord> {
    const cfg = this.requireBackup();
    if (!isBackupId(id)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a backup id: ${JSON.stringify(id)} (expected like 20261122t213525139z-8dd2)`);
    const repo = await this.openExistingRepository(cfg);
    if (!repo) throw new AdminError(ErrorCodes.NOT_FOUND, `no backup ${id}: nothing was backed up to ${redactUrl(cfg.repository)} yet`);
    return backupRecordOf(await repo.readSnapshot(id));
  }

  async pruneBackups(req: PruneRequest = {}): Promise<BackupPruneResult> {
    const cfg = this.requireBackup();
    const dryRun = req.dryRun === true;
    if (this.backupRun) throw new AdminError(ErrorCodes.BUSY, 'a backup is running; prune when it is over (or cancel it)');
    if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is already being pruned');
    this.pruningBackups = true;
    try {
      const repo = await this.openExistingRepository(cfg);
      if (!repo) return { dryRun, removed: [], kept: [], packsDeleted: 0, packsRewritten: 0, bytesFreed: 0 };
      const { pruneRepository } = await loadBackupEngine();
      const result = await pruneRepository(repo, cfg.retention, { dryRun });
      this.log.info(
        { dryRun, removed: result.removed.map((d) => d.id), kept: result.kept.length, packsDeleted: result.packsDeleted, packsRewritten: result.packsRewritten, bytesFreed: result.bytesFreed },
        'backups pruned',
      );
      return result;
    } finally {
      this.pruningBackups = false;
    }
  }

  async verifyBackups(req: VerifyBackupsRequest = {}): Promise<BackupVerifyReport> {
    const cfg = this.requireBackup();
    if (req.id !== undefined && !isBackupId(req.id)) {
      throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a backup id: ${JSON.stringify(req.id)} (expected like 20261122t213525139z-8dd2)`);
    }
    if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is being pruned; verify when it is over');
    const repo = await this.openRepository(cfg, false);
    const { verifyRepository } = await loadBackupEngine();
    const report = await verifyRepository(repo, { ...(req.id !== undefined ? { id: req.id } : {}), readData: req.readData === true });
    this.log.info({ backup: req.id ?? null, readData: req.readData === true, ok: report.ok, snapshots: report.snapshots, packs: report.packs, errors: report.errors.length }, 'backups verified');
    return report;
  }
}
