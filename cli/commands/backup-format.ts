import type { BackupPruneResult, BackupRecord, BackupVerifyReport } from '../../shared/api.js';
import { clean, formatBytes, formatDuration, formatKeyValues, formatTable, formatTime, plural } from '../output.js';
import type { Column, Io } from '../output.js';

/** Shared by the backup commands: how records, reports and progress look to a human. */

const columns: Column<BackupRecord>[] = [
  { header: 'ID', value: (r) => r.id },
  { header: 'CREATED', value: (r) => formatTime(r.createdAt) },
  { header: 'CHECKPOINT', value: (r) => r.checkpoint.id },
  { header: 'PINNED', value: (r) => (r.pinned ? 'yes' : 'no') },
  { header: 'FILES', value: (r) => String(r.files), align: 'right' },
  { header: 'SIZE', value: (r) => formatBytes(r.bytes), align: 'right' },
  { header: 'LABEL', value: (r) => r.checkpoint.label ?? '-' },
];

export function formatBackupTable(records: readonly BackupRecord[]): string[] {
  if (records.length === 0) return ['no backups'];
  return formatTable(columns, records);
}

export function formatBackup(r: BackupRecord): string[] {
  const c = r.checkpoint;
  return formatKeyValues([
    ['id', clean(r.id)],
    ['created', formatTime(r.createdAt)],
    ['pinned', r.pinned ? 'yes' : 'no'],
    ['checkpoint', `${clean(c.id)} (${clean(c.trigger)}, taken ${formatTime(c.createdAt)})`],
    ['label', c.label !== null ? clean(c.label) : '-'],
    ['files', String(r.files)],
    ['size', `${formatBytes(r.bytes)} (${r.bytes} bytes)`],
  ]);
}

/** The one line `backup create` prints. */
export function formatBackupCreated(r: BackupRecord): string {
  const uploaded = r.bytesUploaded !== undefined ? `, uploaded ${formatBytes(r.bytesUploaded)}` : '';
  const took = r.durationMs !== undefined ? ` in ${formatDuration(r.durationMs)}` : '';
  return `backed up checkpoint ${clean(r.checkpoint.id)} as ${clean(r.id)} (${plural(r.files, 'file')}, ${formatBytes(r.bytes)}${uploaded}${took})`;
}

export function formatBackupPrune(r: BackupPruneResult): string[] {
  const kept = `${plural(r.kept.length, 'backup')} kept`;
  const verb = r.dryRun ? 'would remove' : 'removed';
  const wal = r.walObjectsDeleted ?? 0; // an agent older than the log archive does not say
  const archived = wal > 0 ? `, ${plural(wal, 'archived log object')} ${r.dryRun ? 'to delete' : 'deleted'}` : '';
  const packs = `${plural(r.packsDeleted, 'pack')} ${r.dryRun ? 'to delete' : 'deleted'}, ${r.packsRewritten} ${r.dryRun ? 'to rewrite' : 'rewritten'}${archived}`;
  // An agent older than this field does not say (undefined).
  const base = r.logArchiveBase ? [`kept ${clean(r.logArchiveBase)} beyond the policy: the newest base of the log archive's newest timeline`] : [];
  return [
    ...r.removed.map((d) => `${verb} ${clean(d.id)} (${d.reason})`),
    ...base,
    r.removed.length === 0 && r.packsDeleted === 0 && r.packsRewritten === 0 && wal === 0
      ? `${r.dryRun ? 'nothing would be removed' : 'nothing removed'}; ${kept}`
      : `${r.dryRun ? 'would free' : 'freed'} ${formatBytes(r.bytesFreed)} (${packs}); ${kept}`,
  ];
}

/** The report's summary line, then each error (each names the object at fault). */
export function formatBackupVerify(r: BackupVerifyReport, id: string | undefined): string[] {
  const what = id !== undefined ? `backup ${clean(id)}` : `repository (${plural(r.snapshots, 'backup')})`;
  const read = r.bytesRead > 0 ? `, ${formatBytes(r.bytesRead)} read back` : '';
  const segments = id === undefined && r.segments > 0 ? `, ${plural(r.segments, 'log archive segment')}` : '';
  const summary = `${what} ${r.ok ? 'ok' : 'FAILED'}: ${plural(r.packs, 'pack')}, ${plural(r.blobs, 'blob')}${segments} checked${read}`;
  return [summary, ...r.errors.map((e) => `error: ${clean(e)}`)];
}

/**
 * A one-line progress bar on stderr, redrawn in place; only when stderr is a terminal (null otherwise:
 * pipes, files and tests get nothing). `finish()` erases it, so what follows starts on a clean line.
 */
export interface ProgressBar {
  update(done: number, total: number, extra?: string): void;
  finish(): void;
}

export function progressBar(io: Io, title: string): ProgressBar | null {
  const stderr = io.stderr as { isTTY?: boolean; columns?: number; write(chunk: string): unknown };
  if (stderr.isTTY !== true) return null;
  const started = Date.now();
  let drawnAt = 0;
  let drawn = false;
  return {
    update(done, total, extra) {
      const now = Date.now();
      if (now - drawnAt < 100 && done < total) return;
      drawnAt = now;
      const elapsed = Math.max(1, now - started);
      const rate = (done * 1000) / elapsed;
      const fraction = total > 0 ? Math.min(1, done / total) : 0;
      const eta = rate > 0 && total > done ? `ETA ${formatDuration(((total - done) / rate) * 1000)}` : '';
      const width = 20;
      const filled = Math.round(fraction * width);
      const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
      const parts = [
        title,
        bar,
        `${String(Math.floor(fraction * 100)).padStart(3)}%`,
        `${formatBytes(done)}/${formatBytes(total)}`,
        `${formatBytes(rate)}/s`,
        eta,
        extra ?? '',
      ].filter((p) => p !== '');
      let text = parts.join('  ');
      const columns = stderr.columns !== undefined && stderr.columns >= 20 ? stderr.columns : 100;
      if (text.length > columns - 1) text = text.slice(0, Math.max(0, columns - 1));
      stderr.write(`\r\x1b[K${text}`);
      drawn = true;
    },
    finish() {
      if (drawn) stderr.write('\r\x1b[K');
      drawn = false;
    },
  };
}
