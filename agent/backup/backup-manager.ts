import path from 'node:path';
import type { Logger } from 'pino';
import type {
  ArchiveCopyProgress,
  BackupInProgress,
  BackupPace,
  BackupProgress,
  BackupPruneResult,
  BackupRecord,
  BackupStatus,
  BackupVerifyReport,
  CancelResult,
  ChangeBatch,
  ChangesRequest,
  ChangesSummary,
  CheckpointRecord,
  CopyBackupsRequest,
  CopyProgress,
  CopySummary,
  CreateBackupRequest,
  ReplicaHoldings,
  SnapshotRef,
  CreateCheckpointRequest,
  PruneRequest,
  VerifyBackupsRequest,
  LogArchiveTimelines,
} from '../../shared/api.js';
import { isBackupId, parseBackupId, parseCheckpointId, parseKeepCounts, parseOptionalBoolean } from '../../shared/input-rules.js';
import { backupRecordOf } from './backup-record.js';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';
import { formatBytes } from '../../shared/units.js';
import type { BackupOptions } from '../agent-types.js';
import type { Repository } from '../repository/repository.js';
import type { CryptoPool } from '../repository/crypto-pool.js';
import type { RepositoryAccess } from '../repository/repository-access.js';
import { parseStorageUrl, redactUrl } from '../storage/open-storage.js';
import type { ObjectInfo, Storage } from '../storage/storage.js';
import { describePassword } from '../repository/password-source.js';
import type { PruneClient } from '../repository/prune-client.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import { ReplicaSnapshots, type ReplicaSnapshotJob } from './replica-snapshots.js';

/** What the backup manager needs of the agent that hosts it. */
export interface BackupHost {
  listCheckpoints(): Promise<CheckpointRecord[]>;
  getCheckpoint(id: string): Promise<CheckpointRecord>;
  createCheckpoint(req: CreateCheckpointRequest): Promise<CheckpointRecord>;
  /** True once the agent is stopping: no new backup starts. */
  isStopping(): boolean;
  /** Crypto threads lent to every repository opened here (OpenOptions.threads; the agent closes them); default: each its own. */
  threads?: CryptoPool;
}

/**
 * The log archive, as the backups see it (the agent passes it in: backups never import the archive).
 * Prune asks it what it needs (PruneClient); `backup timeline` asks it for its windows from listings.
 */
export interface LogArchiveClient {
  prune: PruneClient;
  timeline(listing: { list(prefix: string): AsyncIterable<ObjectInfo> }): Promise<LogArchiveTimelines>;
  /** `backup verify`'s look at the log archive (its chains; with readData every segment read back). */
  verify(repo: Repository, options: { readData: boolean }): Promise<{ segments: number; bytesRead: number; errors: string[] }>;
  /** `backup changes`: the archived batches of a request, each to `onBatch` (awaited) as it is read. */
  changes(repo: Repository, req: ChangesRequest, onBatch: (b: ChangeBatch) => void | Promise<void>): Promise<ChangesSummary>;
  /** The log archive's lag at a replica (s, by its name), as the archiver knows it; null while unknown. */
  replicaLagSeconds?(name: string): number | null;
}

/** The backup options, checked and with defaults. */
export interface BackupConfig {
  repository: string;
  s3: NonNullable<BackupOptions['s3']> | undefined;
  concurrency: number;
  bandwidthLimit: number | null;
  pace: BackupPace;
  cacheDir: string;
  retention: NonNullable<BackupOptions['retention']>;
  /** null: no automatic backups. */
  promote: { minIntervalMs: number | null } | null;
  password: { file: string | null; command: string | null };
  insecureNoEncryption: boolean;
  allowFormat2: boolean;
  kdfCost: { N: number; r: number; p: number } | undefined;
  /** The most snapshots waiting per replica (backup.replicaPendingSnapshots); older ones are dropped. */
  replicaPendingSnapshots: number;
}

/** backup.replicaPendingSnapshots's default: about what checkpoint retention keeps by default (keepLast 3). */
export const DEFAULT_REPLICA_PENDING_SNAPSHOTS = 3;

