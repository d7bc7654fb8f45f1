import type { CopyProgress, CopySelection, CopySummary } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { alignedPool } from '../fs/aligned-pool.js';
import { roundUpToAlign } from '../fs/direct-io.js';
import { mapLimit } from '../fs/map-limit.js';
import { policyForFile, type CompressionPolicy } from '../repository/compression.js';
import { PACK_TARGET_SIZE, canonicalJson, packName, type IndexFile, type Snapshot, type Tree } from '../repository/format.js';
import type { PackEntry } from '../repository/pack.js';
import { MAX_TREE_BYTES, blobDamaged, type Repository } from '../repository/repository.js';
import { MAX_GET_BYTES } from '../storage/storage.js';
import { ProgressReporter } from './backup-progress.js';
import { PackPlacer } from './pack-placer.js';
import { RateLimiter } from './rate-limiter.js';
import { Slots } from './slots.js';
import { INDEX_FILES_BEFORE_COMPACTION } from './write-snapshot.js';

/**
 * Source packs being read at once (a GetObject each from S3): as many as the benchmark's raw SDK keeps in
 * flight, so that a copy from S3 reads at the store's rate.
 */
export const PACKS_READ_AT_ONCE = 4;
/**
 * Packs being stored at the destination at once (a PutObject each on S3): as many as a backup stores at
 * once (PackPlacer, the agent's default concurrency) and as the benchmark's raw SDK puts.
 */
export const PACKS_STORED_AT_ONCE = 4;
/**
 * Source packs held at once, each whole in a buffer of its own (~10 MiB: a pack, two chunks, in pages)
 * from the start of its read to the end of its store: as many as can be read and stored at once, so that
 * the next packs are read and checked while the last ones are stored, and a store slot that frees finds
 * a pack ready. One slot doing read, check and store in turn kept the store busy 3 slots in 4 to S3 and
 * 1.4 in 4 from it (measured: requests in flight over a 1 GiB copy).
 */
const PACKS_HELD = PACKS_READ_AT_ONCE + PACKS_STORED_AT_ONCE;
/**
 * Snapshots present at both ends whose trees are paired to learn which destination blob each source blob
 * became (when blobs are sealed again): the newest few share most of their chunks with the next snapshot.
 */
const TREES_PAIRED = 3;
/**
 * Packs stored as they are that one index object lists (the last may list fewer). One index per pack
 * cost a durable write per 8 MiB; a copy killed before an index loses nothing, its packs are indexed
 * from their headers by the next run (the pending marker names them). Written behind the packs, one at a
 * time, while the next packs go on; the snapshot waits for every one.
 */
const INDEX_BATCH = 32;

export interface CopySnapshotsOptions {
  /** Both opened, locked, their indexes loaded (copy-session.ts). */
  from: Repository;
  to: Repository;
  /** The destination's lock: its pending marker names it (Repository.markPending). */
  toLockId: string;
  select: CopySelection;
  /** Bytes per second stored at the destination, at most (null: no limit). */
  bandwidthLimit?: number | null;
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
  /** Packs stored as they are that one index object lists (default INDEX_BATCH; a test makes it small). */
  indexBatch?: number;
}

/** What copySnapshots did (the CLI's summary adds what it knows: the ends, whether one was made, the time). */
export type CopySnapshotsResult = Pick<CopySummary, 'mode' | 'copied' | 'alreadyThere' | 'packsSent' | 'blobsSent' | 'bytesSent' | 'bytesRead'>;

