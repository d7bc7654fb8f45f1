import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { AdminError, ErrorCodes, toAdminError, type ErrorCode } from '../../shared/errors.js';
import { LOG_ARCHIVE_METRIC_NAMES, LogArchiveMetrics, type LogArchiveLagSource } from './log-archive-metrics.js';
import { REPLICA_METRIC_NAMES, ReplicaMetrics, type ReplicaFacts } from './replica-metrics.js';

/**
 * The `operation` label of node_admin_operation_duration_seconds and node_admin_operation_failures_total:
 * the work the agent does on its own or on request, each measured from the moment it starts (a create
 * waiting in the queue is not yet measured). Restores are not here: they run without an agent (CLI).
 */
export const METRIC_OPERATIONS = [
  /** A checkpoint is taken (manual, scheduled, or the one a backup takes when there is none). */
  'checkpoint',
  /** `checkpoint delete`. */
  'checkpoint_delete',
  /** `checkpoint prune` (not a dry run): the retention policy applied on request. */
  'checkpoint_prune',
  /** `checkpoint verify <id>`; a report with ok:false counts as a failure with code CORRUPT. */
  'checkpoint_verify',
  /** A backup (manual or promoted after a scheduled checkpoint). */
  'backup',
  /** `backup prune` (not a dry run). */
  'backup_prune',
  /** `backup verify`; a report with ok:false counts as a failure with code CORRUPT. */
  'backup_verify',
  /** `backup copy` through the agent (its repository into another). */
  'backup_copy',
] as const;

export type MetricOperation = (typeof METRIC_OPERATIONS)[number];

/** Every metric the agent registers (README "Metrics"); an agent that archives its log adds LOG_ARCHIVE_METRIC_NAMES. */
export const METRIC_NAMES = [
  'node_admin_operation_duration_seconds',
  'node_admin_operation_failures_total',
  'node_admin_checkpoint_last_success_timestamp_seconds',
  'node_admin_backup_last_success_timestamp_seconds',
  'node_admin_prune_last_success_timestamp_seconds',
  'node_admin_verify_last_success_timestamp_seconds',
  'node_admin_checkpoints',
  'node_admin_checkpoint_bytes',
  'node_admin_checkpoint_exclusive_bytes',
  'node_admin_checkpoint_filesystem_free_bytes',
  'node_admin_checkpoint_filesystem_min_free_bytes',
  'node_admin_backup_read_bytes_total',
  'node_admin_backup_uploaded_bytes_total',
  'node_admin_backups',
  'node_admin_backup_repository_encrypted',
  'node_admin_backup_pace_bytes_per_second',
  'node_admin_backup_paced_seconds_total',
  'node_admin_agent_buffered_bytes',
] as const;

/**
 * The `part` label of node_admin_agent_buffered_bytes: what the agent itself holds in the host's memory.
 * `pool_in_use` / `pool_free`: page-aligned buffers of the process's pool (agent/fs/aligned-pool.ts:
 * backups' read, seal and pack buffers, the log archive's segment and merge buffers) handed out, and
 * kept for reuse; `log_archive_pending`: log batches read and not yet cut into a segment;
 * `log_archive_outbox`: segments cut and not yet stored (in memory; the spool directory's are on disk).
 */
export const BUFFERED_PARTS = ['pool_in_use', 'pool_free', 'log_archive_pending', 'log_archive_outbox'] as const;
export type BufferedPart = (typeof BUFFERED_PARTS)[number];

/** Checkpoint totals as the checkpoint index knows them (agent/checkpoint/checkpoint-index.ts). */
export interface CheckpointFacts {
  count: number;
  pinned: number;
  bytes: number;
  exclusiveBytes: number;
  /** createdAt of the newest checkpoint (ISO), null when there is none. */
  newestCreatedAt: string | null;
}

/**
 * Where a scrape gets what the metrics do not hold themselves. Both answer from what the agent already
 * knows, in about a millisecond, and never touch the backup repository.
 */
export interface MetricsSources {
  /** The checkpoint totals; the last known ones when the index is busy elsewhere; null if never known. */
  checkpoints(): Promise<CheckpointFacts | null>;
  /** Free bytes on the checkpoint filesystem (one statfs). */
  freeBytes(): Promise<number>;
  /** The log archive's lag, when the agent archives its log (its metrics are registered only then). */
  logArchive?: LogArchiveLagSource;
  /** The replicas as they stand, when the agent has backup.replicas (their metrics are registered only then). */
  replicas?(): ReplicaFacts[];
  /** Bytes the agent holds, by part (no I/O); a part left out is not shown (the log archive's, on an agent that does not archive). */
  buffered?(): Partial<Record<BufferedPart, number>>;
}

