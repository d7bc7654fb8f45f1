import type { AgentStatus, BackupReplicaStatus, LogArchiveReplicaStatus, LogArchiveStatus, RetentionPolicy } from '../../shared/api.js';
import { defineCommand } from '../command.js';
import {
  clean,
  formatBytes,
  formatDuration,
  formatKeyValues,
  formatTimeRelative,
  plural,
  printJson,
  printLines,
} from '../output.js';

export const statusCommand = defineCommand({
  command: 'status',
  describe: 'Show the agent, its checkpoints, the running operation, the schedule and free space',
  builder: (y) => y,
  run: async (_argv, ctx) => {
    const client = await ctx.agent();
    const status = await client.status();
    if (ctx.json) printJson(ctx.io.stdout, status);
    else printLines(ctx.io.stdout, formatStatus(status));
  },
});

export function formatStatus(s: AgentStatus, now: number = Date.now()): string[] {
  const c = s.checkpoints;
  const started = Date.parse(s.startedAt);
  const uptime = Number.isNaN(started) ? '' : `, up ${formatDuration(now - started)}`;
  const pairs: [string, string][] = [
    ['agent', `${clean(s.version)} (pid ${s.pid})${uptime}`],
    ['database', clean(s.dbPath)],
    ['checkpoint dir', clean(s.checkpointDir)],
  ];
  if (s.socketPath !== null) pairs.push(['socket', clean(s.socketPath)]);
  pairs.push([
    'checkpoints',
    `${plural(c.count, 'checkpoint')} (${c.pinned} pinned), ${formatBytes(c.bytes)}, ${formatBytes(c.exclusiveBytes)} exclusive`,
  ]);
  const op = s.inProgress;
  pairs.push([
    'in progress',
    op === null
      ? 'none'
      : `${op.kind} ${clean(op.id)} (${op.trigger}${op.label !== null ? `, label ${JSON.stringify(op.label)}` : ''}), ` +
        `phase ${clean(op.phase)}, started ${formatTimeRelative(op.startedAt, now)}`,
  ]);
  pairs.push(['queued', String(s.queued)]);
  const sch = s.schedule;
  if (!sch.enabled) {
    pairs.push(['schedule', 'disabled']);
  } else {
    const every = sch.intervalMs !== null ? `every ${formatDuration(sch.intervalMs)}` : 'enabled';
    pairs.push(['schedule', every]);
    pairs.push(['next run', sch.nextRunAt !== null ? formatTimeRelative(sch.nextRunAt, now) : 'not planned']);
  }
  const last = sch.lastRun;
  if (last !== null) {
    const outcome = last.ok
      ? `ok${last.checkpointId !== null ? `, ${clean(last.checkpointId)}` : ''}`
      : `failed${last.error !== null ? `: ${clean(last.error)}` : ''}`;
    pairs.push(['last run', `${formatTimeRelative(last.at, now)} ${outcome}`]);
  } else if (sch.enabled) {
    pairs.push(['last run', 'never']);
  }
  pairs.push(['retention', formatRetention(s.retention)]);
  const fs = s.filesystem;
  const pct = fs.totalBytes > 0 ? ` (${Math.round((fs.freeBytes / fs.totalBytes) * 100)}%)` : '';
  pairs.push(['free space', `${formatBytes(fs.freeBytes)} of ${formatBytes(fs.totalBytes)}${pct}`]);
  // Agents from before remote backups have no `backup` field.
  const b = s.backup ?? null;
  if (b === null) {
    pairs.push(['backups', 'not configured']);
  } else {
    pairs.push(['backup repo', clean(b.repository)]);
    // Agents from before pacing have no `pace` fields.
    if (b.pace !== undefined) pairs.push(['backup pace', typeof b.pace === 'string' ? b.pace : `${formatBytes(b.pace.bytesPerSecond)}/s`]);
    const run = b.inProgress;
    if (run !== null) {
      const pct = run.bytesTotal > 0 ? ` ${Math.floor((run.bytesDone / run.bytesTotal) * 100)}%,` : '';
      const paced =
        run.paceBytesPerSecond === undefined
          ? ''
          : `, ${run.paceBytesPerSecond === null ? 'full speed' : `held to ${formatBytes(run.paceBytesPerSecond)}/s`} (waited ${formatDuration((run.pacedSeconds ?? 0) * 1000)})`;
      pairs.push([
        'backup running',
        `${run.checkpointId !== null ? `checkpoint ${clean(run.checkpointId)}, ` : ''}${clean(run.phase)},${pct} ` +
          `uploaded ${formatBytes(run.bytesUploaded)}${paced}, started ${formatTimeRelative(run.startedAt, now)}`,
      ]);
    }
    const lb = b.lastBackup;
    pairs.push([
      'last backup',
      lb === null
        ? 'never (since the agent started)'
        : `${formatTimeRelative(lb.at, now)} ${lb.ok ? `ok${lb.id !== null ? `, ${clean(lb.id)}` : ''}` : `failed${lb.error !== null ? `: ${clean(lb.error)}` : ''}`}`,
    ]);
  }
  pairs.push(...formatLogArchive(s.logArchive ?? null, now));
  pairs.push(...formatReplicas(b?.replicas ?? [], s.logArchive?.replicas ?? [], now));
  return formatKeyValues(pairs);
}