/**
 * Copies the selected snapshots from `from` into `to`, oldest first, each with every blob it needs.
 *
 * Contract:
 * - Order at the destination: packs, then their index, then the snapshot: a snapshot is written only when
 *   every blob it names is indexed there. Nothing at the destination is ever deleted or overwritten but
 *   by the same bytes (a pack's name is its content's).
 * - Every blob is checked as it is read from the source (it opens as its id, in a pack whose header
 *   matches its name); a damaged one fails the copy with CORRUPT naming its pack, before anything of that
 *   pack is stored.
 * - Blobs the destination holds are never sent; a snapshot it holds (by id) is not copied again.
 * - Where both ends seal alike (Repository.sealsLike: the same keys, or both plain), a pack whose blobs the
 *   destination lacks entirely is stored byte for byte under its name, with the index entries of its own
 *   header; other blobs go into new packs as they are stored. Otherwise ("blobs") each blob is opened,
 *   named and sealed again for the destination, trees are rewritten with the destination's ids (a new
 *   tree id), and the snapshot keeps its id and metadata.
 * - Before the first pack, a pending marker under `toLockId`: a copy killed at any point leaves packs the
 *   next run indexes from their headers (Repository.indexStrayPacks, run by copy-session.ts) and does not
 *   send again.
 * - Pipelined: up to PACKS_READ_AT_ONCE source packs read and PACKS_STORED_AT_ONCE stored at once, the
 *   reads running ahead of the stores, over every snapshot to copy (the packs a snapshot is the first to
 *   need, snapshot after snapshot); the index objects written behind the stores. Snapshots are written
 *   oldest first, each once every pack that it or an older one needs is stored and indexed (the first
 *   point), while the next ones' packs go on.
 * - Memory: at most PACKS_HELD source packs, each in a buffer of at least PACK_TARGET_SIZE plus two
 *   chunks (8 × 10 MiB with the defaults), plus the placer's PACKS_STORED_AT_ONCE + 1 pack buffers (only
 *   where blobs are placed into new packs) and the plaintext of the blobs being sealed again; and the
 *   plan: the id of every blob to copy and of every pack to read.
 */
export async function copySnapshots(o: CopySnapshotsOptions): Promise<CopySnapshotsResult> {
  const { from, to } = o;
  const started = Date.now();
  const [all, present] = await Promise.all([from.listSnapshots(), snapshotIds(to)]);
  const selected = selectSnapshots(all, o.select);
  const todo = selected.filter((s) => !present.has(s.id));
  const alreadyThere = selected.filter((s) => present.has(s.id)).map((s) => s.id);
  const asIs = from.sealsLike(to);
  const result: CopySnapshotsResult = { mode: asIs ? 'packs' : 'blobs', copied: [], alreadyThere, packsSent: 0, blobsSent: 0, bytesSent: 0, bytesRead: 0 };
  if (todo.length === 0) return result;
  to.assertWritable();

  const progress: CopyProgress = {
    phase: 'planning',
    snapshotsTotal: todo.length,
    snapshotsDone: 0,
    bytesTotal: 0,
    bytesDone: 0,
    bytesRead: 0,
    packsSent: 0,
    blobsSent: 0,
    bytesSent: 0,
    bytesPerSecond: 0,
  };
  const reporter = new ProgressReporter(progress, started, o.onProgress);
  const cancelled = () => new AdminError(ErrorCodes.CANCELLED, `the copy to ${to.description} was cancelled`);
  const limiter = new RateLimiter(o.bandwidthLimit ?? null);
  const placer = new PackPlacer({
    repo: to,
    concurrency: PACKS_STORED_AT_ONCE,
    limiter,
    ...(o.signal ? { signal: o.signal } : {}),
    cancelled,
    beforeStore: () => to.markPending(o.toLockId),
    onPackStored: (bytes) => {
      progress.packsSent++;
      progress.bytesSent += bytes;
      progress.blobsSent = placer.blobsStored + copier.blobsStoredAsPacks;
      reporter.report(true);
    },
  });
  const copier = new BlobCopier({ from, to, placer, asIs, progress, reporter, lockId: o.toLockId, indexBatch: Math.max(1, o.indexBatch ?? INDEX_BATCH), limiter, signal: o.signal, cancelled });
  let stored = false;
  try {
    if (!asIs) await copier.pairTrees(newestShared(all, present));
    // The total is what the destination may lack, counted once over every snapshot to copy.
    const plan = await copier.plan(todo);
    progress.phase = 'copying';
    reporter.report(true);
    await copier.copy(plan, async (s) => {
      await to.writeSnapshot(s);
      stored = true;
      result.copied.push(s.id);
      progress.snapshotsDone++;
      reporter.report(true);
    });
    progress.phase = 'finishing';
    reporter.report(true);
  } finally {
    reporter.stop();
    await placer.close();
    await copier.close();
    await to.finishPending(placer.everyPackIndexed && copier.everyPackIndexed);
    result.packsSent = progress.packsSent;
    result.blobsSent = placer.blobsStored + copier.blobsStoredAsPacks;
    result.bytesSent = progress.bytesSent;
    result.bytesRead = progress.bytesRead;
  }
  // Index files become one now and then (as after a backup): an optimisation whose failure loses nothing.
  if (stored) await to.compactIndex(INDEX_FILES_BEFORE_COMPACTION).catch(() => {});
  return result;
}

