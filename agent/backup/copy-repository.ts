import type { ArchiveCopyProgress, ArchiveCopySummary, CopyProgress, CopySelection, CopySummary } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { archiveBaseBackups, copyLogArchive } from '../log-archive/archive-copy.js';
import { readWindows } from '../log-archive/restore-to-moment.js';
import { timelineReport } from '../log-archive/timeline-report.js';
import type { Repository } from '../repository/repository.js';
import { mapLimit } from '../fs/map-limit.js';
import { withCopyLocks } from './copy-session.js';
import { copySnapshots, selectSnapshots } from './copy-snapshots.js';
import { RateLimiter } from './rate-limiter.js';

/** The named backups checked at once before the copy starts. */
const SNAPSHOT_READS_AT_ONCE = 16;

export interface CopyRepositoryOptions {
  /** The source, opened (not locked: this locks it). */
  from: Repository;
  /** Opens or makes the destination (openCopyDestination): called once, after the source is locked. */
  openTo: () => Promise<{ repo: Repository; created: boolean }>;
  /** Which backups; null only with `logArchive` (then only the backups the archive's timelines start from). */
  select: CopySelection | null;
  logArchive: boolean;
  /** Bytes per second stored at the destination, at most, by the backups' phase and then the archive's (null: none). */
  bandwidthLimit: number | null;
  onProgress?: (p: CopyProgress | ArchiveCopyProgress) => void;
  signal?: AbortSignal;
}

/** What a copy did; the caller adds what only it knows (the ends as the user named them, the time). */
export type CopyRepositoryResult = Omit<CopySummary, 'from' | 'to' | 'durationMs'>;

/**
 * `backup copy`, whoever runs it (the CLI offline, the agent for the socket): the selected backups
 * (copySnapshots), then with `logArchive` the archive (copyLogArchive) and the backups its timelines
 * start from, both ends locked shared (withCopyLocks). Backup ids named that the source lacks are refused
 * (NOT_FOUND) before anything is made at the destination. Stopped by `signal`: CANCELLED, what was
 * stored indexed for the next run. The summary's windows are the destination's
 * own, from its listing after the copy.
 */
export async function copyRepository(o: CopyRepositoryOptions): Promise<CopyRepositoryResult> {
  try {
    return await copyUnder(o);
  } catch (err) {
    // Whatever the copy was doing when the signal came (a wait for the limit, a read, a write), the cancel is what happened.
    if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, 'the copy was cancelled; run it again to go on (nothing it stored is sent again)');
    throw err;
  }
}

async function copyUnder(o: CopyRepositoryOptions): Promise<CopyRepositoryResult> {
  const { from, select } = o;
  // Meanwhile the locks are taken, the destination is opened and both indexes are loaded (started by
  // the first check, the threads held the first store back by 0.4 to 0.8 s, measured on 2 cores).
  from.codec.warmUp();
  if (select && 'ids' in select) await mapLimit(select.ids, SNAPSHOT_READS_AT_ONCE, (id) => from.readSnapshot(id));
  return withCopyLocks(from, o.openTo, async (ends) => {
    // The archive's windows start at its bases: their backups come along, whatever else is selected.
    let chosen = select ?? { ids: [] };
    if (o.logArchive) {
      const selected = select === null ? [] : selectSnapshots(await from.listSnapshots(), select).map((s) => s.id);
      chosen = { ids: [...new Set([...selected, ...(await archiveBaseBackups(from))])].sort() };
    }
    const snapshots = await copySnapshots({
      ...ends,
      select: chosen,
      bandwidthLimit: o.bandwidthLimit,
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    let logArchive: ArchiveCopySummary | undefined;
    if (o.logArchive) {
      const progress: ArchiveCopyProgress = { phase: 'log-archive', objects: 0, bytes: 0 };
      const copied = await copyLogArchive(from, ends.to, {
        limiter: new RateLimiter(o.bandwidthLimit),
        ...(o.signal ? { signal: o.signal } : {}),
        onObject: (object) => {
          progress.objects++;
          progress.bytes += object.bytes;
          o.onProgress?.({ ...progress });
        },
      });
      logArchive = { ...copied, windows: timelineReport(await readWindows(ends.to)) };
    }
    return { created: ends.created, packsRecovered: ends.packsRecovered, ...snapshots, ...(logArchive ? { logArchive } : {}) };
  });
}
