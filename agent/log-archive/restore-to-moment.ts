import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';
import { fsyncDir } from '../fs/durable-fs.js';
import { logFileName } from '../leveldb/file-names.js';
import { restoreBackup } from '../backup/restore-backup.js';
import type { Repository } from '../backup/repository/repository.js';
import type { Storage } from '../backup/storage/storage.js';
import { dbSequence } from './db-sequence.js';
import { encodeLog } from './log-writer.js';
import { decodeSegment, parseWalName, segmentName, WAL_PREFIX, type SegmentBatch, type WalObject } from './segment.js';
import { chooseBase, latestMoment, timelineWindows, type BaseView, type TimelineView, type Windows } from './timeline-windows.js';
import { batchLast } from './write-batch.js';

/** The log archive's windows, from two listings (`wal/`, `snapshots/`): no object is read. */
export async function readWindows(storage: Storage): Promise<Windows> {
  const objects: WalObject[] = [];
  for await (const o of storage.list(WAL_PREFIX)) {
    const parsed = parseWalName(o.name);
    if (parsed) objects.push(parsed);
  }
  const backups = new Set<string>();
  for await (const o of storage.list('snapshots/')) backups.add(o.name.slice('snapshots/'.length));
  return timelineWindows(objects, backups);
}

/**
 * The archived batches a restore from `base` to `at` applies: every batch after the base's sequence read
 * at or before `at`, in order. Each segment is verified whole (digest, header, sequence numbers) before
 * any of it is used, and the batches must run on from the base's sequence + 1 without a gap or an overlap.
 */
export async function collectBatches(storage: Storage, timeline: TimelineView, base: BaseView, at: number): Promise<{ batches: SegmentBatch[]; segments: number }> {
  const batches: SegmentBatch[] = [];
  let segments = 0;
  let next = base.sequence + 1;
  for (const s of timeline.segments) {
    if (s.last <= base.sequence) continue;
    if (s.first > next) throw new AdminError(ErrorCodes.CORRUPT, `the log archive of timeline ${timeline.id} has no batch at sequence ${next}`);
    const name = segmentName(s);
    const decoded = decodeSegment(name, s, await storage.get(name));
    segments++;
    let done = false;
    for (const b of decoded) {
      if (batchLast(b) <= base.sequence) continue;
      if (b.readAt > at) {
        done = true;
        break;
      }
      if (b.seq !== next) throw new AdminError(ErrorCodes.CORRUPT, `segment ${name}: batch at sequence ${b.seq} where ${next} was expected`);
      batches.push(b);
      next = batchLast(b) + 1;
    }
    if (done) break;
  }
  return { batches, segments };
}

/**
 * Writes `batches` into `dir` (a base restored, not yet opened) as one new log, numbered above every
 * file there and above the MANIFEST's next file number: LevelDB's recovery replays it after the base's
 * own logs, with the sequence numbers it holds. The batches must follow the directory's last sequence.
 * Returns the sequence the directory will open with.
 */
export async function appendBatches(dir: string, batches: readonly SegmentBatch[]): Promise<number> {
  const { sequence, nextFileNumber } = await dbSequence(dir);
  let next = sequence + 1;
  for (const b of batches) {
    if (b.seq !== next) throw new AdminError(ErrorCodes.CORRUPT, `batch at sequence ${b.seq} does not follow ${next - 1}`);
    next = batchLast(b) + 1;
  }
  if (batches.length === 0) return sequence;
  const file = path.join(dir, logFileName(nextFileNumber));
  const fh = await fs.promises.open(file, 'wx', 0o640);
  try {
    await fh.writeFile(encodeLog(batches.map((b) => b.payload)));
    await fh.sync();
  } finally {
    await fh.close();
  }
  fsyncDir(dir);
  return next - 1;
}

/** Opens the directory once with classic-level (LevelDB replays the new log) and checks the sequence it reached. */
export async function openAndCheck(dir: string, expected: number): Promise<void> {
  const { ClassicLevel } = await import('classic-level');
  const db = new ClassicLevel(dir, { createIfMissing: false, errorIfExists: false });
  try {
    await db.open();
  } catch (err) {
    throw new AdminError(ErrorCodes.CORRUPT, `the restored database does not open: ${toAdminError((err as { cause?: unknown }).cause ?? err).message}`);
  }
  await db.close();
  const { sequence } = await dbSequence(dir);
  if (sequence !== expected) throw new AdminError(ErrorCodes.CORRUPT, `the restored database opened at sequence ${sequence}, not ${expected}`);
}

