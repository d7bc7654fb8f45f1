import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';
import { describeMoment, parseMoment, parseTimelineId, type Moment } from '../../shared/input-rules.js';
import { fsyncDir } from '../fs/durable-fs.js';
import { logFileName } from '../leveldb/file-names.js';
import { restoreBackup } from '../backup/restore-backup.js';
import type { Repository } from '../repository/repository.js';
import { StorageError, isStorageError, type ObjectInfo } from '../storage/storage.js';
import { mapLimit } from '../fs/map-limit.js';
import { dbSequence } from './db-sequence.js';
import { LogEncoder } from './log-writer.js';
import { decodeSegment, parseWalName, segmentName, WAL_PREFIX, type SegmentBatch, type WalObject } from './segment.js';
import { chooseBase, chooseBaseForSequence, firstSequence, latestMoment, timelineWindows, type BaseView, type TimelineView, type Windows } from './timeline-windows.js';
import { batchLast } from './write-batch.js';

/** The log archive's windows, from two listings (`wal/`, `snapshots/`) of a Repository or a bare Storage: no object is read. */
export async function readWindows(storage: { list(prefix: string): AsyncIterable<ObjectInfo> }): Promise<Windows> {
  const objects: WalObject[] = [];
  for await (const o of storage.list(WAL_PREFIX)) {
    const parsed = parseWalName(o.name);
    if (parsed) objects.push(parsed);
  }
  const backups = new Set<string>();
  for await (const o of storage.list('snapshots/')) backups.add(o.name.slice('snapshots/'.length));
  return timelineWindows(objects, backups);
}

/** Timeline records read at once by checkTimelineRecords. */
const RECORDS_AT_ONCE = 16;

/**
 * Opens every record of `timeline` (its bases, `wal/<timeline>/base/...`, and its stop and resume
 * marks, `wal/<timeline>/mark/...`) and checks that each says what its name says. The windows are
 * computed from names alone, which the store could forge, damage or copy: a restore relies on them
 * (which base, from when, up to when, across which restart), so before one is used each record must
 * open (in format 3: authenticate under its own name) and agree with its name. CORRUPT naming it
 * otherwise. A record deleted since the listing is passed over (prune took it).
 */
export async function checkTimelineRecords(repo: Repository, timeline: string): Promise<void> {
  const names: string[] = [];
  for (const kind of ['base', 'mark']) for await (const o of repo.list(`${WAL_PREFIX}${timeline}/${kind}/`)) names.push(o.name);
  await mapLimit(names, RECORDS_AT_ONCE, async (name) => {
    const parsed = parseWalName(name);
    if (parsed === null || parsed.kind === 'segment') return;
    try {
      await readTimelineRecord(repo, parsed);
    } catch (err) {
      if (isStorageError(err, 'not-found')) return;
      throw err;
    }
  });
}

/**
 * A base record or a mark, opened (in format 3: authenticated under its own name) and checked to say
 * what its name says: its plaintext. CORRUPT naming it otherwise; `not-found` (StorageError) when absent.
 */
export async function readTimelineRecord(repo: Repository, parsed: Exclude<WalObject, { kind: 'segment' }>): Promise<Buffer> {
  const { name } = parsed;
  const bytes = await repo.getObject(name);
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new AdminError(ErrorCodes.CORRUPT, `timeline record ${name} is damaged: it is not JSON`);
  }
  let named: Record<string, unknown>;
  let fields: readonly string[];
  if (parsed.kind === 'base') {
    named = parsed.base;
    // A record named before `last` was in names (read as MAX_SAFE_INTEGER) is checked on the rest.
    fields = parsed.base.last === Number.MAX_SAFE_INTEGER ? ['timeline', 'backup', 'sequence', 'from', 'to'] : ['timeline', 'backup', 'sequence', 'last', 'from', 'to'];
  } else {
    named = parsed.mark as unknown as Record<string, unknown>;
    fields = ['timeline', 'kind', 'last', 'at'];
  }
  for (const key of fields) {
    if (record?.[key] !== named[key]) throw new AdminError(ErrorCodes.CORRUPT, `timeline record ${name} is damaged: its ${key} is not the name's`);
  }
  return bytes;
}

/**
 * The archived batches a restore from `base` to `until` applies: every batch after the base's sequence
 * read at or before `until` (ms), or, with `{sequence}`, up to the batch holding that sequence number,
 * in order, one segment in memory at a time. Each segment is verified whole (digest, header, sequence
 * numbers) before any of it is used, and the batches must run on from the base's sequence + 1 without a
 * gap or an overlap. `counts.segments` says how many segments were read.
 */