export function parseBackupOptions(o: BackupOptions, checkpointDir: string): BackupConfig {
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
  const pace = parseBackupPace(o.pace);
  const retention = parseKeepCounts(o.retention, 'backup.retention');
  let promote: BackupConfig['promote'] = null;
  if (o.promote) {
    const min = o.promote.minIntervalMs;
    if (min !== undefined && (typeof min !== 'number' || !Number.isFinite(min) || min < 0)) {
      throw bad(`backup.promote.minIntervalMs must be a non-negative number of milliseconds, got ${String(min)}`);
    }
    const enabled = o.promote.scheduled === true || (o.promote.scheduled === undefined && min !== undefined);
    if (enabled) promote = { minIntervalMs: min ?? null };
  }
  const password = { file: null as string | null, command: null as string | null };
  if (o.password !== undefined && o.password !== null) {
    const { file, command } = o.password;
    if (file !== undefined && (typeof file !== 'string' || file === '')) throw bad('backup.password.file must be a path');
    if (command !== undefined && (typeof command !== 'string' || command === '')) throw bad('backup.password.command must be a command line');
    if (file && command) throw bad('backup.password takes a file or a command, not both');
    password.file = file ? path.resolve(file) : null;
    password.command = command ?? null;
  }
  for (const flag of ['insecureNoEncryption', 'allowFormat2'] as const) {
    if (o[flag] !== undefined && typeof o[flag] !== 'boolean') throw bad(`backup.${flag} must be true or false`);
  }
  if (o.insecureNoEncryption && (password.file || password.command)) throw bad('backup.insecureNoEncryption takes no password');
  const replicaPendingSnapshots = o.replicaPendingSnapshots ?? DEFAULT_REPLICA_PENDING_SNAPSHOTS;
  if (!Number.isSafeInteger(replicaPendingSnapshots) || replicaPendingSnapshots < 1 || replicaPendingSnapshots > 1000) {
    throw bad(`backup.replicaPendingSnapshots must be a whole number from 1 to 1000, got ${String(o.replicaPendingSnapshots)}`);
  }
  return {
    replicaPendingSnapshots,
    password,
    insecureNoEncryption: o.insecureNoEncryption === true,
    allowFormat2: o.allowFormat2 === true,
    kdfCost: o.kdfCost ? { ...o.kdfCost } : undefined,
    repository: o.repository,
    s3: o.s3 ? { ...o.s3 } : undefined,
    concurrency,
    bandwidthLimit,
    pace,
    cacheDir: path.resolve(o.cacheDir ?? path.join(path.dirname(checkpointDir), 'cache')),
    retention,
    promote,
  };
}

/** backup.pace as given (absent: auto), checked once here: 'auto', 'max' or { bytesPerSecond } with a positive finite rate. */
export function parseBackupPace(pace: unknown): BackupPace {
  if (pace === undefined || pace === null || pace === 'auto') return 'auto';
  if (pace === 'max') return 'max';
  const rate = typeof pace === 'object' ? (pace as { bytesPerSecond?: unknown }).bytesPerSecond : undefined;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `backup.pace must be 'auto', 'max' or { bytesPerSecond: <positive number> }, got ${JSON.stringify(pace) ?? String(pace)}`);
  }
  return { bytesPerSecond: rate };
}

/** The backup engine, loaded on first use: it pulls in the S3 SDK, which an agent without backups never needs. */
interface BackupEngine {
  openStorage: (typeof import('../storage/open-storage.js'))['openStorage'];
  passwordSource: (typeof import('../repository/password-source.js'))['passwordSource'];
  RepositoryAccess: (typeof import('../repository/repository-access.js'))['RepositoryAccess'];
  HashCache: (typeof import('./hash-cache.js'))['HashCache'];
  backupCheckpoint: (typeof import('./backup-checkpoint.js'))['backupCheckpoint'];
  defaultReaders: (typeof import('./backup-checkpoint.js'))['defaultReaders'];
  threadPoolSize: (typeof import('./backup-checkpoint.js'))['threadPoolSize'];
  verifyRepository: (typeof import('./verify-repository.js'))['verifyRepository'];
  pruneRepository: (typeof import('./prune-repository.js'))['pruneRepository'];
  copyRepository: (typeof import('./copy-repository.js'))['copyRepository'];
  openCopyDestination: (typeof import('./copy-session.js'))['openCopyDestination'];
}

let backupEngine: Promise<BackupEngine> | null = null;

function loadBackupEngine(): Promise<BackupEngine> {
  backupEngine ??= Promise.all([
    import('../storage/open-storage.js'),
    import('../repository/repository-access.js'),
    import('../repository/password-source.js'),
    import('./hash-cache.js'),
    import('./backup-checkpoint.js'),
    import('./verify-repository.js'),
    import('./prune-repository.js'),
    import('./copy-repository.js'),
    import('./copy-session.js'),
  ]).then(([storage, repository, password, cache, backup, verify, prune, copy, session]) => ({
    openStorage: storage.openStorage,
    passwordSource: password.passwordSource,
    RepositoryAccess: repository.RepositoryAccess,
    HashCache: cache.HashCache,
    backupCheckpoint: backup.backupCheckpoint,
    defaultReaders: backup.defaultReaders,
    threadPoolSize: backup.threadPoolSize,
    verifyRepository: verify.verifyRepository,
    pruneRepository: prune.pruneRepository,
    copyRepository: copy.copyRepository,
    openCopyDestination: session.openCopyDestination,
  }));
  return backupEngine;
}

/**
 * What every backup of a checkpoint into a repository is given, the primary's or a replica's: the hash
 * cache of that repository and key (a cache made under another key names other blob ids), and the
 * configured upload concurrency and bandwidth.
 */