export interface RestoreToMomentOptions {
  repo: Repository;
  /** Ms since the epoch, or the newest restorable moment. */
  at: number | 'latest';
  /** The directory to create; must not exist, or be empty. */
  to: string;
  /** Now (ms), for refusing moments in the future. */
  now?: number;
  onProgress?: (p: { bytesDone: number; bytesTotal: number; filesTotal: number }) => void;
}

export interface RestoreToMomentResult {
  path: string;
  timeline: string;
  backup: string;
  /** The moment asked for (ms). */
  requested: number;
  /** The point reached: when the last batch applied was read (the base's time if none), and its sequence. */
  reached: { time: number; sequence: number };
  batches: number;
  segments: number;
  durationMs: number;
}

/** A moment the archive cannot restore exactly: the error names the windows there are. */
export function notRestorable(w: Windows, why: string): AdminError {
  const windows = w.timelines
    .filter((t) => t.from !== null)
    .map((t) => `${new Date(t.from!).toISOString()} to ${new Date(t.to!).toISOString()}`);
  const list = windows.length > 0 ? `restorable windows: ${windows.join(', ')}` : 'the repository holds no restorable log archive';
  return new AdminError(ErrorCodes.MOMENT_NOT_RESTORABLE, `${why}; ${list}`);
}

/**
 * Restores the database as it was at a moment: the newest base backup at or before it in the timeline
 * that holds it, plus every archived batch read at or before it. Written under a temporary sibling
 * name, opened once with classic-level and checked to have reached exactly the target sequence, then
 * renamed into place: on any failure nothing is left at `to`.
 */
export async function restoreToMoment(o: RestoreToMomentOptions): Promise<RestoreToMomentResult> {
  const started = Date.now();
  const now = o.now ?? Date.now();
  if (o.at !== 'latest' && o.at > now) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `--at ${new Date(o.at).toISOString()} is in the future`);
  const windows = await readWindows(o.repo.storage);
  const at = o.at === 'latest' ? latestMoment(windows) : o.at;
  if (at === null) throw notRestorable(windows, 'no moment can be restored');
  const chosen = chooseBase(windows, at);
  if (!chosen) {
    const first = windows.timelines.find((t) => t.from !== null);
    const where = first && at < first.from! ? 'it is before the first base backup' : windows.gaps.some((g) => g.from < at && at < g.to) ? 'it lies in a gap of the log archive' : 'it is after the last archived batch';
    throw notRestorable(windows, `${new Date(at).toISOString()} cannot be restored exactly: ${where}`);
  }
  const { timeline, base } = chosen;
  const target = path.resolve(o.to);
  const parent = path.dirname(target);
  const temp = path.join(parent, `.${path.basename(target)}.pitr-${randomBytes(4).toString('hex')}`);
  if (fs.existsSync(target) && (!fs.statSync(target).isDirectory() || fs.readdirSync(target).length > 0)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `restore target ${target} is not empty`);
  }
  try {
    await restoreBackup({ repo: o.repo, id: base.backup, to: temp, ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    const restored = await dbSequence(temp);
    if (restored.sequence !== base.sequence) {
      throw new AdminError(ErrorCodes.CORRUPT, `backup ${base.backup} holds sequence ${restored.sequence}, the log archive says ${base.sequence}`);
    }
    const { batches, segments } = await collectBatches(o.repo.storage, timeline, base, at);
    const sequence = await appendBatches(temp, batches);
    await openAndCheck(temp, sequence);
    if (fs.existsSync(target)) fs.rmdirSync(target);
    fs.renameSync(temp, target);
    fsyncDir(parent);
    const last = batches.at(-1);
    return {
      path: target,
      timeline: timeline.id,
      backup: base.backup,
      requested: at,
      reached: { time: last ? last.readAt : base.from, sequence },
      batches: batches.length,
      segments,
      durationMs: Date.now() - started,
    };
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw toAdminError(err);
  }
}
