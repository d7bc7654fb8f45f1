import type { RateLimiter } from '../backup/rate-limiter.js';
import type { Repository } from '../repository/repository.js';
import { readTimelineRecord } from './restore-to-moment.js';
import { decodeSegment, parseWalName, segmentName, walTimeline, WAL_PREFIX, type SegmentInfo, type WalObject } from './segment.js';
import { coveringChain } from './timeline-windows.js';

/** Segments fetched and verified ahead of the one being stored (each at most a merged segment, 8 MiB). */
const READ_AHEAD = 4;

export interface ArchiveCopyOptions {
  /** Only these timelines (every one when absent). */
  timelines?: ReadonlySet<string>;
  /** Paces the bytes stored at the destination (`--limit-upload`). */
  limiter?: RateLimiter;
  signal?: AbortSignal;
  /** Called after each object stored at the destination. */
  onObject?: (o: { name: string; bytes: number }) => void;
}

export interface ArchiveCopyResult {
  timelines: number;
  /** Segments stored at the destination, and the plaintext bytes they hold. */
  segments: number;
  bytes: number;
  /** Base records and marks stored at the destination. */
  records: number;
  /** Objects the destination already had (by name, or a segment covered by one of its own). */
  present: number;
}

/**
 * Copies the log archive (`wal/`) of `from` into `to` (`backup copy --log-archive`): per timeline, the
 * segments of its covering chain in chain order, then its base records and marks. Every object is read
 * and verified at the source first — a segment opened and decoded whole against its name, a record
 * checked to say what its name says — and stored through the destination's own codec, so the keys of the
 * two repositories need not be the same, nor their formats. Copies only what the destination lacks and
 * never deletes there: run again, it sends nothing; cut short, it resumes where it stopped (each object is
 * stored atomically under its name).
 *
 * The destination never claims more than it holds at any moment: its windows come from its own listing,
 * a segment still missing from its chain cuts the window there, and a record extends a window only as far
 * as the segments present reach (timeline-windows.ts). A base is restorable there only once its backup
 * is (the caller copies the snapshots first). Call with both repositories locked (shared).
 */
export async function copyLogArchive(from: Repository, to: Repository, options: ArchiveCopyOptions = {}): Promise<ArchiveCopyResult> {
  to.assertWritable();
  const source = await listWal(from);
  const present = await listWal(to);
  const presentNames = new Set(present.map((o) => o.name));
  const result: ArchiveCopyResult = { timelines: 0, segments: 0, bytes: 0, records: 0, present: 0 };
  for (const timeline of [...new Set(source.map(walTimeline))].sort()) {
    if (options.timelines && !options.timelines.has(timeline)) continue;
    result.timelines++;
    const mine = source.filter((o) => walTimeline(o) === timeline);
    const theirs = present.flatMap((o) => (o.kind === 'segment' && o.segment.timeline === timeline ? [o.segment] : []));
    const chain = coveringChain(mine.flatMap((o) => (o.kind === 'segment' ? [o.segment] : [])));
    const missing = chain.filter((s) => !theirs.some((t) => t.first <= s.first && s.last <= t.last));
    result.present += chain.length - missing.length;
    await inOrder(
      missing,
      async (s) => {
        const name = segmentName(s);
        const plaintext = await from.getObject(name);
        await decodeSegment(name, s, plaintext);
        return { name, plaintext };
      },
      async ({ name, plaintext }) => {
        await options.limiter?.take(plaintext.length, options.signal);
        await to.putObject(name, plaintext);
        result.segments++;
        result.bytes += plaintext.length;
        options.onObject?.({ name, bytes: plaintext.length });
      },
      options.signal,
    );
    // Records last: each extends the destination's window only over segments already there.
    for (const o of mine) {
      if (o.kind === 'segment') continue;
      if (presentNames.has(o.name)) {
        result.present++;
        continue;
      }
      const plaintext = await readTimelineRecord(from, o);
      options.signal?.throwIfAborted();
      await to.putObject(o.name, plaintext);
      result.records++;
      options.onObject?.({ name: o.name, bytes: plaintext.length });
    }
  }
  return result;
}

/**
 * The backups the log archive's base records name that `repo` holds: what a copy of the archive must
 * bring along for its windows to be restorable at the destination. Two listings, no object read.
 */
export async function archiveBaseBackups(repo: Repository): Promise<string[]> {
  const named = new Set((await listWal(repo)).flatMap((o) => (o.kind === 'base' ? [o.base.backup] : [])));
  const held: string[] = [];
  for await (const o of repo.list('snapshots/')) {
    const id = o.name.slice('snapshots/'.length);
    if (named.has(id)) held.push(id);
  }
  return held.sort();
}

async function listWal(repo: Repository): Promise<WalObject[]> {
  const out: WalObject[] = [];
  for await (const o of repo.list(WAL_PREFIX)) {
    const parsed = parseWalName(o.name);
    if (parsed) out.push(parsed);
  }
  return out;
}

/**
 * `read` over `items` up to READ_AHEAD ahead, `write` strictly in order: the destination's chain grows
 * from its start, never with a hole a later segment would sit behind. A failure stops the reads not yet
 * started and is thrown once those running have settled.
 */
async function inOrder<T extends SegmentInfo, R>(items: readonly T[], read: (item: T) => Promise<R>, write: (r: R) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const pending: Promise<R>[] = [];
  let next = 0;
  const fill = () => {
    while (next < items.length && pending.length < READ_AHEAD) {
      const p = read(items[next++]!);
      p.catch(() => {}); // observed below, in order; a failure ahead must not be an unhandled rejection
      pending.push(p);
    }
  };
  try {
    fill();
    while (pending.length > 0) {
      signal?.throwIfAborted();
      const r = await pending.shift()!;
      await write(r);
      fill();
    }
  } finally {
    await Promise.allSettled(pending);
  }
}
