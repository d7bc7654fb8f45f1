import fs from 'node:fs';
import path from 'node:path';
import type { HashCache, FileIdentity } from './hash-cache.js';
import { mapLimit } from '../fs/map-limit.js';
import { CHUNK_SIZE, type Tree, type TreeFile } from '../repository/format.js';
/** A checkpoint's files to back up, in name order, with what the hash cache knows each by. */
export interface CheckpointListing {
  names: string[];
  stats: FileIdentity[];
}

/**
 * Lists a checkpoint's files (LevelDB's LOCK and info logs are not data). Many stats at once: on a cold
 * inode cache, one after another costs a disk round trip each. Keeps only what the hash cache needs: a
 * full BigIntStats is ~1 KB of heap, for every file of the backup.
 */
export async function listCheckpoint(dir: string): Promise<CheckpointListing> {
  const names = (await fs.promises.readdir(dir)).filter((n) => n !== 'LOCK' && n !== 'LOG' && n !== 'LOG.old').sort();
  const stats = await mapLimit(names, 32, async (n) => {
    const { dev, ino, size, mtimeNs } = await fs.promises.stat(path.join(dir, n), { bigint: true });
    return { dev, ino, size, mtimeNs };
  });
  return { names, stats };
}

/** A file being read: its chunks are handed out by `next` and come back through `settle`. */
export interface PlannedFile {
  readonly name: string;
  /** Its path, for a reader that must open it a second time (direct-reader.ts). */
  readonly path: string;
  readonly handle: Promise<fs.promises.FileHandle>;
}

/** One chunk to read: `length` bytes at `offset` of `file`. */
export interface ChunkJob {
  readonly file: PlannedFile;
  readonly offset: number;
  readonly length: number;
  /** The chunk's place in its file. */
  readonly chunk: number;
}

export interface BackupPlanOptions {
  dir: string;
  listing: CheckpointListing;
  cache: HashCache;
  /** Whether the repository holds blob `id`, or a pack of this run already has it. */
  isStored: (id: string) => boolean;
  /** Opens a file to read (DirectReader.open). */
  open: (file: string) => Promise<fs.promises.FileHandle>;
  /**
   * A file is accounted for: all of it read, or none of it because the hash cache knew it
   * (`bytesSkipped` its size then, else 0). Once per whole file; never for a file whose read failed.
   */
  onFileDone: (bytesSkipped: number) => void;
}

interface OpenFile extends PlannedFile {
  index: number;
  st: FileIdentity;
  chunks: string[];
  remaining: number;
  failed: boolean;
}

/**
 * Decides what a backup reads, and collects what was read into the backup's tree.
 *
 * Contract:
 * - `next()` hands out the chunks to read, file by file in name order, each exactly once, and null
 *   when there are none left. It is synchronous, so any number of readers may call it without races.
 *   A file is decided when its turn comes, not before: one the hash cache knows (same inode, size,
 *   mtime), whose every chunk `isStored`, is never opened, and neither is an empty one; any other is
 *   opened then (one file open at a time, plus those whose chunks are still being read).
 * - `settle(job, id)` is called exactly once for every job handed out: with the chunk's hash, or null
 *   when reading or storing it failed. The last settle of a file closes its handle (whether or not it
 *   went well); a file all of whose chunks came back gets its entry in the tree and the hash cache.
 * - `abandon()`, after the readers have stopped, closes the file a stop left open with chunks never
 *   handed out.
 * - `tree()`, once `next()` has returned null and every job has settled: every file, in name order.
 *
 * It never reads a byte of a file, and never touches the repository.
 */
export class BackupPlan {
  private readonly files: (TreeFile | undefined)[];
  private nextFile = 0;
  private current: OpenFile | null = null;
  private nextChunk = 0;

  constructor(private readonly o: BackupPlanOptions) {
    this.files = new Array(o.listing.names.length);
  }

  next(): ChunkJob | null {
    const { names, stats } = this.o.listing;
    for (;;) {
      const current = this.current;
      if (current && this.nextChunk < current.chunks.length) {
        const chunk = this.nextChunk++;
        const offset = chunk * CHUNK_SIZE;
        return { file: current, chunk, offset, length: Math.min(CHUNK_SIZE, Number(current.st.size) - offset) };
      }
      this.current = null;
      if (this.nextFile >= names.length) return null;
      const i = this.nextFile++;
      const st = stats[i]!;
      const size = Number(st.size);
      const cached = this.o.cache.get(st);
      if (cached && cached.every((c) => this.o.isStored(c))) {
        this.finishFile(i, cached, size);
        continue;
      }
      const count = Math.ceil(size / CHUNK_SIZE);
      if (count === 0) {
        this.finishFile(i, [], 0);
        continue;
      }
      const file = path.join(this.o.dir, names[i]!);
      const handle = this.o.open(file);
      handle.catch(() => {}); // awaited by the chunk's readers; never an unhandled rejection
      this.current = { index: i, name: names[i]!, path: file, st, chunks: new Array<string>(count), remaining: count, failed: false, handle };
      this.nextChunk = 0;
    }
  }

  async settle(job: ChunkJob, id: string | null): Promise<void> {
    const file = job.file as OpenFile;
    if (id === null) file.failed = true;
    else file.chunks[job.chunk] = id;
    if (--file.remaining > 0) return;
    await (await file.handle).close();
    if (file.failed) return;
    this.o.cache.set(file.st, file.chunks);
    this.finishFile(file.index, file.chunks, 0);
  }

  async abandon(): Promise<void> {
    const current = this.current;
    if (current) await current.handle.then((fh) => fh.close()).catch(() => {});
  }

  tree(): Tree {
    return { version: 1, files: this.files as TreeFile[] };
  }

  private finishFile(i: number, chunks: string[], bytesSkipped: number): void {
    this.files[i] = { name: this.o.listing.names[i]!, size: Number(this.o.listing.stats[i]!.size), chunks };
    this.o.onFileDone(bytesSkipped);
  }
}