export async function* archivedBatches(
  repo: Repository,
  timeline: TimelineView,
  base: BaseView,
  until: number | { sequence: number },
  counts: { segments: number } = { segments: 0 },
): AsyncGenerator<SegmentBatch> {
  let next = base.sequence + 1;
  const beyond = typeof until === 'number' ? (b: SegmentBatch) => b.readAt > until : (b: SegmentBatch) => b.seq > until.sequence;
  for (const s of timeline.segments) {
    if (s.last <= base.sequence) continue;
    if (typeof until !== 'number' && s.first > until.sequence) return;
    if (s.first > next) throw new AdminError(ErrorCodes.CORRUPT, `the log archive of timeline ${timeline.id} has no batch at sequence ${next}`);
    const name = segmentName(s);
    const decoded = await decodeSegment(name, s, await repo.getObject(name));
    counts.segments++;
    for (const b of decoded) {
      if (batchLast(b) <= base.sequence) continue;
      if (beyond(b)) return;
      if (b.seq !== next) throw new AdminError(ErrorCodes.CORRUPT, `segment ${name}: batch at sequence ${b.seq} where ${next} was expected`);
      yield b;
      next = batchLast(b) + 1;
    }
  }
}

/** archivedBatches, all in memory (tests; a restore streams them). */
export async function collectBatches(repo: Repository, timeline: TimelineView, base: BaseView, at: number): Promise<{ batches: SegmentBatch[]; segments: number }> {
  const counts = { segments: 0 };
  const batches: SegmentBatch[] = [];
  for await (const b of archivedBatches(repo, timeline, base, at, counts)) batches.push(b);
  return { batches, segments: counts.segments };
}

/** Written to the new log in pieces of about this size: memory stays bounded whatever the log's size. */
const WRITE_CHUNK = 1024 * 1024;

/**
 * Writes `batches` into `dir` (a base restored, not yet opened) as one new log, numbered above every
 * file there and above the MANIFEST's next file number: LevelDB's recovery replays it after the base's
 * own logs, with the sequence numbers it holds. The batches must follow the directory's last sequence
 * (checked before each is written). Streams: about one WRITE_CHUNK held at a time. No batch, no log.
 * Returns the sequence the directory will open with.
 */
export async function appendBatches(
  dir: string,
  batches: Iterable<SegmentBatch> | AsyncIterable<SegmentBatch>,
): Promise<number> {
  return (await writeBatches(dir, batches)).sequence;
}

async function writeBatches(
  dir: string,
  batches: Iterable<SegmentBatch> | AsyncIterable<SegmentBatch>,
): Promise<{ sequence: number; batches: number; lastReadAt: number | null }> {
  const { sequence, nextFileNumber } = await dbSequence(dir);
  let next = sequence + 1;
  let count = 0;
  let lastReadAt: number | null = null;
  let fh: fs.promises.FileHandle | null = null;
  const encoder = new LogEncoder();
  let parts: Buffer[] = [];
  let held = 0;
  const flush = async () => {
    if (held === 0) return;
    await fh!.writev(parts);
    parts = [];
    held = 0;
  };
  try {
    for await (const b of batches) {
      if (b.seq !== next) throw new AdminError(ErrorCodes.CORRUPT, `batch at sequence ${b.seq} does not follow ${next - 1}`);
      next = batchLast(b) + 1;
      fh ??= await fs.promises.open(path.join(dir, logFileName(nextFileNumber)), 'wx', 0o640);
      for (const p of encoder.encode(b.payload)) {
        parts.push(p);
        held += p.length;
      }
      if (held >= WRITE_CHUNK) await flush();
      count++;
      lastReadAt = b.readAt;
    }
    if (fh) {
      await flush();
      await fh.sync();
    }
  } catch (err) {
    // A log cut short must not be left for LevelDB to replay.
    if (fh) {
      await fh.close().catch(() => {});
      fh = null;
      fs.rmSync(path.join(dir, logFileName(nextFileNumber)), { force: true });
    }
    throw err;
  } finally {
    await fh?.close();
  }
  if (fh) fsyncDir(dir);
  return { sequence: next - 1, batches: count, lastReadAt };
}

/**
 * The timeline and base a moment restores from, and the moment itself (`latest` as its time); a moment
 * no window holds is MOMENT_NOT_RESTORABLE saying why and naming the windows.
 */