function backupInputs(engine: BackupEngine, cfg: BackupConfig, repo: Repository, checkpoint: CheckpointRecord) {
  return {
    repo,
    checkpoint,
    cache: engine.HashCache.load(path.join(cfg.cacheDir, `hash-cache-${repo.cacheTag}.json`)),
    concurrency: cfg.concurrency,
    bandwidthLimit: cfg.bandwidthLimit,
  };
}

/** Who asked for a backup: said to whoever asks for another meanwhile. */
export type BackupRequester = 'manual' | 'scheduled' | 'log-archive';

const REQUESTED_BY: Record<BackupRequester, string> = {
  manual: 'a backup',
  scheduled: 'a scheduled backup',
  'log-archive': "the log archive's base backup",
};

interface BackupRun {
  controller: AbortController;
  by: BackupRequester;
  state: BackupInProgress;
  /** Settles (never rejects) once the backup is over. */
  done: Promise<void>;
}

/**
 * What a second request is told: who runs the backup, of what, since when and how far it is, and what to
 * do (`status` shows the progress; `backup cancel` stops it).
 */
export function busyMessage(run: { by: BackupRequester; state: BackupInProgress }): string {
  const s = run.state;
  const of = s.checkpointId ? ` of checkpoint ${s.checkpointId}` : '';
  const far = s.bytesTotal > 0 ? `, ${formatBytes(s.bytesDone)} of ${formatBytes(s.bytesTotal)} done` : `, ${s.phase}`;
  return `${REQUESTED_BY[run.by]}${of} is running (since ${s.startedAt}${far}); try again when it ends (node-admin status shows its progress) or cancel it`;
}

/** With a backup running, the stream gets its last progress again at least this often (keeps clients' idle timers and bars alive). */
const BACKUP_HEARTBEAT_MS = 1000;


/**
 * The agent's remote backups: one backup at a time (a second request is BUSY), progress with a
 * heartbeat, cancel, automatic promotion of scheduled checkpoints, list, show, prune and verify of the
 * repository. The checkpoint it is backing up is `checkpointInUse`: the agent's retention keeps it and
 * delete refuses it meanwhile. Without backup options every operation answers BACKUP_NOT_CONFIGURED.
 */
export class BackupManager {
  /** The backup storage, opened on first use (shared by every backup operation; each opens its own Repository). */
  private storage: Promise<Storage> | null = null;
  private access: Promise<RepositoryAccess> | null = null;
  private encryption: BackupStatus['encryption'] = null;
  private backupRun: BackupRun | null = null;
  private lastBackup: BackupStatus['lastBackup'] = null;
  /** When the last successful backup ended (for promote.minIntervalMs). */
  private lastBackupOkAt: number | null = null;
  /** A checkpoint being backed up: retention keeps it and delete refuses it until the backup is over. */
  private backingUp: string | null = null;
  private pruningBackups = false;
  /** The running copy into another repository (copyBackups), if any: one at a time. */
  private copyRun: { controller: AbortController; to: string; startedAt: string; done: Promise<void> } | null = null;
  /** The listing `start` makes; a backup waits for it, so that its count is not left ambiguous by the backup. */
  private startListing: Promise<void> = Promise.resolve();
  /** What that listing found (the replicas' scan starts from it), null until it succeeded. */
  private startRecords: BackupRecord[] | null = null;
  /** Every snapshot made here, backed up into each replica (backup.replicas); null without replicas. */
  private readonly replicaSnapshots: ReplicaSnapshots | null;

  constructor(
    private readonly cfg: BackupConfig | null,
    private readonly host: BackupHost,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
    private readonly logArchive: LogArchiveClient,
    /** backup.replicas, checked (the agent's parseReplicas). */
    private readonly replicaUrls: readonly string[] = [],
  ) {
    this.replicaSnapshots =
      cfg && replicaUrls.length > 0
        ? new ReplicaSnapshots(
            replicaUrls.map((url) => ({ url, name: redactUrl(url) })),
            cfg.replicaPendingSnapshots,
            {
              backupInto: (url, job, signal) => this.copyIntoReplica(url, job, signal),
              holdings: (url) => this.replicaSnapshotsHeld(url),
              primarySnapshots: async () => {
                await this.startListing;
                return this.startRecords ?? this.listBackups();
              },
              checkpointIds: async () => new Set((await this.host.listCheckpoints()).map((c) => c.id)),
            },
            log,
            metrics.replicas,
          )
        : null;
  }

  /** The checkpoint a running backup reads, if any. */
  get checkpointInUse(): string | null {
    return this.backingUp;
  }

  /**
   * Checks the URL's syntax at once (no I/O): a bad one should stop the node at start, not fail the first
   * backup. Then lists the repository once, in the background, so that the backup count and the last
   * backup's time are known to metrics and alerts after a restart, not only after the first backup or
   * `backup list` (a node that restarts daily would otherwise never show them). A scrape never lists: this
   * one listing at start is the only storage request the agent makes on its own. Its failure is logged
   * and changes nothing else (the metrics stay absent until a later listing).
   */
  start(): void {
    if (!this.cfg) return;
    parseStorageUrl(this.cfg.repository);
    this.startListing = this.listBackups().then(
      (records) => {
        this.startRecords = records;
      },
      (err: unknown) => {
        this.log.warn({ err: toAdminError(err).message }, 'could not list the backup repository at start; backup metrics stay unknown until a backup or a listing succeeds');
      },
    );
    this.replicaSnapshots?.start();
  }