/** The snapshots a selection takes, oldest first; a given id the source does not hold is NOT_FOUND. */
export function selectSnapshots(all: readonly Snapshot[], select: CopySelection): Snapshot[] {
  const sorted = [...all].sort((a, b) => (a.id < b.id ? -1 : 1));
  if ('all' in select) return sorted;
  if ('latest' in select) return select.latest > 0 ? sorted.slice(-select.latest) : [];
  if ('since' in select) {
    const since = Date.parse(select.since);
    return sorted.filter((s) => Date.parse(s.createdAt) >= since);
  }
  const byId = new Map(sorted.map((s) => [s.id, s]));
  const wanted = [...new Set(select.ids)].sort();
  const missing = wanted.filter((id) => !byId.has(id));
  if (missing.length > 0) throw new AdminError(ErrorCodes.NOT_FOUND, `no backup ${missing.join(', ')} in the source repository`);
  return wanted.map((id) => byId.get(id)!);
}

/** The ids of the snapshots a repository holds, from a listing (no snapshot read). */
async function snapshotIds(repo: Repository): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const obj of repo.list('snapshots/')) ids.add(obj.name.slice('snapshots/'.length));
  return ids;
}

/** The newest snapshots of the source that the destination holds too (by id). */
function newestShared(source: readonly Snapshot[], present: ReadonlySet<string>): Snapshot[] {
  return source.filter((s) => present.has(s.id)).slice(-TREES_PAIRED);
}

/** What a copy reads, in order, and when each snapshot may be written (BlobCopier.plan). */
interface CopyPlan {
  todo: readonly Snapshot[];
  /** Every blob to copy, with a file that holds it (its compression policy). */
  wanted: Map<string, CompressionPolicy>;
  /** Each source pack to read: the blobs wanted of it, and the first snapshot (index in todo) that needs it. */
  byPack: Map<string, { ids: string[]; snapshot: number }>;
  /** The packs in the order they are read. */
  packs: string[];
  /** For each snapshot, how many packs it is the first to need. */
  firstNeeded: number[];
}

/** A source tree as a copy needs it: its chunks in order of first use, each with a file that holds it (its compression policy). */
interface SourceTree {
  tree: Tree;
  chunks: Map<string, CompressionPolicy>;
}

/** One copy's parts and controls, as copySnapshots gives them to its BlobCopier. */
interface BlobCopierOptions {
  from: Repository;
  to: Repository;
  placer: PackPlacer;
  /** Blobs move sealed as they are (both ends under one key), else opened and sealed again. */
  asIs: boolean;
  progress: CopyProgress;
  reporter: ProgressReporter<CopyProgress>;
  /** The destination's lock, which the pending marker names. */
  lockId: string;
  /** Packs an index object names at most. */
  indexBatch: number;
  /** The copy's upload bandwidth (the placer takes from the same one). */
  limiter: RateLimiter;
  signal: AbortSignal | undefined;
  /** The error a cancel throws. */
  cancelled: () => Error;
}

/**
 * Moves one snapshot's blobs at a time (BlobCopier.copy), remembering across snapshots which destination
 * blob each source blob became (`ids`: the same id where the ends seal alike).
 */
