import type { RateLimiter } from '../backup/rate-limiter.js';
import type { Repository } from '../repository/repository.js';
import { isStorageError } from '../storage/storage.js';
import { readTimelineRecord } from './restore-to-moment.js';
import { decodeSegment, parseWalName, segmentName, walTimeline, WAL_PREFIX, type SegmentInfo, type WalObject } from './segment.js';
import { coveringChain } from './timeline-windows.js';

/** Segments fetched and verified ahead of the one being stored (each at most a merged segment, 8 MiB). */
const READ_AHEAD = 4;
/** Listings of a timeline taken again when a segment vanished from the source (a merge), before giving up. */
const RELISTS = 5;

export interface ArchiveCopyOptions {
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
  const result: ArchiveCopyResult = { timelines: 0, segments: 0, bytes: 0, records: 0, present: 0 };
  const timelines = [...new Set((await listWal(from)).map(walTimeline))].sort();
  const stored = new Set<string>();
  for (const timeline of timelines) {
    result.timelines++;
    // A live source merges its aged segments while the copy reads them (the agent does, under no lock):
    // an input deleted since the listing is covered by the merged segment, which a new listing finds.
    for (let listing = 1; ; listing++) {
      try {
        await copyTimeline(from, to, timeline, options, result, stored);
        break;
      } catch (err) {
        if (!(err instanceof Vanished) || listing >= RELISTS) throw err instanceof Vanished ? err.cause : err;
      }
    }
  }
  return result;
}

/** A source segment deleted since the listing (merged meanwhile): the timeline is listed again. */
class Vanished extends Error {
  constructor(override readonly cause: unknown) {
    super('a segment vanished from the source');
  }
}

/**
 * One timeline: what the destination lacks of its chain, in order, then its records. Adds to `result`;
 * `stored` names what this copy stored (not counted as present when a listing is taken again).
 */
async function copyTimeline(
  from: Repository,
  to: Repository,
  timeline: string,
  options: ArchiveCopyOptions,
  result: ArchiveCopyResult,
  stored: Set<string>,
): Promise<void> {
  const prefix = `${WAL_PREFIX}${timeline}/`;
  const mine = await listWal(from, prefix);
  const present = await listWal(to, prefix);
  const presentNames = new Set(present.map((o) => o.name));
  const theirs = present.flatMap((o) => (o.kind === 'segment' ? [o.segment] : []));
  const chain = coveringChain(mine.flatMap((o) => (o.kind === 'segment' ? [o.segment] : [])));
  const covering = (s: SegmentInfo) => theirs.find((t) => t.first <= s.first && s.last <= t.last);
  const missing = chain.filter((s) => covering(s) === undefined);
  await inOrder(
    missing,
    async (s) => {
      const name = segmentName(s);
      const plaintext = await from.getObject(name).catch((err: unknown) => {
        throw isStorageError(err, 'not-found') ? new Vanished(err) : err;
      });
      await decodeSegment(name, s, plaintext);
      return { name, plaintext };
    },
    async ({ name, plaintext }) => {
      await options.limiter?.take(plaintext.length, options.signal);
      await to.putObject(name, plaintext);
      stored.add(name);
      result.segments++;
      result.bytes += plaintext.length;
      options.onObject?.({ name, bytes: plaintext.length });
    },
    options.signal,
  );
  // Present: covered by a segment this copy did not store (one it stored before a new listing is its own).
  result.present += chain.filter((s) => {
    const there = covering(s);
    return there !== undefined && !stored.has(segmentName(there));
  }).length;
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
    stored.add(o.name);
    result.records++;
    options.onObject?.({ name: o.name, bytes: plaintext.length });
  }
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

async function listWal(repo: Repository, prefix = WAL_PREFIX): Promise<WalObject[]> {
  const out: WalObject[] = [];
  for await (const o of repo.list(prefix)) {
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