/**
 * The agent's Prometheus metrics (prom-client), in a registry of their own (what the admin socket's
 * GET /v1/metrics serves) and, when the host passes one, in the host's registry as well (a node that
 * exports metrics serves ours beside its own). Names, units and labels: README "Metrics".
 *
 * Operations are measured in one place, `withMetrics`: their durations (successes only), their
 * failures by stable error code, and the time of their last success. Backup byte counters and the
 * backup count are fed by the backup manager as it learns them; checkpoint totals and free space are
 * read at scrape time from `sources`. A scrape never makes a storage request.
 *
 * The log archive's metrics (log-archive-metrics.ts) are registered with the same `registers` when
 * `sources.logArchive` is given; the archiver feeds them through `logArchive` (its observer). Adding a
 * source works the same way: the module that knows the values feeds them through a method, or a
 * `collect` reads them from what that module already holds. Never from storage at scrape time.
 */
export class AgentMetrics {
  /** Our metrics alone (the socket's GET /v1/metrics). */
  readonly registry = new Registry();
  private readonly duration: Histogram<'operation'>;
  private readonly failures: Counter<'operation' | 'code'>;
  private readonly checkpointOk: Gauge;
  private readonly backupOk: Gauge;
  private readonly pruneOk: Gauge<'operation'>;
  private readonly verifyOk: Gauge<'operation'>;
  private readonly backupReadBytes: Counter;
  private readonly backupUploadedBytes: Counter;
  private readonly backups: Gauge;
  private readonly encrypted: Gauge;
  private readonly pace: Gauge;
  private readonly paced: Counter;
  /** The newest successful checkpoint seen by this process (ms), merged with the index's newest at scrape. */
  private checkpointOkAt: number | null = null;
  /** The last successful backup (s), as made or listed; null: not known yet. */
  private backupOkAt: number | null = null;
  private backupCount: number | null = null;
  /** Backups this agent has completed (see listingStarts). */
  private backupsAddedCount = 0;
  /** A scrape reads the checkpoint totals once, whichever of the gauges asks first. */
  private facts: Promise<CheckpointFacts | null> | null = null;
  /** The log archive's metrics, the archiver's observer; null when the agent does not archive. */
  readonly logArchive: LogArchiveMetrics | null;
  /** The replicas' metrics, the replicas' snapshot queue's observer; null without replicas. */
  readonly replicas: ReplicaMetrics | null;