class BlobCopier {
  /** Source blob id -> destination blob id, where they differ (blobs sealed again). */
  private readonly ids = new Map<string, string>();
  /** Shared buffers source packs are read into, reused: as many as packs are read at once. */
  private readonly buffers: Buffer[] = [];
  blobsStoredAsPacks = 0;
  private rawFailed = false;
  /** Packs stored as they are, not yet in an index object (flushIndex). */
  private unindexed: IndexFile['packs'] = [];
  /** The index objects being written behind the stores, one after the other. Never rejects: see indexFailure. */
  private indexing: Promise<void> = Promise.resolve();
  /** The first index object that failed to be written: the copy fails with it. */
  private indexFailure: unknown = null;
  /** The first pack whose copy failed: the packs after it stop before their next step (check). */
  private packFailure: unknown = null;
  private readonly reads = new Slots(PACKS_READ_AT_ONCE);
  private readonly stores = new Slots(PACKS_STORED_AT_ONCE);

  private readonly from: Repository;
  private readonly to: Repository;
  private readonly placer: PackPlacer;
  private readonly asIs: boolean;
  private readonly progress: CopyProgress;
  private readonly reporter: ProgressReporter<CopyProgress>;
  private readonly lockId: string;
  private readonly indexBatch: number;
  private readonly limiter: RateLimiter;
  private readonly signal: AbortSignal | undefined;
  private readonly cancelled: () => Error;

  constructor(o: BlobCopierOptions) {
    ({ from: this.from, to: this.to, placer: this.placer, asIs: this.asIs, progress: this.progress, reporter: this.reporter } = o);
    ({ lockId: this.lockId, indexBatch: this.indexBatch, limiter: this.limiter, signal: this.signal, cancelled: this.cancelled } = o);
  }

  /** No pack stored as it is can be left without an index object (after close()). */
  get everyPackIndexed(): boolean {
    return !this.rawFailed && this.unindexed.length === 0;
  }

  /**
   * Once, last, however the copy ended (every pack's work has settled: mapLimit waits for all): waits for
   * the index objects being written and indexes the packs stored as they are since, so that the next run
   * reuses them, and gives the pack buffers back to the process's pool.
   */
  async close(): Promise<void> {
    await this.flushIndex().catch(() => {}); // rawFailed says it: the pending marker stays
    alignedPool.give(this.buffers.splice(0));
  }

  /** Whether source blob `id` is at the destination already (or in a pack of this copy). */
  sent(id: string): boolean {
    const there = this.asIs ? id : this.ids.get(id);
    return there !== undefined && this.placer.holds(there);
  }

  async sourceTree(s: Snapshot): Promise<SourceTree> {
    const tree = JSON.parse((await this.from.readBlob(s.tree, 'tree')).toString('utf8')) as Tree;
    const chunks = new Map<string, CompressionPolicy>();
    for (const f of tree.files) for (const c of f.chunks) if (!chunks.has(c)) chunks.set(c, policyForFile(f.name));
    return { tree, chunks };
  }

  /**
   * Learns, from snapshots both ends hold, which destination blob each of their source blobs is: a
   * tree copied by this command lists, file by file and chunk by chunk, the same content under the
   * destination's ids. A pair whose trees do not line up, or do not read, is skipped (its blobs are read again).
   */
  async pairTrees(shared: readonly Snapshot[]): Promise<void> {
    for (const s of shared) {
      let source: SourceTree;
      let dest: Tree;
      try {
        const there = await this.to.readBlob((await this.to.readSnapshot(s.id)).tree, 'tree');
        [source, dest] = [await this.sourceTree(s), JSON.parse(there.toString('utf8')) as Tree];
      } catch {
        continue; // only a saving: without the pair, its blobs are read and named again
      }
      const aligned =
        dest.files.length === source.tree.files.length &&
        source.tree.files.every((f, i) => dest.files[i]?.name === f.name && dest.files[i]?.chunks.length === f.chunks.length);
      if (!aligned) continue;
      source.tree.files.forEach((f, i) => f.chunks.forEach((c, j) => this.ids.set(c, dest.files[i]!.chunks[j]!)));
    }
  }

