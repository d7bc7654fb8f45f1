import { AdminError, ErrorCodes } from '../../shared/errors.js';
import type { ChunkRead } from '../fs/direct-io.js';
import type { DirectReader } from '../fs/direct-reader.js';
import type { ChunkJob } from './backup-plan.js';

/** Where chunks to read come from (backup-plan.ts's BackupPlan), as readChunks uses it. */
export interface ChunkSource {
  next(): ChunkJob | null;
  settle(job: ChunkJob, id: string | null): Promise<void>;
  abandon(): Promise<void>;
}

export interface ReadChunksOptions {
  source: ChunkSource;
  reader: DirectReader;
  /** One per reader, from `reader.buffers()`: as many chunks in flight, whatever the file sizes. */
  buffers: Buffer[];
  /** A chunk's blob id (RepoCodec.blobId: off the event loop where the codec has workers); `job` and `lane` as `place` gets them. */
  identify: (chunk: Buffer, job: ChunkJob, lane: number) => Promise<string>;
  /**
   * Reads a chunk into a reader's buffer and names it in one step, off this thread (lane-sealer.ts
   * identifyRead): its id; null where it cannot (then `reader` reads it and `identify` names it).
   * Throws `shrank()` where the file ended first.
   */
  readAndIdentify?: (read: ChunkRead, buf: Buffer, job: ChunkJob, lane: number, shrank: () => Error) => Promise<string | null>;
  /**
   * Takes a chunk by its id; resolves when its buffer may be reused (pack-placer.ts). `lane`: which
   * reader (0 to buffers.length - 1), so that a caller can keep a buffer of its own per reader.
   */
  place: (id: string, chunk: Buffer, job: ChunkJob, lane: number) => Promise<void>;
  /** Throws when the backup must stop (cancelled, an upload failed); called before each chunk. */
  checkCancel: () => void;
  /** Awaited before each chunk is read, with its length: the backup's pace (backup-pacer.ts). */
  pace?: (bytes: number) => Promise<void>;
  /** A chunk came from disk. */
  onRead: (bytes: number) => void;
  /** A chunk was placed. */
  onPlaced: (bytes: number) => void;
}

/**
 * Reads and identifies a backup's chunks: one reader per buffer, each taking the next chunk from
 * `source`, reading it into its own buffer (O_DIRECT where allowed: `reader`), naming it (`identify`) as
 * it arrives and handing it to `place`. Where `readAndIdentify` can, the read and the naming are one
 * step on another thread (the codec's: the read leaves libuv's pool, which the host's own reads queue
 * in); where it cannot, `reader` reads on the pool.
 *
 * Contract:
 * - Memory: the buffers are the only ones; a buffer is read into again only once `place` has resolved
 *   for the chunk it held.
 * - Every chunk handed out is settled exactly once (with its hash once placed, else null), so every
 *   file opened is closed, whatever fails.
 * - The first failure (a read, a file that shrank, `place`, `checkCancel`) stops every reader from
 *   taking another chunk; once all have stopped and the left-open file is closed, it is thrown.
 *   Resolves only when every chunk was read and placed.
 * - It never writes, and never decides what to read.
 */
export async function readChunks(o: ReadChunksOptions): Promise<void> {
  let failure: unknown = null;
  const readInto = async (buf: Buffer, lane: number) => {
    // The failure is looked at before a job is taken, never after: a job taken and dropped would never
    // be settled, and its file (when the source has moved on to the next one) never closed.
    while (failure === null) {
      const job = o.source.next();
      if (!job) return;
      let id: string | null = null;
      try {
        o.checkCancel();
        const { file, offset, length } = job;
        if (o.pace) {
          await o.pace(length);
          o.checkCancel();
        }
        const fh = await file.handle;
        const shrank = () => new AdminError(ErrorCodes.CORRUPT, `${file.name} shrank while being backed up`);
        const read = o.readAndIdentify ? o.reader.chunkRead(fh, offset, length) : null;
        const chunk = buf.subarray(0, length);
        let hash = read ? await o.readAndIdentify!(read, buf, job, lane, shrank) : null;
        if (hash === null) {
          await o.reader.read(fh, file.path, buf, offset, length, shrank);
          hash = await o.identify(chunk, job, lane);
        }
        o.onRead(length);
        await o.place(hash, chunk, job, lane);
        o.onPlaced(length);
        id = hash;
      } finally {
        // The last chunk of a file closes it, whether it went well or not (no handle leaks).
        await o.source.settle(job, id);
      }
    }
  };
  await Promise.all(
    o.buffers.map((buf, lane) =>
      readInto(buf, lane).catch((err: unknown) => {
        failure ??= err;
      }),
    ),
  );
  await o.source.abandon();
  if (failure !== null) throw failure;
}