  /** The checkpoints retention must keep beside the one a backup reads: those a replica still waits for. */
  get checkpointsHeldForReplicas(): Set<string> {
    return this.replicaSnapshots?.heldCheckpoints() ?? new Set();
  }

  /** The replica reading checkpoint `id` now (a backup into it), if any. */
  replicaReading(id: string): string | null {
    return this.replicaSnapshots?.readingCheckpoint(id) ?? null;
  }

  /**
   * Cancels the running backup and copy, if any, and the backups into replicas; resolves once they have
   * stopped (their streams got their last line).
   */
  async abort(): Promise<void> {
    const replicas = this.replicaSnapshots?.stop();
    const run = this.backupRun;
    const copy = this.copyRun;
    if (run) {
      run.controller.abort();
      this.log.info({ checkpoint: run.state.checkpointId }, 'cancelling the running backup on stop');
    }
    if (copy) {
      copy.controller.abort();
      this.log.info({ to: copy.to }, 'cancelling the running copy on stop');
    }
    await Promise.all([run?.done, copy?.done, replicas]);
  }

  /** Closes the storage and the repository's access. Call after abort() has resolved, and after the archiver stopped. */
  async close(): Promise<void> {
    const storage = this.storage;
    const access = this.access;
    this.storage = null;
    this.access = null;
    await storage?.then((s) => s.close()).catch(() => {});
    await access?.then((a) => a.close()).catch(() => {});
    const replicas = [...this.replicaHandles.values()];
    this.replicaHandles.clear();
    for (const r of replicas) {
      await r.storage?.then((s) => s.close()).catch(() => {});
      await r.access.then((a) => a.close()).catch(() => {});
    }
  }

  /** The replicas (backup.replicas), by URL: a storage handle and keys of their own each. */
  private readonly replicaHandles = new Map<string, { storage: Promise<Storage> | null; access: Promise<RepositoryAccess> }>();

  private replicaHandle(url: string): { storage: Promise<Storage>; access: Promise<RepositoryAccess> } {
    const cfg = this.requireBackup();
    let h = this.replicaHandles.get(url);
    if (!h) {
      h = { storage: null, access: newAccess(cfg, this.host.threads) };
      this.replicaHandles.set(url, h);
    }
    if (!h.storage) {
      const handle = h;
      const opening = loadBackupEngine().then((e) => e.openStorage(url, { logger: this.log, ...(cfg.s3 ? { s3: cfg.s3 } : {}) }));
      handle.storage = opening;
      // A failed open is not kept: the next request tries again.
      opening.catch(() => {
        if (handle.storage === opening) handle.storage = null;
      });
    }
    return { storage: h.storage!, access: h.access };
  }

  /**
   * A replica's repository, made there when there is none: with the primary's keys (so the primary's
   * master key opens it without a key derivation, and its packs are the primary's bytes), or, before
   * the primary exists, with this agent's password. A replica made with a master of its own (by an
   * earlier version) opens with the password, as before.
   */
  async replicaRepository(url: string): Promise<Repository> {
    const repo = await this.openReplica(url, true);
    repo.assertWritable();
    return repo;
  }

  /**
   * A replica's repository (see replicaRepository); REPOSITORY_NOT_FOUND where there is none and not
   * `create`. The primary is asked for only at the replica's first open, and a primary that cannot be
   * opened then (unreachable, or none yet) leaves the replica to its password: a primary that is down
   * never stops a replica.
   */
  private async openReplica(url: string, create: boolean): Promise<Repository> {
    const h = this.replicaHandle(url);
    const [access, storage] = await Promise.all([h.access, h.storage]);
    return access.open(storage, create, () => this.openExistingRepository(this.requireBackup()).catch(() => null));
  }

