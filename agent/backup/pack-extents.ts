import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { packName } from '../repository/format.js';
import { blobDamaged, type Repository } from '../repository/repository.js';

/**
 * Needed blobs of one pack closer than this are read by one request, the bytes between them read and
 * dropped: a request costs about what a few hundred KiB cost to transfer (a round trip, and on S3 a
 * billed GET), so a restore that needs most of a pack reads it whole, in one GET, and one that needs a
 * few blobs reads only those.
 */
export const MERGE_GAP = 1024 * 1024;

/** Where one blob is needed: a file of the restore, at a position. */
export interface BlobTarget<F> {
  file: F;
  position: number;
}

/** A blob to read from a pack, and every place it goes (a chunk can recur, in one file or several). */
export interface NeededBlob<F> {
  id: string;
  offset: number;
  length: number;
  targets: BlobTarget<F>[];
}

/** One read: a stretch of a pack holding needed blobs, in offset order. */
export interface Extent<F> {
  pack: string;
  offset: number;
  length: number;
  blobs: NeededBlob<F>[];
}

/**
 * Groups the needed blobs of each pack into extents: blobs in offset order, a new extent wherever the
 * gap to the next needed blob exceeds MERGE_GAP. Extents come pack by pack, in the order the packs were
 * first needed (so files finish early), each pack's in offset order.
 */
export function planExtents<F>(needs: Iterable<{ pack: string; id: string; offset: number; length: number; target: BlobTarget<F> }>): Extent<F>[] {
  const byPack = new Map<string, Map<string, NeededBlob<F>>>();
  for (const n of needs) {
    let blobs = byPack.get(n.pack);
    if (!blobs) byPack.set(n.pack, (blobs = new Map()));
    const known = blobs.get(n.id);
    if (known) known.targets.push(n.target);
    else blobs.set(n.id, { id: n.id, offset: n.offset, length: n.length, targets: [n.target] });
  }
  const extents: Extent<F>[] = [];
  for (const [pack, blobs] of byPack) {
    let current: Extent<F> | null = null;
    for (const blob of [...blobs.values()].sort((a, b) => a.offset - b.offset)) {
      const end: number = current ? current.offset + current.length : 0;
      if (current && blob.offset >= end && blob.offset - end <= MERGE_GAP) {
        current.length = blob.offset + blob.length - current.offset;
        current.blobs.push(blob);
      } else {
        current = { pack, offset: blob.offset, length: blob.length, blobs: [blob] };
        extents.push(current);
      }
    }
  }
  return extents;
}

/** A few reusable buffers: `take` waits for one to be given back. */
export class BufferPool {
  private readonly waiting: ((b: Buffer) => void)[] = [];

  constructor(private readonly free: Buffer[]) {}

  take(): Promise<Buffer> {
    const b = this.free.pop();
    return b ? Promise.resolve(b) : new Promise((resolve) => this.waiting.push(resolve));
  }

  give(b: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(b);
    else this.free.push(b);
  }
}

/**
 * Reads one extent with one streamed read (Repository.streamPackRange) and hands each needed blob, once
 * whole and opened (`open`: the blob's plaintext from its stored bytes, checked against its id, written
 * over them at the buffer's start), to `deliver`, in a buffer of `pool` (at its start) that goes back to
 * the pool when `deliver` resolves. The read waits for a free buffer, so at most the pool's buffers are
 * held, whatever the extent's size (with one buffer, the next bytes wait in the socket while a blob is
 * written). A blob that does not open fails CORRUPT, naming the pack, before a byte of it is delivered.
 * Resolves when every blob is delivered.
 */
export async function streamExtent<F>(
  repo: Repository,
  extent: Extent<F>,
  pool: BufferPool,
  open: (blob: NeededBlob<F>, stored: Buffer, buffer: Buffer) => Promise<Buffer>,
  deliver: (blob: NeededBlob<F>, data: Buffer, buffer: Buffer) => Promise<void>,
): Promise<void> {
  const name = packName(extent.pack);
  const delivered: Promise<void>[] = [];
  let failure: { err: unknown } | null = null;
  let pos = extent.offset; // where the next byte handed over lies in the pack
  let i = 0;
  let buffer: Buffer | null = null;
  let filled = 0;
  const complete = (blob: NeededBlob<F>, b: Buffer) => {
    const opened = open(blob, b.subarray(0, blob.length), b).catch((err: unknown) => {
      throw blobDamaged(extent.pack, blob.id, blob.offset, err);
    });
    const done = opened.then((data) => deliver(blob, data, b)).finally(() => pool.give(b));
    done.catch((err: unknown) => (failure ??= { err }));
    delivered.push(done);
  };
  const reading = repo.streamPackRange(extent.pack, extent.offset, extent.length, async (piece) => {
    if (failure) throw failure.err; // a write failed: stop reading
    let at = 0;
    while (at < piece.length && i < extent.blobs.length) {
      const blob = extent.blobs[i]!;
      if (pos < blob.offset) {
        const skip = Math.min(blob.offset - pos, piece.length - at);
        at += skip;
        pos += skip;
        continue;
      }
      buffer ??= await pool.take();
      const n = Math.min(blob.length - filled, piece.length - at);
      piece.copy(buffer, filled, at, at + n);
      filled += n;
      at += n;
      pos += n;
      if (filled === blob.length) {
        const b = buffer;
        buffer = null;
        filled = 0;
        i++;
        complete(blob, b);
      }
    }
  });
  try {
    await reading;
  } catch (err) {
    await Promise.allSettled(delivered); // no write left running behind a failure
    throw err;
  }
  // Empty blobs (none in practice) take no byte of the read.
  while (i < extent.blobs.length && extent.blobs[i]!.length === 0) complete(extent.blobs[i++]!, await pool.take());
  if (buffer) pool.give(buffer);
  await Promise.all(delivered);
  if (i < extent.blobs.length) throw new AdminError(ErrorCodes.CORRUPT, `object ${name}: the read ended before blob ${extent.blobs[i]!.id}`);
}