  constructor(
    sources: MetricsSources,
    options: { hostRegistry?: Registry | null; minFreeBytes: number },
  ) {
    const host = options.hostRegistry ?? null;
    if (host && host.contentType !== Registry.PROMETHEUS_CONTENT_TYPE) {
      // prom-client renames counters in an OpenMetrics registry (drops _total), in the metric object
      // itself: our own registry's exposition would change with it.
      throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'metrics.registry must be a Prometheus-format prom-client Registry (not OpenMetrics)');
    }
    // A name taken in the host's registry (a second agent on it): refused before anything is registered.
    const names = [...METRIC_NAMES, ...(sources.logArchive ? LOG_ARCHIVE_METRIC_NAMES : []), ...(sources.replicas ? REPLICA_METRIC_NAMES : [])];
    const taken = host ? names.find((name) => host.getSingleMetric(name) !== undefined) : undefined;
    if (taken !== undefined) {
      throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `metrics.registry: ${taken} is already registered there (one agent per registry)`);
    }
    const registers = host ? [this.registry, host] : [this.registry];
    const checkpointFacts = (): Promise<CheckpointFacts | null> => {
      // Shared by the gauges of one scrape (they are collected together), then dropped.
      this.facts ??= sources.checkpoints().finally(() => queueMicrotask(() => (this.facts = null)));
      return this.facts;
    };
    const self = this;
    this.duration = new Histogram({
      name: 'node_admin_operation_duration_seconds',
      help: 'How long successful operations took, by operation (checkpoint, backup, checkpoint_prune, backup_verify, ...)',
      labelNames: ['operation'],
      // From a small checkpoint (tens of ms) to a full backup of a large database (hours).
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400],
      registers,
    });
    // Every operation's series from the start (count 0): a rate or quantile over a window then has data
    // from the first operation on, not from the second, and a dashboard shows 0 rather than nothing.
    for (const operation of METRIC_OPERATIONS) this.duration.zero({ operation });
    this.failures = new Counter({
      name: 'node_admin_operation_failures_total',
      help: 'Operations that failed, by operation and stable error code (cancelled ones count, with code CANCELLED)',
      labelNames: ['operation', 'code'],
      registers,
    });
    this.checkpointOk = new Gauge({
      name: 'node_admin_checkpoint_last_success_timestamp_seconds',
      help: 'When the last checkpoint was taken (Unix time): the newest one kept, or the last create that succeeded; absent before the first',
      registers,
      async collect() {
        const facts = await checkpointFacts();
        const newest = facts?.newestCreatedAt ? Date.parse(facts.newestCreatedAt) : NaN;
        const at = Math.max(self.checkpointOkAt ?? -Infinity, Number.isNaN(newest) ? -Infinity : newest);
        if (Number.isFinite(at)) this.set(at / 1000);
        else absent(this);
      },
    });
    absent(this.checkpointOk);
    this.backupOk = new Gauge({
      name: 'node_admin_backup_last_success_timestamp_seconds',
      help: 'When the last successful backup ended (Unix time); absent until this agent has listed the repository (once at start) or made one',
      registers,
    });
    absent(this.backupOk);
    this.encrypted = new Gauge({
      name: 'node_admin_backup_repository_encrypted',
      help: 'Whether the backup repository is encrypted (1) or not (0: format 2, or made with --insecure-no-encryption); absent until the agent has opened it',
      registers,
    });
    absent(this.encrypted);
    this.pruneOk = new Gauge({
      name: 'node_admin_prune_last_success_timestamp_seconds',
      help: 'When a prune last succeeded (Unix time), by operation: checkpoint_prune, backup_prune; absent before the first',
      labelNames: ['operation'],
      registers,
    });
    this.verifyOk = new Gauge({
      name: 'node_admin_verify_last_success_timestamp_seconds',
      help: 'When a verify last found everything sound (Unix time), by operation: checkpoint_verify, backup_verify; absent before the first',
      labelNames: ['operation'],
      registers,
    });
    new Gauge({
      name: 'node_admin_checkpoints',
      help: 'Checkpoints kept, by pinned (true, false)',
      labelNames: ['pinned'],
      registers,
      async collect() {
        const facts = await checkpointFacts();
        if (!facts) return this.reset();
        this.set({ pinned: 'true' }, facts.pinned);
        this.set({ pinned: 'false' }, facts.count - facts.pinned);
      },
    });
    new Gauge({
      name: 'node_admin_checkpoint_bytes',
      help: 'Logical size of all checkpoints together (a table shared by several counts in each)',
      registers,
      async collect() {
        const facts = await checkpointFacts();
        if (facts) this.set(facts.bytes);
        else absent(this);
      },
    });
    new Gauge({
      name: 'node_admin_checkpoint_exclusive_bytes',
      help: 'Sum over checkpoints of what deleting each alone would free (its files linked by nothing else)',
      registers,
      async collect() {
        const facts = await checkpointFacts();
        if (facts) this.set(facts.exclusiveBytes);
        else absent(this);
      },
    });
    new Gauge({
      name: 'node_admin_checkpoint_filesystem_free_bytes',
      help: 'Free bytes on the checkpoint filesystem (for an unprivileged writer)',
      registers,
      async collect() {
        this.set(await sources.freeBytes());
      },
    });
    new Gauge({
      name: 'node_admin_checkpoint_filesystem_min_free_bytes',
      help: 'The free-space guard (retention minFreeBytes): below it old checkpoints are pruned and creates refused; 0 when none',
      registers,
    }).set(options.minFreeBytes);
    this.backupReadBytes = new Counter({
      name: 'node_admin_backup_read_bytes_total',
      help: 'Bytes backups read from checkpoints (unchanged tables already hashed are not read)',
      registers,
    });
    this.backupUploadedBytes = new Counter({
      name: 'node_admin_backup_uploaded_bytes_total',
      help: 'Bytes backups stored in the repository (new packs and metadata)',
      registers,
    });
    this.backups = new Gauge({
      name: 'node_admin_backups',
      help: 'Backups in the repository as last listed, pruned or made by this agent; absent until then',
      registers,
    });
    absent(this.backups);
    this.pace = new Gauge({
      name: 'node_admin_backup_pace_bytes_per_second',
      help: 'The read rate the running backup is held to (bytes/s): the fixed --backup-pace, or auto\'s current rate; +Inf while not held back (pace max, or auto at full speed); absent while no backup runs',
      registers,
    });
    absent(this.pace);
    this.paced = new Counter({
      name: 'node_admin_backup_paced_seconds_total',
      help: 'Seconds backups spent waiting for their pace: wall-clock time their reads were held back (auto: because the node was busy); never grows with pace max',
      registers,
    });
    new Gauge({
      name: 'node_admin_agent_buffered_bytes',
      help: "Bytes the agent holds in the host's memory, by part: pool_in_use and pool_free (reused page-aligned buffers handed out, and kept), log_archive_pending (batches read, not yet in a segment), log_archive_outbox (segments not yet stored)",
      labelNames: ['part'],
      registers,
      collect() {
        this.reset();
        const parts = sources.buffered?.() ?? {};
        for (const part of BUFFERED_PARTS) {
          const v = parts[part];
          if (v !== undefined) this.set({ part }, v);
        }
      },
    });
    this.logArchive = sources.logArchive ? new LogArchiveMetrics(registers, sources.logArchive) : null;
    this.replicas = sources.replicas ? new ReplicaMetrics(registers, sources.replicas) : null;
  }

  /**
   * Runs one operation and records it: on success its duration and the time of its last success, on
   * failure (a rejection, or a result `verdict` names a code for) the failure counter with the code.
   * Resolves and rejects exactly as `run` does.
   */
  async withMetrics<T>(operation: MetricOperation, run: () => Promise<T>, verdict?: (result: T) => ErrorCode | null): Promise<T> {
    const started = performance.now();
    let result: T;
    try {
      result = await run();
    } catch (err) {
      this.failures.inc({ operation, code: toAdminError(err).code });
      throw err;
    }
    const code = verdict?.(result) ?? null;
    if (code !== null) {
      this.failures.inc({ operation, code });
      return result;
    }
    this.duration.observe({ operation }, (performance.now() - started) / 1000);
    const now = Date.now();
    switch (operation) {
      case 'checkpoint':
        this.checkpointOkAt = now;
        break;
      case 'backup':
        this.backupOkAt = now / 1000;
        this.backupOk.set(this.backupOkAt);
        break;
      case 'checkpoint_prune':
      case 'backup_prune':
        this.pruneOk.set({ operation }, now / 1000);
        break;
      case 'checkpoint_verify':
      case 'backup_verify':
        this.verifyOk.set({ operation }, now / 1000);
        break;
      case 'checkpoint_delete':
      case 'backup_copy':
        break;
    }
    return result;
  }

  /** Bytes a running backup read and uploaded since it last said (counted as they go, failed backups too). */
  backupBytes(read: number, uploaded: number): void {
    if (read > 0) this.backupReadBytes.inc(read);
    if (uploaded > 0) this.backupUploadedBytes.inc(uploaded);
  }

  /** The running backup's pace in effect (bytes/s, Infinity: not held back); null: no backup runs (absent). */
  backupPace(bytesPerSecond: number | null): void {
    if (bytesPerSecond === null) absent(this.pace);
    else this.pace.set(bytesPerSecond);
  }

  /** A running backup's reads were held back by its pace this many more seconds. */
  backupPaced(seconds: number): void {
    if (seconds > 0) this.paced.inc(seconds);
  }

  /**
   * Call before listing the repository; pass the result to `backupsListed`. A backup this agent completes
   * while the listing runs may or may not be in it (storage.ts: a list sees concurrent puts or not), so
   * such a listing's count is not trusted.
   */
  listingStarts(): number {
    return this.backupsAddedCount;
  }

  /**
   * What a listing (or prune) of the repository showed: how many backups, and when the newest was made
   * (it sets the last-success time only if this agent knows of none later, e.g. after a restart).
   * `startedAt` is what `listingStarts` returned before the listing.
   */
  backupsListed(count: number, newestCreatedAt: string | null, startedAt: number): void {
    if (startedAt === this.backupsAddedCount) {
      this.backupCount = count;
      this.backups.set(count);
    }
    const newest = newestCreatedAt ? Date.parse(newestCreatedAt) / 1000 : NaN;
    if (!Number.isNaN(newest) && (this.backupOkAt === null || this.backupOkAt < newest)) {
      this.backupOkAt = newest;
      this.backupOk.set(newest);
    }
  }

  /** What the repository turned out to be when opened. */
  repositoryEncrypted(encrypted: boolean): void {
    this.encrypted.set(encrypted ? 1 : 0);
  }

  /** One more backup in the repository (if the count is known). */
  backupAdded(): void {
    this.backupsAddedCount++;
    if (this.backupCount === null) return;
    this.backupCount++;
    this.backups.set(this.backupCount);
  }

  /** The exposition of our metrics alone (Prometheus text format). */
  exposition(): Promise<string> {
    return this.registry.metrics();
  }
}

/** A gauge without labels that says nothing (prom-client would otherwise expose 0: a false "never"). */
function absent(g: Gauge): void {
  g.remove({});
}