  /**
   * The log archive's bases into a replica: the checkpoint backed up into it as the backup `backupId`
   * (the id it has in the primary, which the replica's base records name), through the replica's queue
   * of backups (replica-snapshots.ts: one run when the snapshot waits there too). NOT_FOUND when the
   * checkpoint is gone.
   */
  async backupInto(url: string, checkpointId: string, backupId: string): Promise<void> {
    if (!this.replicaSnapshots) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'this agent has no replicas');
    await this.replicaSnapshots.ensure(url, checkpointId, backupId);
  }

  /**
   * Backs a checkpoint up into a replica as the snapshot `job` names (the primary's id, time and pin):
   * from the checkpoint, deduplicated in the replica, never read from the primary, never paced (a
   * replica's copy is the newest restorable state there), outside the one backup slot (a slow replica
   * never holds up the primary's backups). `held` when the replica has that backup already. NOT_FOUND
   * when the checkpoint is gone.
   */
  private async copyIntoReplica(url: string, job: ReplicaSnapshotJob, signal: AbortSignal): Promise<'held' | 'copied'> {
    const cfg = this.requireBackup();
    const engine = await loadBackupEngine();
    const repo = await this.replicaRepository(url);
    const held = await repo.readSnapshot(job.backupId).then(
      () => true,
      (err: unknown) => {
        if (toAdminError(err).code === ErrorCodes.NOT_FOUND) return false;
        throw err;
      },
    );
    if (held) return 'held';
    const checkpoint = await this.host.getCheckpoint(job.checkpointId);
    const record = await engine.backupCheckpoint({
      ...backupInputs(engine, cfg, repo, checkpoint),
      pace: 'max',
      signal,
      pinned: job.pinned,
      snapshotId: job.backupId,
      ...(job.createdAt !== null ? { snapshotCreatedAt: job.createdAt } : {}),
    });
    this.log.info({ backup: record.id, checkpoint: checkpoint.id, repository: redactUrl(url), bytesUploaded: record.bytesUploaded, ms: record.durationMs }, 'backup copied into a replica');
    return 'copied';
  }

  /** A replica's snapshot ids (one listing) and its newest snapshot (one read); nothing when it has no repository yet. */
  private async replicaSnapshotsHeld(url: string): Promise<{ ids: Set<string>; newest: SnapshotRef | null }> {
    let repo: Repository;
    try {
      repo = await this.openReplica(url, false);
    } catch (err) {
      if (toAdminError(err).code === ErrorCodes.REPOSITORY_NOT_FOUND) return { ids: new Set(), newest: null };
      throw err;
    }
    const ids = new Set<string>();
    for await (const o of repo.list('snapshots/')) {
      const id = o.name.slice('snapshots/'.length);
      if (isBackupId(id)) ids.add(id);
    }
    // Ids sort by the time they were made: the newest is the last (read for its time).
    const newestId = [...ids].sort().at(-1);
    if (newestId === undefined) return { ids, newest: null };
    const newest = await repo.readSnapshot(newestId).then(
      (snap) => ({ id: snap.id, createdAt: snap.createdAt }),
      (err: unknown) => {
        if (toAdminError(err).code === ErrorCodes.NOT_FOUND) return null; // pruned meanwhile
        throw err;
      },
    );
    return { ids, newest };
  }

  /** What one replica holds, for `backup timeline`: its failure is its entry's `error`, never the command's. */
  private async replicaHoldings(url: string): Promise<ReplicaHoldings> {
    const name = redactUrl(url);
    const pendingSnapshots = this.replicaSnapshots?.status().find((r) => r.name === name)?.pending.length ?? 0;
    const lagSeconds = this.logArchive.replicaLagSeconds?.(name) ?? null;
    try {
      const [held, windows] = await Promise.all([this.replicaSnapshotsHeld(url), this.replicaHandle(url).storage.then((st) => this.logArchive.timeline(st))]);
      return { name, newestSnapshot: held.newest, snapshots: held.ids.size, timelines: windows.timelines, gaps: windows.gaps, lagSeconds, pendingSnapshots, error: null };
    } catch (err) {
      const e = toAdminError(err);
      return { name, newestSnapshot: null, snapshots: 0, timelines: [], gaps: [], lagSeconds, pendingSnapshots, error: `${e.code}: ${e.message}` };
    }
  }

  status(): BackupStatus | null {
    if (!this.cfg) return null;
    return {
      repository: redactUrl(this.cfg.repository),
      inProgress: this.backupRun ? { ...this.backupRun.state } : null,
      pace: this.cfg.pace,
      lastBackup: this.lastBackup,
      encryption: this.encryption,
      passwordSource: describePassword(this.cfg.password),
      ...(this.replicaSnapshots ? { replicas: this.replicaSnapshots.status() } : {}),
    };
  }

  private requireBackup(): BackupConfig {
    if (!this.cfg) {
      throw new AdminError(ErrorCodes.BACKUP_NOT_CONFIGURED, 'this agent has no backup repository configured (AgentOptions.backup; the example node: --backup-repo)');
    }
    return this.cfg;
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
    const storage = await this.openStorage(cfg);
    return this.opened(await (await this.repositoryAccess()).open(storage, create));
  }

  /** Remembers what the repository turned out to be (status, metrics). */
  private opened(repo: Repository): Repository {
    this.encryption = { format: repo.formatVersion, encrypted: repo.codec.encrypted, keyId: repo.keyId };
    this.metrics.repositoryEncrypted(repo.codec.encrypted);
    return repo;
  }

  /**
   * The repository's config and keys, read once for every operation of the agent (the log archiver's
   * too, through its own storage handle: `repositoryOn`).
   */
  private repositoryAccess(): Promise<RepositoryAccess> {
    return (this.access ??= newAccess(this.requireBackup(), this.host.threads));
  }

  /** The repository on another handle of its storage (the log archiver's, which writes: assertWritable), created if there is none. */
  async repositoryOn(storage: Storage): Promise<Repository> {
    this.requireBackup();
    const repo = this.opened(await (await this.repositoryAccess()).open(storage, true));
    repo.assertWritable();
    return repo;
  }

  /**
   * The log archive's windows (`backup timeline`): two listings (`wal/`, `snapshots/`) through the
   * backup storage, no object read; empty when there is no archive or no repository yet.
   */
  async timeline(): Promise<LogArchiveTimelines> {
    const cfg = this.requireBackup();
    // Side by side: a replica that is slow to answer holds up only its own entry.
    const [primary, replicas] = await Promise.all([this.openStorage(cfg).then((st) => this.logArchive.timeline(st)), Promise.all(this.replicaUrls.map((url) => this.replicaHoldings(url)))]);
    return replicas.length > 0 ? { ...primary, replicas } : primary;
  }

  /** The log archive's batches between two moments (`backup changes`); MOMENT_NOT_RESTORABLE where there is no archive yet. */
  async changes(req: ChangesRequest, onBatch: (b: ChangeBatch) => void | Promise<void>): Promise<ChangesSummary> {
    const cfg = this.requireBackup();
    const repo = await this.openExistingRepository(cfg);
    if (!repo) throw new AdminError(ErrorCodes.MOMENT_NOT_RESTORABLE, 'the repository holds no restorable log archive (it does not exist yet)');
    return this.logArchive.changes(repo, req, onBatch);
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

  /** `by`: who asks (the log archive for its bases); a request meanwhile is told who holds the slot. */
  createBackup(req: CreateBackupRequest = {}, onProgress?: (p: BackupProgress) => void, by: 'manual' | 'log-archive' = 'manual'): Promise<BackupRecord> {
    return this.startBackup(req, onProgress, by);
  }

  /** Claims the one backup slot synchronously (so that a second request is BUSY at once), then runs. */
  private startBackup(req: CreateBackupRequest, onProgress: ((p: BackupProgress) => void) | undefined, by: BackupRequester): Promise<BackupRecord> {
    const trigger = by === 'scheduled' ? 'scheduled' : 'manual';
    let cfg: BackupConfig;
    try {
      cfg = this.requireBackup();
      if (this.host.isStopping()) throw new AdminError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping');
      if (req.checkpointId !== undefined) parseCheckpointId(req.checkpointId, 'checkpointId');
      parseOptionalBoolean(req.pin, 'pin');
      const running = this.backupRun;
      if (running) throw new AdminError(ErrorCodes.BUSY, busyMessage(running));
      if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is being pruned; try again later');
    } catch (err) {
      return Promise.reject(err);
    }
    const run: BackupRun = {
      controller: new AbortController(),
      by,
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
        paceBytesPerSecond: null,
        pacedSeconds: 0,
      },
      done: Promise.resolve(),
    };
    this.backupRun = run;
    const result = this.metrics.withMetrics('backup', () => this.runBackup(cfg, req, run, onProgress, trigger)).finally(() => {
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
    // The byte counters advance with the progress, so that rate() shows a long backup as it goes.
    let counted = { read: 0, uploaded: 0 };
    const count = (read: number, uploaded: number) => {
      this.metrics.backupBytes(read - counted.read, uploaded - counted.uploaded);
      counted = { read: Math.max(read, counted.read), uploaded: Math.max(uploaded, counted.uploaded) };
    };
    try {
      const engine = await loadBackupEngine();
      let checkpoint: CheckpointRecord;
      if (req.checkpointId !== undefined) {
        this.backingUp = req.checkpointId;
        checkpoint = await this.host.getCheckpoint(req.checkpointId);
      } else {
        const newest = (await this.host.listCheckpoints()).at(-1);
        if (newest) {
          this.backingUp = newest.id;
          // Again, now that retention keeps it: it may have been pruned between the list and now.
          checkpoint = await this.host.getCheckpoint(newest.id);
        } else {
          state.phase = 'checkpointing';
          const created = await this.host.createCheckpoint({ label: 'backup' });
          this.backingUp = created.id;
          checkpoint = await this.host.getCheckpoint(created.id);
        }
      }
      state.checkpointId = checkpoint.id;
      state.phase = 'starting';
      await this.startListing;
      if (signal.aborted) throw cancelled();
      const repo = await this.openRepository(cfg, true);
      repo.assertWritable();
      if (signal.aborted) throw cancelled();
      // Chunks in flight follow libuv's pool (a quarter of it): a host that left it at 4 backs up slowly, so say so.
      const pool = engine.threadPoolSize();
      const readers = engine.defaultReaders(pool);
      this.log.info({ checkpoint: checkpoint.id, repository: redactUrl(cfg.repository), trigger, readers, threadPool: pool }, 'backup started');
      if (readers < 8) this.log.warn({ threadPool: pool, readers }, 'backup reads only a few chunks at once: start the node with UV_THREADPOOL_SIZE=32 or more for faster backups');
      const record = await engine.backupCheckpoint({
        ...backupInputs(engine, cfg, repo, checkpoint),
        // The log archive has priority: a new timeline's segments wait for its base, so its base backup
        // is never paced (its RPO would be the backup's duration at the pace).
        pace: run.by === 'log-archive' ? 'max' : cfg.pace,
        onPaceRate: (rate) => {
          state.paceBytesPerSecond = Number.isFinite(rate) ? rate : null;
          this.metrics.backupPace(rate);
        },
        onPaced: (seconds) => {
          state.pacedSeconds = (state.pacedSeconds ?? 0) + seconds;
          this.metrics.backupPaced(seconds);
        },
        signal,
        pinned: req.pin === true,
        onProgress: (p) => {
          count(p.bytesRead, p.bytesUploaded);
          Object.assign(state, p);
          last = p;
          send(p);
        },
      });
      count(record.bytesRead ?? counted.read, record.bytesUploaded ?? counted.uploaded);
      this.metrics.backupAdded();
      // Queued for each replica from the same checkpoint; this backup's slot is not held for them.
      this.replicaSnapshots?.snapshotMade(record);
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
          pacedSeconds: record.pacedSeconds,
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
      this.metrics.backupPace(null);
      this.backingUp = null;
    }
  }

  /** After a scheduled checkpoint: back it up if options.backup.promote says so. Never fails the checkpoint. */
  promote(checkpoint: CheckpointRecord): void {
    const promote = this.cfg?.promote;
    if (!promote || this.host.isStopping()) return;
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
    return cancelRun(run, () => this.log.info({ checkpoint: run?.state.checkpointId }, 'backup cancelled by request'));
  }

  /**
   * `backup copy` through the socket: this repository into `req.to` (AdminApi.copyBackups). The
   * destination is opened with its own storage handle (closed after) and, unless the request names a
   * password file, this agent's password source; a destination made by the copy gets this repository's
   * keys. The last progress is sent again every second (a client's idle timer, a bar).
   */
  async copyBackups(req: CopyBackupsRequest, onProgress?: (p: CopyProgress | ArchiveCopyProgress) => void): Promise<CopySummary> {
    const cfg = this.requireBackup();
    if (this.copyRun) throw new AdminError(ErrorCodes.BUSY, `a copy into ${this.copyRun.to} is running (since ${this.copyRun.startedAt}); try again when it ends or cancel it (node-admin backup cancel --copy)`);
    if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is being pruned; copy when it is over');
    const started = Date.now();
    const controller = new AbortController();
    let finished!: () => void;
    const run = { controller, to: redactUrl(req.to), startedAt: new Date(started).toISOString(), done: new Promise<void>((resolve) => (finished = resolve)) };
    this.copyRun = run;
    let last: CopyProgress | ArchiveCopyProgress | null = null;
    const heartbeat = onProgress ? setInterval(() => last && onProgress(last), BACKUP_HEARTBEAT_MS) : null;
    heartbeat?.unref();
    const progress = (p: CopyProgress | ArchiveCopyProgress) => {
      last = { ...p };
      onProgress?.(last);
    };
    try {
      return await this.metrics.withMetrics('backup_copy', async () => {
        const engine = await loadBackupEngine();
        const from = await this.openRepository(cfg, false);
        const s3 = req.s3 ?? cfg.s3;
        const toStorage = await engine.openStorage(req.to, { logger: this.log, ...(s3 ? { s3 } : {}) });
        try {
          const password = req.passwordFile !== undefined ? engine.passwordSource({ file: req.passwordFile, command: null }) : engine.passwordSource(cfg.password);
          const result = await engine.copyRepository({
            from,
            openTo: () =>
              engine.openCopyDestination(toStorage, from, {
                password,
                insecureNoEncryption: req.insecureNoEncryption === true,
                allowFormat2: req.allowFormat2 === true,
                ...(cfg.kdfCost ? { kdfCost: cfg.kdfCost } : {}),
              }),
            select: req.select ?? null,
            logArchive: req.logArchive === true,
            bandwidthLimit: req.limitUploadBytesPerSecond ?? null,
            onProgress: progress,
            signal: controller.signal,
          });
          const summary: CopySummary = { from: redactUrl(cfg.repository), to: redactUrl(req.to), durationMs: Date.now() - started, ...result };
          this.log.info({ to: summary.to, copied: summary.copied, mode: summary.mode, packsSent: summary.packsSent, bytesSent: summary.bytesSent, logArchive: summary.logArchive ? summary.logArchive.segments : null }, 'backups copied');
          return summary;
        } finally {
          await toStorage.close().catch(() => {});
        }
      });
    } finally {
      if (heartbeat) clearInterval(heartbeat);
      this.copyRun = null;
      finished();
    }
  }

  /** Stops the running copy (if any) and waits until it has stopped. */
  async cancelCopy(): Promise<CancelResult> {
    this.requireBackup();
    const run = this.copyRun;
    return cancelRun(run, () => this.log.info({ to: run?.to }, 'copy cancelled by request'));
  }

  async listBackups(): Promise<BackupRecord[]> {
    const cfg = this.requireBackup();
    const mark = this.metrics.listingStarts();
    const repo = await this.openExistingRepository(cfg);
    if (!repo) {
      this.metrics.backupsListed(0, null, mark);
      return [];
    }
    const records = (await repo.listSnapshots()).map((s) => backupRecordOf(s, repo.codec.encrypted));
    this.metrics.backupsListed(records.length, newestOf(records), mark);
    return records;
  }

  async getBackup(id: string): Promise<BackupRecord> {
    const cfg = this.requireBackup();
    parseBackupId(id);
    const repo = await this.openExistingRepository(cfg);
    if (!repo) throw new AdminError(ErrorCodes.NOT_FOUND, `no backup ${id}: nothing was backed up to ${redactUrl(cfg.repository)} yet`);
    return backupRecordOf(await repo.readSnapshot(id), repo.codec.encrypted);
  }

  async pruneBackups(req: PruneRequest = {}): Promise<BackupPruneResult> {
    const cfg = this.requireBackup();
    const dryRun = req.dryRun === true;
    if (this.backupRun) throw new AdminError(ErrorCodes.BUSY, 'a backup is running; prune when it is over (or cancel it)');
    if (this.copyRun) throw new AdminError(ErrorCodes.BUSY, `a copy into ${this.copyRun.to} is running (since ${this.copyRun.startedAt}); prune when it is over (or cancel it: node-admin backup cancel --copy)`);
    if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is already being pruned');
    this.pruningBackups = true;
    const prune = async (): Promise<BackupPruneResult> => {
      const mark = this.metrics.listingStarts();
      const repo = await this.openExistingRepository(cfg);
      if (!repo) return { dryRun, removed: [], kept: [], logArchiveBase: null, packsDeleted: 0, packsRewritten: 0, bytesFreed: 0, walObjectsDeleted: 0 };
      const { pruneRepository } = await loadBackupEngine();
      const result = await pruneRepository(repo, cfg.retention, { dryRun, logArchive: this.logArchive.prune });
      this.log.info(
        { dryRun, removed: result.removed.map((d) => d.id), kept: result.kept.length, packsDeleted: result.packsDeleted, packsRewritten: result.packsRewritten, bytesFreed: result.bytesFreed },
        'backups pruned',
      );
      // It listed the repository: what it keeps is what is left (a dry run removed nothing).
      this.metrics.backupsListed(result.kept.length + (dryRun ? result.removed.length : 0), null, mark);
      return result;
    };
    try {
      // A dry run changes nothing: not a prune the metrics count.
      return await (dryRun ? prune() : this.metrics.withMetrics('backup_prune', prune));
    } finally {
      this.pruningBackups = false;
    }
  }

  async verifyBackups(req: VerifyBackupsRequest = {}): Promise<BackupVerifyReport> {
    const cfg = this.requireBackup();
    if (req.id !== undefined) parseBackupId(req.id, 'id');
    if (this.pruningBackups) throw new AdminError(ErrorCodes.BUSY, 'the backup repository is being pruned; verify when it is over');
    return this.metrics.withMetrics(
      'backup_verify',
      async () => {
        const repo = await this.openRepository(cfg, false);
        const { verifyRepository } = await loadBackupEngine();
        const report = await verifyRepository(repo, { ...(req.id !== undefined ? { id: req.id } : {}), readData: req.readData === true, logArchive: this.logArchive.verify });
        this.log.info({ backup: req.id ?? null, readData: req.readData === true, ok: report.ok, snapshots: report.snapshots, packs: report.packs, errors: report.errors.length }, 'backups verified');
        return report;
      },
      (report) => (report.ok ? null : ErrorCodes.CORRUPT),
    );
  }
}

/**
 * Stops `run` (a backup, a copy) and waits until it has stopped; `logged` says so in the log. Counted
 * only by the first request to stop it: a second one while it winds down answers 0.
 */
async function cancelRun(run: { controller: AbortController; done: Promise<void> } | null, logged: () => void): Promise<CancelResult> {
  if (!run) return { cancelled: 0 };
  const first = !run.controller.signal.aborted;
  run.controller.abort();
  logged();
  await run.done;
  return { cancelled: first ? 1 : 0 };
}

/** A repository's access with the agent's password and policies (the primary's, each replica's). */
function newAccess(cfg: BackupConfig, threads: CryptoPool | undefined): Promise<RepositoryAccess> {
  return loadBackupEngine().then(
    (e) =>
      new e.RepositoryAccess({
        password: e.passwordSource(cfg.password),
        insecureNoEncryption: cfg.insecureNoEncryption,
        allowFormat2: cfg.allowFormat2,
        ...(cfg.kdfCost ? { kdfCost: cfg.kdfCost } : {}),
        ...(threads ? { threads } : {}),
      }),
  );
}

/** createdAt of the newest backup of a listing (they are oldest first, but do not rely on it). */
function newestOf(records: readonly BackupRecord[]): string | null {
  let newest: string | null = null;
  for (const r of records) if (newest === null || r.createdAt > newest) newest = r.createdAt;
  return newest;
}
