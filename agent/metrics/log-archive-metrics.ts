import { Counter, Gauge, type Registry } from 'prom-client';
import type { ErrorCode } from '../../shared/errors.js';
import type { BreakReason, LogArchiveObserver } from '../log-archive/log-archiver.js';

/** The log archive's metrics (README "The metrics"), registered only on an agent that archives its log. */
export const LOG_ARCHIVE_METRIC_NAMES = [
  'node_admin_log_archive_last_shipped_timestamp_seconds',
  'node_admin_log_archive_lag_seconds',
  'node_admin_log_archive_lag_bytes',
  'node_admin_log_archive_timeline_breaks_total',
  'node_admin_log_archive_shipped_bytes_total',
  'node_admin_log_archive_shipped_segments_total',
  'node_admin_log_archive_ship_failures_total',
] as const;

/** Where a scrape reads the lag: from what the archiver holds (and one fstat per open log), never storage. */
export interface LogArchiveLagSource {
  /** Seconds the oldest write not yet stored has waited; null before the archiver exists. */
  lagSeconds(): number | null;
  /** Bytes read and not stored plus bytes of the live logs not read; null before the archiver exists. */
  lagBytes(): Promise<number | null>;
}

/**
 * The log archive's metrics, fed by the archiver as things happen (it is the archiver's observer) and,
 * for the lag, read at scrape time from `source`. No metric here is ever computed from storage.
 *
 * Only an agent that archives registers them: on another, their absence says "no log archive" (a lag of 0
 * or a break counter of 0 would say it is healthy). node_admin_log_archive_timeline_breaks_total counts
 * `start` (an agent start that could not prove the database is where the archive ends, so began a new
 * timeline: a first start, a restore, unarchived writes; expected, not alerted on) and the other reasons
 * (BreakReason: gap, fork, damaged, replaced, ...), which the alert NodeAdminLogArchiveTimelineBroken reads.
 */
export class LogArchiveMetrics implements LogArchiveObserver {
  private readonly lastShipped: Gauge;
  private readonly breaks: Counter<'reason'>;
  private readonly shippedBytes: Counter;
  private readonly shippedSegments: Counter;
  private readonly failures: Counter<'code'>;

  constructor(registers: Registry[], source: LogArchiveLagSource) {
    this.lastShipped = new Gauge({
      name: 'node_admin_log_archive_last_shipped_timestamp_seconds',
      help: 'When the log archiver last stored a segment of new writes (Unix time); absent before the first (an idle node ships nothing)',
      registers,
    });
    this.lastShipped.remove({});
    new Gauge({
      name: 'node_admin_log_archive_lag_seconds',
      help: 'How long the oldest write not yet stored in the log archive has waited (s): about the poll interval when up to date, growing while storage fails or a new base is taken',
      registers,
      collect() {
        const v = source.lagSeconds();
        if (v === null) this.remove({});
        else this.set(v);
      },
    });
    new Gauge({
      name: 'node_admin_log_archive_lag_bytes',
      help: 'Bytes of the log not yet in the log archive: batches read and waiting, plus the live logs not read yet',
      registers,
      async collect() {
        const v = await source.lagBytes();
        if (v === null) this.remove({});
        else this.set(v);
      },
    });
    this.breaks = new Counter({
      name: 'node_admin_log_archive_timeline_breaks_total',
      help: 'Timelines the log archiver ended, by reason: start (a start that could not go on with the timeline; expected), gap, fork, damaged, replaced, overlap, read_error, spool_full',
      labelNames: ['reason'],
      registers,
    });
    this.shippedBytes = new Counter({
      name: 'node_admin_log_archive_shipped_bytes_total',
      help: 'Bytes of log segments the log archiver stored',
      registers,
    });
    this.shippedSegments = new Counter({
      name: 'node_admin_log_archive_shipped_segments_total',
      help: 'Log segments the log archiver stored',
      registers,
    });
    this.failures = new Counter({
      name: 'node_admin_log_archive_ship_failures_total',
      help: 'Failed attempts to store a log segment or base record, by stable error code (each retried at the next interval)',
      labelNames: ['code'],
      registers,
    });
  }

  shipped(bytes: number, at: number): void {
    this.shippedBytes.inc(bytes);
    this.shippedSegments.inc();
    this.lastShipped.set(at / 1000);
  }

  shipFailed(code: ErrorCode): void {
    this.failures.inc({ code });
  }

  timelineBreak(reason: BreakReason): void {
    this.breaks.inc({ reason });
  }
}