  /**
   * What copying `todo` (oldest first) takes: the source packs to read, in the order the snapshots need
   * them first, each with the blobs wanted of it; and for each snapshot how many of those packs it is
   * the first to need. Counts the bytes to copy (progress.bytesTotal).
   */
  async plan(todo: readonly Snapshot[]): Promise<CopyPlan> {
    const wanted = new Map<string, CompressionPolicy>();
    const byPack = new Map<string, { ids: string[]; snapshot: number }>();
    const firstNeeded: number[] = [];
    for (const [i, s] of todo.entries()) {
      const need = new Map((await this.sourceTree(s)).chunks);
      if (this.asIs && !this.placer.holds(s.tree)) need.set(s.tree, 'try');
      let first = 0;
      for (const [id, policy] of need) {
        if (wanted.has(id) || this.sent(id)) continue;
        const loc = this.from.blobs.get(id);
        if (!loc) throw new AdminError(ErrorCodes.CORRUPT, `backup ${s.id} in ${this.from.description}: blob ${id} is in no index`);
        wanted.set(id, policy);
        if (id !== s.tree) this.progress.bytesTotal += loc.length;
        const pack = byPack.get(loc.pack);
        if (pack) pack.ids.push(id);
        else {
          byPack.set(loc.pack, { ids: [id], snapshot: i });
          first++;
        }
      }
      firstNeeded.push(first);
    }
    // By snapshot, then in pack order: each pack read once, whole.
    const packs = [...byPack.keys()].sort((a, b) => byPack.get(a)!.snapshot - byPack.get(b)!.snapshot || (a < b ? -1 : 1));
    return { todo, wanted, byPack, packs, firstNeeded };
  }

  /**
   * Stores every blob the snapshots of `plan` need that the destination lacks, through one pipeline
   * (the packs of the next snapshot are read while the last ones of this one are stored), and has each
   * snapshot written (`write`, in order, one at a time) as soon as every pack that it or an older one
   * needs is stored, and indexed (finish). The first failure stops the packs after it and the writes;
   * the pipeline and the writes have settled before this returns or throws.
   */
  async copy(plan: CopyPlan, write: (s: Snapshot) => Promise<void>): Promise<void> {
    const { signal, cancelled } = this;
    const { todo, wanted, byPack, packs, firstNeeded } = plan;
    const done = firstNeeded.map(() => 0);
    let next = 0;
    let writing: Promise<void> = Promise.resolve();
    let writeFailure: unknown = null;
    const writeReady = () => {
      while (next < todo.length && done[next] === firstNeeded[next]) {
        const s = todo[next++]!;
        writing = writing.then(async () => {
          if (writeFailure !== null || this.packFailure !== null) return;
          try {
            if (signal?.aborted) throw cancelled();
            await write(await this.finish(s));
          } catch (err) {
            writeFailure ??= err;
            this.packFailure ??= err; // the packs after it stop
          }
        });
      }
    };
    // The marker is written while the first packs are read (a store waits for it: markPending).
    if (packs.length > 0) this.to.markPending(this.lockId).catch(() => {});
    try {
      writeReady(); // snapshots whose blobs are all there already
      await mapLimit(packs, PACKS_HELD, async (pack) => {
        this.check();
        const { ids, snapshot } = byPack.get(pack)!;
        try {
          await this.copyPack(pack, ids, wanted);
        } catch (err) {
          this.packFailure ??= err;
          throw err;
        }
        done[snapshot]!++;
        writeReady();
      });
    } finally {
      await writing; // never rejects: writeFailure
    }
    if (writeFailure !== null) throw writeFailure;
    if (next < todo.length) throw new AdminError(ErrorCodes.INTERNAL, `backup ${todo[next]!.id}: not written after every pack was copied`);
  }