/**
 * Each replica (backup.replicas): the snapshots the agent backs up into it, then its copy of the log
 * archive, then its last error (the newer of the two sides'). Agents before snapshot replicas have no
 * `backup.replicas`: only the log archive's line.
 */
function formatReplicas(snapshots: readonly BackupReplicaStatus[], archive: readonly LogArchiveReplicaStatus[], now: number): [string, string][] {
  const pairs: [string, string][] = [];
  const names = [...new Set([...snapshots.map((r) => r.name), ...archive.map((r) => r.name)])];
  for (const name of names) {
    const s = snapshots.find((r) => r.name === name);
    const a = archive.find((r) => r.name === name);
    pairs.push(['replica', clean(name)]);
    if (s) {
      const newest = s.newestSnapshot === null ? 'newest snapshot not known yet' : `newest snapshot ${clean(s.newestSnapshot.id)}, made ${formatTimeRelative(s.newestSnapshot.createdAt, now)}`;
      const copying = s.copying !== null ? `, backing up ${clean(s.copying)}` : '';
      const dropped = s.dropped > 0 ? `, ${s.dropped} dropped since start` : '';
      pairs.push(['  snapshots', `${s.state}; ${newest}; ${s.pending.length} waiting${copying}${dropped}`]);
    }
    if (a) {
      pairs.push(['  log archive', `${clean(a.state)}, lag ${formatDuration(a.lagSeconds * 1000)}; ${plural(a.waitingSegments, 'segment')} (${formatBytes(a.waitingBytes)}${a.spooledBytes > 0 ? `, ${formatBytes(a.spooledBytes)} of it on disk` : ''}) waiting`]);
    }
    const errors = [s?.lastError, a?.lastError].filter((e): e is { at: string; error: string } => e !== null && e !== undefined);
    const last = errors.sort((x, y) => Date.parse(y.at) - Date.parse(x.at))[0];
    if (last) pairs.push(['  last error', `${formatTimeRelative(last.at, now)}: ${clean(last.error)}`]);
  }
  return pairs;
}

/** The log archiver's lines of `status` (agents before it have no `logArchive` field: off). */
function formatLogArchive(a: LogArchiveStatus | null, now: number): [string, string][] {
  if (a === null) return [['log archive', 'off']];
  const t = a.timeline;
  const pairs: [string, string][] = [
    ['log archive', `${clean(a.state)}${t !== null ? `, timeline ${clean(t.id)} (from sequence ${t.sequence}, began ${formatTimeRelative(t.startedAt, now)})` : ''}, every ${formatDuration(a.intervalMs)}`],
    [
      'archive lag',
      `${formatDuration(a.lag.seconds * 1000)}; ${plural(a.lag.batches, 'batch', 'batches')} (${formatBytes(a.lag.bytes)}) read and not stored, ${formatBytes(a.lag.unreadBytes)} of the log not read`,
    ],
    [
      'last shipped',
      a.lastShipped === null
        ? 'nothing yet (since the agent started)'
        : `${formatTimeRelative(a.lastShipped.at, now)}, up to sequence ${a.lastShipped.sequence}; ${plural(a.shippedSegments, 'segment')}, ${formatBytes(a.shippedBytes)} since start`,
    ],
  ];
  if (a.lastBreak !== null) {
    pairs.push(['timeline breaks', `${a.breaks}, last ${formatTimeRelative(a.lastBreak.at, now)}: ${clean(a.lastBreak.reason)} (${clean(a.lastBreak.detail)})`]);
  }
  if (a.lastError !== null) pairs.push(['archive error', `${formatTimeRelative(a.lastError.at, now)}: ${clean(a.lastError.error)}`]);
  return pairs;
}

function formatRetention(r: RetentionPolicy): string {
  const parts = [`keep last ${r.keepLast}`, `hourly ${r.keepHourly}`, `daily ${r.keepDaily}`, `weekly ${r.keepWeekly}`];
  parts.push(r.maxAgeMs !== null ? `max age ${formatDuration(r.maxAgeMs)}` : 'no max age');
  parts.push(`min free ${formatBytes(r.minFreeBytes)}`);
  return parts.join(', ');
}
