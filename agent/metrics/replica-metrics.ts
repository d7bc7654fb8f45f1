import { Counter, Gauge, type Registry } from 'prom-client';
import type { ReplicaDropReason, ReplicaSnapshotsObserver } from '../backup/replica-snapshots.js';

/** The replicas' metrics (README "The metrics"), registered only on an agent with backup.replicas. */
export const REPLICA_METRIC_NAMES = [
  'node_admin_backup_replica_lag_seconds',
  'node_admin_backup_replica_last_success_timestamp_seconds',
  'node_admin_backup_replica_snapshots_pending',
  'node_admin_backup_replica_newest_snapshot_timestamp_seconds',
  'node_admin_backup_replica_snapshots_dropped_total',
] as const;

/** One replica as a scrape sees it, from what the agent holds in memory (never a storage request). */
export interface ReplicaFacts {
  name: string;
  /** The log archive's lag at the replica (s); null without the log archive (the series is absent then). */
  lagSeconds: number | null;
  /** When a request to the replica last succeeded (ms), a segment's or a snapshot's; null: never. */
  lastSuccessAt: number | null;
  /** The primary's snapshots waiting for it. */
  snapshotsPending: number;
  /** When its newest snapshot was made in the primary (ms); null: none known. */
  newestSnapshotAt: number | null;
}

/**
 * The replicas' metrics: read at scrape time from `replicas()`, and the snapshots given up, counted as
 * the replicas' snapshot queue drops them (it is this class's observer). Whether or not the agent
 * archives its log: a replica of snapshots alone has every series but the lag.
 */
export class ReplicaMetrics implements ReplicaSnapshotsObserver {
  private readonly dropped: Counter<'replica' | 'reason'>;

  constructor(registers: Registry[], replicas: () => ReplicaFacts[]) {
    const perReplica = (name: string, help: string, value: (r: ReplicaFacts) => number | null) =>
      new Gauge({
        name,
        help,
        labelNames: ['replica'],
        registers,
        collect() {
          this.reset();
          for (const r of replicas()) {
            const v = value(r);
            if (v !== null) this.set({ replica: r.name }, v);
          }
        },
      });
    perReplica(
      'node_admin_backup_replica_lag_seconds',
      'How long the oldest write a replica (backup.replicas) does not hold yet has waited (s); one series per replica; absent without the log archive',
      (r) => r.lagSeconds,
    );
    perReplica(
      'node_admin_backup_replica_last_success_timestamp_seconds',
      'When a request to a replica (backup.replicas) last succeeded (Unix time); absent before the first',
      (r) => (r.lastSuccessAt === null ? null : r.lastSuccessAt / 1000),
    );
    perReplica(
      'node_admin_backup_replica_snapshots_pending',
      'Snapshots of the primary waiting to be backed up into a replica (at most backup.replicaPendingSnapshots); one series per replica',
      (r) => r.snapshotsPending,
    );
    perReplica(
      'node_admin_backup_replica_newest_snapshot_timestamp_seconds',
      'When the newest snapshot a replica holds was made in the primary (Unix time); absent while none is known',
      (r) => (r.newestSnapshotAt === null ? null : r.newestSnapshotAt / 1000),
    );
    this.dropped = new Counter({
      name: 'node_admin_backup_replica_snapshots_dropped_total',
      help: 'Snapshots of the primary given up for a replica, by reason: pending_limit (more than backup.replicaPendingSnapshots waited), checkpoint_gone',
      labelNames: ['replica', 'reason'],
      registers,
    });
  }

  snapshotDropped(replica: string, reason: ReplicaDropReason): void {
    this.dropped.inc({ replica, reason });
  }
}