  /**
   * Snapshot `s` as the destination is to hold it, once every pack it needs is stored: the packs stored
   * as they are indexed, its tree rewritten and placed where blobs were sealed again, the placer's packs
   * stored and indexed; then checked: every blob it names is indexed at the destination.
   */
  private async finish(s: Snapshot): Promise<Snapshot> {
    const { tree, chunks } = await this.sourceTree(s);
    await this.flushIndex();
    let snapshot = s;
    if (!this.asIs) {
      const rewritten: Tree = { ...tree, files: tree.files.map((f) => ({ ...f, chunks: f.chunks.map((c) => this.ids.get(c)!) })) };
      const bytes = Buffer.from(canonicalJson(rewritten));
      const treeId = await this.to.codec.blobId('tree', bytes);
      if (!this.placer.holds(treeId)) await this.placer.place(treeId, await this.to.codec.sealBlob('tree', treeId, bytes, 'try'));
      snapshot = { ...s, tree: treeId };
    }
    // In turn with the placements of the packs still being copied (a flush beside one would store a pack twice).
    await this.placer.flushPlaced();
    await this.placer.drain();
    this.placer.check();
    // The commit point's precondition, checked rather than assumed: every blob named is indexed here.
    const missing = [snapshot.tree, ...[...chunks.keys()].map((c) => (this.asIs ? c : this.ids.get(c)!))].find((id) => id === undefined || !this.to.hasBlob(id));
    if (missing !== undefined) throw new AdminError(ErrorCodes.INTERNAL, `backup ${s.id}: blob ${missing} is not indexed in ${this.to.description} after the copy`);
    return snapshot;
  }

  /** Throws the cancel, or the first failure: to copy a pack, to store a pack, to index packs stored. */
  private check(): void {
    if (this.signal?.aborted) throw this.cancelled();
    if (this.packFailure) throw this.packFailure;
    this.placer.check();
    if (this.indexFailure) throw this.indexFailure;
  }

  /** Reads source pack `pack` (checked), and stores what the destination lacks of `ids` (blobs of it). */
  private async copyPack(pack: string, ids: string[], policies: Map<string, CompressionPolicy>): Promise<void> {
    const buffer = this.takeBuffer(this.from.packs.get(pack)?.size ?? 0);
    try {
      await this.copyPackIn(pack, buffer, ids, policies);
    } finally {
      this.buffers.push(buffer); // every use of it has resolved: a placement once its bytes may be reused, a store once stored
    }
  }

