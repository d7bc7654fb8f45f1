import { alignedPool } from '../fs/aligned-pool.js';
import type { RateLimiter } from './rate-limiter.js';
import { BufferedPack, type PackSink } from '../repository/pack.js';
import type { Repository } from '../repository/repository.js';
import { CHUNK_SIZE, PACK_TARGET_SIZE, type IndexFile } from '../repository/format.js';

/**
 * A pack's buffer, where a pack must be stored whole (S3): a full pack, one more chunk (the one that made
 * it full) and its header, in whole pages. A directory storage needs none (packs are streamed).
 */
const PACK_BUFFER_SIZE = PACK_TARGET_SIZE + CHUNK_SIZE + 64 * 1024;

/**
 * How long a stored pack may wait for its index file. A kill -9 loses the index of at most the packs
 * stored this long before it (plus those being stored): the next run uploads them again.
 */
export const INDEX_DELAY_MS = 1000;

type IndexedPack = IndexFile['packs'][number];

export interface PackPlacerOptions {
  repo: Repository;
  /** Packs being stored at once, at most (at least 1). */
  concurrency: number;
  /** Paces the bytes placed (the upload bandwidth cap). */
  limiter: RateLimiter;
  signal?: AbortSignal;
  /** The error a cancelled backup fails with. */
  cancelled: () => Error;
  /** A pack was stored (its index file follows within INDEX_DELAY_MS): `bytes`, the pack's size. */
  onPackStored: (bytes: number) => void;
  /** Awaited before each pack is stored (a backup's pending marker: Repository.markPending). */
  beforeStore?: () => Promise<void>;
}

/**
 * Places a backup's blobs into packs and stores them, and indexes the packs stored (so that an
 * interrupted backup leaves packs the next run reuses): a stored pack is in an index file within
 * INDEX_DELAY_MS, and the packs stored meanwhile share that file. One index file per pack would cost a
 * request per pack and, at the end, two more (compactIndex reads and deletes each): measured on Swift's
 * s3api, a third of a backup's time.
 *
 * Contract:
 * - `place(id, data)` stores blob `id` once: a blob the repository or a pack of this run already holds
 *   is skipped (`holds`). One blob at a time takes its place, in the order `place` was called; a full
 *   pack (PACK_TARGET_SIZE) is handed to storing before the next blob is placed. Resolves when `data`
 *   may be reused: at once where the pack is a buffer, once written where it is streamed.
 * - Packs go straight into the storage where it has `openWriter` (StreamedPack: each blob written from
 *   the caller's buffer, no pack in memory), else into one of `concurrency + 1` page-aligned buffers,
 *   reused (BufferedPack). Blobs are 4 KiB-aligned with zero gaps either way (pack.ts).
 * - Backpressure: at most `concurrency` packs being stored plus the one being filled; a placement that
 *   would start another waits for a slot.
 * - The first failure to store a pack (or a cancel, when the signal is aborted) is remembered and
 *   thrown by `check()` and by the next flush; `place` throws the cancel itself.
 * - An index file never names a pack that is not stored; index files are written one at a time.
 * - `flush()` hands the pack being filled (if it holds a blob) to storing; `drain()` waits until
 *   every pack handed over is stored and indexed, or failed. `close()`, once, always, last: waits for
 *   every store to settle, indexes (best effort) the packs stored but not yet indexed, whatever made
 *   the backup stop, and discards the pack being filled (nothing of it is stored).
 * - `beforeStore` is awaited before each pack is stored; `everyPackIndexed`, after `close()`, says that
 *   no pack can be stored without its index object (no store failed, every stored pack indexed).
 * - It never reads a file and never writes a snapshot.
 */
export class PackPlacer {
  /** Blobs in a pack of this run, not yet indexed. */
  private readonly pending = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown = null;
  /** Where a pack must be stored whole: that many buffers, reused. Page-aligned, so that a storage can write them with O_DIRECT. */
  private freeBuffers: Buffer[] | null = null;
  /** The pack being filled (an abort after its finish is harmless: see ObjectWriter). */
  private pack: PackSink;
  /** The placement before the next one's: a full pack is flushed before anyone adds to the next. */
  private turn: Promise<unknown> = Promise.resolve();
  private readonly concurrency: number;
  /** Stored packs whose index file is not written yet (nor being written). */
  private unindexed: IndexedPack[] = [];
  private indexTimer: NodeJS.Timeout | null = null;
  /** The index file being written, if any: the next waits for it. Never rejects. */
  private indexing: Promise<void> = Promise.resolve();
  blobsStored = 0;
  packsStored = 0;
  /** A pack failed to be stored: it may be stored anyway (an answer lost), without an index object. */
  private storeFailed = false;