export function chooseForMoment(
  all: Windows,
  moment: Moment,
  only?: string,
): { timeline: TimelineView; base: BaseView; requested: { kind: 'time'; ms: number } | { kind: 'sequence'; sequence: number } } {
  const windows = only === undefined ? all : { timelines: all.timelines.filter((t) => t.id === only), gaps: [] };
  if (only !== undefined && windows.timelines.length === 0) throw new AdminError(ErrorCodes.NOT_FOUND, `no timeline ${only} in the log archive`);
  if (moment.kind === 'sequence') {
    const n = moment.sequence;
    const chosen = chooseBaseForSequence(windows, n);
    if (chosen) return { ...chosen, requested: moment };
    const restorable = windows.timelines.filter((t) => t.from !== null);
    const where =
      restorable.length > 0 && restorable.every((t) => t.lastSequence! < n)
        ? 'no timeline has archived it (yet)'
        : restorable.every((t) => firstSequence(t)! > n)
          ? 'it is before the first base backup of every timeline'
          : 'no timeline holding it reaches it from a base backup';
    throw notRestorable(windows, `seq:${n} cannot be restored exactly: ${where}`);
  }
  const at = moment.kind === 'latest' ? latestMoment(windows) : moment.ms;
  if (at === null) throw notRestorable(windows, 'no moment can be restored');
  const chosen = chooseBase(windows, at);
  if (!chosen) {
    const first = windows.timelines.find((t) => t.from !== null);
    const where = first && at < first.from! ? 'it is before the first base backup' : windows.gaps.some((g) => g.from < at && at < g.to) ? 'it lies in a gap of the log archive' : 'it is after the last archived batch';
    throw notRestorable(windows, `${describeMoment({ kind: 'time', ms: at })} cannot be restored exactly: ${where}`);
  }
  return { ...chosen, requested: { kind: 'time', ms: at } };
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
  /**
   * The moment (shared/input-rules.ts parseMoment: checked here, whatever the caller's types said): a
   * time (ms since the epoch, an ISO-8601 string with its zone), `seq:<n>` or `{kind:'sequence'}` for the
   * state right after the batch holding sequence number n, or `latest`.
   */
  at: Moment | number | string;
  /** Only this timeline (its id, as `backup timeline` lists them): where several histories hold a sequence number. */
  timeline?: string;
  /** The directory to create; must not exist, or be empty. */
  to: string;
  /** Now (ms), for refusing moments in the future. */
  now?: number;
  /** The base backup's reads at once (restoreBackup's default without). */
  concurrency?: number;
  onProgress?: (p: { bytesDone: number; bytesTotal: number; filesTotal: number }) => void;
}

export interface RestoreToMomentResult {
  path: string;
  timeline: string;
  backup: string;
  /** The moment asked for, `latest` resolved to its time. */
  requested: { kind: 'time'; ms: number } | { kind: 'sequence'; sequence: number };
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
    .map((t) => `${new Date(t.from!).toISOString()} to ${new Date(t.to!).toISOString()} (seq:${firstSequence(t)} to seq:${t.lastSequence})`);
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
  const at = parseMoment(o.at, '--at');
  if (o.timeline !== undefined) parseTimelineId(o.timeline, '--timeline');
  if (at.kind === 'time' && at.ms > now) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `--at ${new Date(at.ms).toISOString()} is in the future`);
  // A running archiver merges aged segments and then deletes their inputs: a segment listed can be gone
  // when it is read (its merged replacement is there). The listing is taken again, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await restoreOnce(o, at, started);
    } catch (err) {
      if (!(err instanceof StorageError && err.kind === 'not-found' && err.objectName?.startsWith(WAL_PREFIX)) || attempt === MAX_ATTEMPTS) throw err;
    }
  }
}

const MAX_ATTEMPTS = 3;

async function restoreOnce(o: RestoreToMomentOptions, moment: Moment, started: number): Promise<RestoreToMomentResult> {
  const windows = await readWindows(o.repo);
  const { timeline, base, requested } = chooseForMoment(windows, moment, o.timeline);
  await checkTimelineRecords(o.repo, timeline.id);
  const until = requested.kind === 'time' ? requested.ms : { sequence: requested.sequence };
  const target = path.resolve(o.to);
  const parent = path.dirname(target);
  const temp = path.join(parent, `.${path.basename(target)}.pitr-${randomBytes(4).toString('hex')}`);
  if (fs.existsSync(target) && (!fs.statSync(target).isDirectory() || fs.readdirSync(target).length > 0)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `restore target ${target} is not empty`);
  }
  try {
    await restoreBackup({ repo: o.repo, id: base.backup, to: temp, ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}), ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    const restored = await dbSequence(temp);
    if (restored.sequence !== base.sequence) {
      throw new AdminError(ErrorCodes.CORRUPT, `backup ${base.backup} holds sequence ${restored.sequence}, the log archive says ${base.sequence}`);
    }
    const counts = { segments: 0 };
    const written = await writeBatches(temp, archivedBatches(o.repo, timeline, base, until, counts));
    const sequence = written.sequence;
    if (requested.kind === 'sequence' && sequence < requested.sequence) {
      throw new AdminError(ErrorCodes.CORRUPT, `the log archive of timeline ${timeline.id} ends at sequence ${sequence}, before ${requested.sequence}`);
    }
    await openAndCheck(temp, sequence);
    if (fs.existsSync(target)) fs.rmdirSync(target);
    fs.renameSync(temp, target);
    fsyncDir(parent);
    return {
      path: target,
      timeline: timeline.id,
      backup: base.backup,
      requested,
      reached: { time: written.lastReadAt ?? base.from, sequence },
      batches: written.batches,
      segments: counts.segments,
      durationMs: Date.now() - started,
    };
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw err instanceof StorageError ? err : toAdminError(err);
  }
}