  private async copyPackIn(pack: string, buffer: Buffer, ids: string[], policies: Map<string, CompressionPolicy>): Promise<void> {
    const data = await this.reads.with(async () => {
      this.check(); // a wait for a read slot may outlast the copy's failure
      return this.readPack(pack, buffer);
    });
    this.progress.bytesRead += data.length;
    let entries: PackEntry[];
    try {
      entries = this.from.codec.readPackTail(pack, data);
    } catch (err) {
      throw new AdminError(ErrorCodes.CORRUPT, `object ${packName(pack)} in ${this.from.description} is damaged: ${err instanceof Error ? err.message : String(err)}`);
    }
    const at = new Map(entries.map((e) => [e[0], e]));
    if (this.asIs && !this.to.packs.has(pack) && entries.every(([id]) => !this.placer.holds(id))) {
      // Every blob of it checked (codec.checkBlob) before a byte of it is stored: all at once, across the crypto
      // threads (one after the other left them idle more than half the time), every one settled before
      // the buffer goes back to the pool.
      const opened = await Promise.allSettled(entries.map((entry) => this.open(pack, data, entry, false)));
      const failed = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failed) throw failed.reason;
      await this.storeAsIs(pack, data, entries);
      this.progress.bytesDone += ids.reduce((n, id) => n + (at.get(id)?.[2] ?? 0), 0);
      this.reporter.report();
      return;
    }
    for (const id of ids) {
      const entry = at.get(id);
      if (!entry) throw blobDamaged(pack, id, 0, new Error('the index places it in this pack, its header does not'));
      if (this.sent(id)) continue; // stored meanwhile, by another pack of this copy
      const { type, plaintext } = await this.open(pack, data, entry, !this.asIs);
      if (this.asIs) {
        await this.placer.place(id, data.subarray(entry[1], entry[1] + entry[2]));
      } else {
        const there = await this.to.codec.blobId(type, plaintext);
        this.ids.set(id, there);
        if (!this.placer.holds(there)) await this.placer.place(there, await this.to.codec.sealBlob(type, there, plaintext, policies.get(id) ?? 'try'));
      }
      this.progress.bytesDone += entry[2];
      this.reporter.report();
    }
  }

  /**
   * A blob of a source pack, opened (as data, else as a tree: a header does not say which): checked, and
   * with `keep` its plaintext copied out of the codec's scratch (without, only checked: empty).
   */
  private async open(pack: string, data: Buffer, [id, offset, length]: PackEntry, keep: boolean): Promise<{ type: 'data' | 'tree'; plaintext: Buffer }> {
    const stored = data.subarray(offset, offset + length);
    const codec = this.from.codec;
    // Only checked (moved as it is): authenticated where it is sealed, its plaintext neither copied out
    // nor hashed (codec.checkBlob).
    const as = async (type: 'data' | 'tree', maxLength: number) => {
      if (!keep) {
        await codec.checkBlob(type, id, stored, maxLength);
        return { type, plaintext: Buffer.alloc(0) };
      }
      return { type, plaintext: Buffer.from(await codec.openBlob(type, id, stored, maxLength)) };
    };
    try {
      return await as('data', this.from.config.chunkSize);
    } catch (asData) {
      try {
        return await as('tree', MAX_TREE_BYTES);
      } catch {
        throw blobDamaged(pack, id, offset, asData);
      }
    }
  }

  /** A free buffer of at least `size` bytes (a pack's usual size at least), else a new one. */
  private takeBuffer(size: number): Buffer {
    const i = this.buffers.findIndex((b) => b.length >= size);
    if (i >= 0) return this.buffers.splice(i, 1)[0]!;
    // Shared memory (aligned-pool.ts: a WebAssembly memory), from the process's pool: a copy through the
    // agent after another reuses its buffers.
    const wanted = Math.min(MAX_GET_BYTES, Math.max(size, PACK_TARGET_SIZE + 2 * this.from.config.chunkSize));
    return alignedPool.take(1, roundUpToAlign(wanted))[0]!;
  }

  /**
   * A source pack, whole, in shared memory: the crypto threads then open its blobs where they are. (A
   * blob passed as a view of an ordinary buffer is structured-cloned with the whole buffer behind it:
   * every blob of a pack would copy the 8 MiB pack to a thread — 7 s of the main thread's 8 s, measured
   * on a 1 GiB copy.) Read straight into it where the index gives a size a pack can have.
   */
  private async readPack(pack: string, buffer: Buffer): Promise<Buffer> {
    const size = this.from.packs.get(pack)?.size;
    if (size === undefined || size <= 0 || size > buffer.length) {
      const data = await this.from.getPack(pack);
      const shared = Buffer.from(new SharedArrayBuffer(data.length));
      data.copy(shared);
      return shared;
    }
    return this.from.readPackRange(pack, 0, size, buffer); // a pack shorter than that: CORRUPT naming it
  }

  /** Stores a source pack under its own name, then has it indexed with its header's entries. */
  private async storeAsIs(pack: string, data: Buffer, entries: PackEntry[]): Promise<void> {
    await this.stores.with(async () => {
      this.check();
      await this.limiter.take(data.length, this.signal);
      await this.to.markPending(this.lockId);
      try {
        await this.to.uploadPack(pack, data);
      } catch (err) {
        this.rawFailed = true; // an answer lost may leave it stored: the marker stays for the next run
        this.packFailure ??= err; // before the slot is given back: no store starts after a failed one
        throw err;
      }
    });
    this.progress.packsSent++;
    this.progress.bytesSent += data.length;
    this.blobsStoredAsPacks += entries.length;
    this.progress.blobsSent += entries.length;
    this.reporter.report(true);
    this.unindexed.push({ id: pack, size: data.length, blobs: entries });
    if (this.unindexed.length >= this.indexBatch) this.indexBehind();
  }

  /**
   * Has one index object written for the packs stored as they are since the last, after the index
   * objects already being written, without waiting for it (none: nothing). A failure is kept in
   * indexFailure, and the pending marker stays (rawFailed).
   */
  private indexBehind(): void {
    const packs = this.unindexed.splice(0);
    if (packs.length === 0) return;
    this.indexing = this.indexing.then(async () => {
      try {
        await this.to.writeIndex(packs);
      } catch (err) {
        this.rawFailed = true;
        this.indexFailure ??= err;
      }
    });
  }

  /** Every pack stored as it is so far in an index object, written: resolves once they are (else throws why not). */
  private async flushIndex(): Promise<void> {
    this.indexBehind();
    await this.indexing;
    if (this.indexFailure) throw this.indexFailure;
  }

}