  /** After close(): every pack handed to storing was stored and indexed (none may be stored unindexed). */
  get everyPackIndexed(): boolean {
    return !this.storeFailed && this.inFlight.size === 0 && this.unindexed.length === 0;
  }

  constructor(private readonly o: PackPlacerOptions) {
    this.concurrency = Math.max(1, o.concurrency);
    this.pack = this.openPack();
  }

  /** Whether blob `id` is in the repository or in a pack of this run. */
  holds(id: string): boolean {
    return this.o.repo.hasBlob(id) || this.pending.has(id);
  }

  /** Throws the cancel, or the first failure to store a pack. */
  check(): void {
    if (this.o.signal?.aborted) throw this.o.cancelled();
    if (this.failure) throw this.failure;
  }

  place(id: string, data: Buffer): Promise<void> {
    // The turn ends when the blob has its place; its write may go on (wrapped: a promise returned
    // from the turn would hold the next blob's turn until written).
    const turn = this.turn.then(async (): Promise<{ written: Promise<void> } | null> => {
      if (this.holds(id)) return null;
      // The limiter's wait ends with the signal's AbortError: the cancel is ours to name (CANCELLED).
      await this.o.limiter.take(data.length, this.o.signal).catch((err: unknown) => {
        throw this.o.signal?.aborted ? this.o.cancelled() : err;
      });
      // A cancel while queued behind the limiter must not write more.
      if (this.o.signal?.aborted) throw this.o.cancelled();
      this.pending.add(id);
      const written = this.pack.add(id, data);
      written.catch(() => {}); // awaited below, after the turn
      if (this.pack.size >= PACK_TARGET_SIZE) await this.flush();
      return { written };
    });
    this.turn = turn.catch(() => {});
    return turn.then((t) => t?.written);
  }

  async flush(): Promise<void> {
    if (this.pack.count === 0) return;
    const full = this.pack;
    // Backpressure: wait for a free upload slot before the next pack starts filling.
    while (this.inFlight.size >= this.concurrency) await Promise.race(this.inFlight);
    this.check();
    this.pack = this.openPack();
    const upload = (async () => {
      await this.o.beforeStore?.();
      const pack = await full.finish();
      this.blobsStored += pack.blobs.length;
      this.packsStored++;
      this.o.onPackStored(pack.size);
      this.unindexed.push(pack);
      this.indexTimer ??= setTimeout(() => this.writeIndex(), INDEX_DELAY_MS);
    })().catch(async (err: unknown) => {
      this.storeFailed = true;
      this.failure ??= this.o.signal?.aborted ? this.o.cancelled() : err;
      await full.abort();
    });
    const tracked = upload.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /**
   * flush(), in turn with the placements: after every `place` called before it has its place, before
   * any called after it. For a caller that flushes while others may still place (one flush beside a
   * placement that fills the pack would hand the same pack to storing twice).
   */
  flushPlaced(): Promise<void> {
    const turn = this.turn.then(() => this.flush());
    this.turn = turn.catch(() => {});
    return turn;
  }

  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    this.writeIndex();
    await this.indexing;
  }

  async close(): Promise<void> {
    // Never leave uploads running behind a failed or cancelled backup, nor a half-written pack behind;
    // what was stored is indexed, so that the next run reuses it.
    await Promise.allSettled(this.inFlight);
    this.writeIndex();
    await this.indexing;
    await this.pack.abort();
    // Every pack has settled: its buffer, if it had one, is back in freeBuffers; none is touched again.
    if (this.freeBuffers) alignedPool.give(this.freeBuffers.splice(0));
  }

  /** Starts writing an index file for the packs stored and not yet indexed (after the one being written). */
  private writeIndex(): void {
    if (this.indexTimer) clearTimeout(this.indexTimer);
    this.indexTimer = null;
    if (this.unindexed.length === 0) return;
    const packs = this.unindexed;
    this.unindexed = [];
    this.indexing = this.indexing.then(async () => {
      try {
        await this.o.repo.writeIndex(packs);
        for (const pack of packs) for (const [blob] of pack.blobs) this.pending.delete(blob);
      } catch (err) {
        this.failure ??= err;
        this.unindexed.unshift(...packs); // close() tries once more
      }
    });
  }

  private openPack(): PackSink {
    const repo = this.o.repo;
    const streamed = repo.openPack();
    if (streamed) return streamed;
    this.freeBuffers ??= alignedPool.take(this.concurrency + 1, PACK_BUFFER_SIZE);
    const buffer = this.freeBuffers.pop() ?? Buffer.allocUnsafe(PACK_BUFFER_SIZE);
    return new BufferedPack(
      buffer,
      (blobs) => repo.codec.packTail(blobs),
      (id, data) => repo.uploadPack(id, data),
      () => this.freeBuffers!.push(buffer),
    );
  }
}
