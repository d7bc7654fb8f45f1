import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';
import { fsyncDir, isErrno } from '../fs/durable-fs.js';
import type { Repository } from '../repository/repository.js';
import { DIRECT_ALIGN, alignedBuffers, roundUpToAlign } from '../fs/direct-io.js';
import { BufferPool, planExtents, streamExtent, type BlobTarget, type NeededBlob } from './pack-extents.js';
import { blobDamaged } from '../repository/repository.js';
import { RestoreFileWriter, type RestoredFile } from './restore-file-writer.js';
import { mapLimit } from '../fs/map-limit.js';
import type { Tree, TreeFile } from '../repository/format.js';

/** Longest single ranged read: bounds memory at concurrency × MAX_RUN. */
const MAX_RUN = 2 * 1024 * 1024;
/**
 * Streamed reads at once from a storage that streams ranges (S3), each holding one chunk buffer. Measured
 * against Swift's s3api on a 2-core machine (1.2 GB, 141 packs): as fast as the raw SDK reading the same
 * packs as whole objects 4 at once; more reads bought no speed there, and each costs ~4-5 MiB of peak
 * RSS (socket buffers and the garbage of reading them), which must stay under 128 MiB.
 */
const STREAMS_AT_ONCE = 4;
/** fsyncs of restored files at once (each holds a descriptor). */
const SYNCS_AT_ONCE = 16;
// A run is read into, and written from, one page-aligned buffer: with room for the pages around it.

export interface RestoreBackupOptions {
  repo: Repository;
  id: string;
  /** The directory to create; must not exist, or be empty. */
  to: string;
  /**
   * Reads at once. From a directory: ranged reads, default 12 (as fast as 16 here, measured; each up to
   * 2 MiB in memory). From a storage that streams ranges (S3): streamed reads, default STREAMS_AT_ONCE.
   */
  concurrency?: number;
  signal?: AbortSignal;
  /** Write files around the page cache (O_DIRECT) where the filesystem allows it (default true). */
  directIo?: boolean;
  onProgress?: (p: { bytesDone: number; bytesTotal: number; filesTotal: number }) => void;
}

export interface RestoreBackupResult {
  id: string;
  path: string;
  files: number;
  bytes: number;
  durationMs: number;
}

/**
 * Restores a backup into a fresh directory: parallel ranged reads from packs, every chunk's hash checked
 * before it is written, files fsynced, written under a sibling temp name and renamed into place only
 * when whole. On any failure nothing is left at `to`. The result is a database directory that
 * classic-level opens with exactly the checkpoint's content (swap it in like `checkpoint restore`).
 */
export async function restoreBackup(o: RestoreBackupOptions): Promise<RestoreBackupResult> {
  const started = Date.now();
  const to = path.resolve(o.to);
  const parent = path.dirname(to);
  if (!fs.existsSync(parent)) throw new AdminError(ErrorCodes.NOT_FOUND, `parent directory ${parent} does not exist`);
  let targetIsEmptyDir = false;
  try {
    const entries = fs.readdirSync(to);
    if (entries.length > 0) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `restore target ${to} is not empty`);
    targetIsEmptyDir = true;
  } catch (err) {
    if (err instanceof AdminError) throw err;
    if (isErrno(err, 'ENOTDIR')) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `restore target ${to} is a file`);
    if (!isErrno(err, 'ENOENT')) throw toAdminError(err);
  }

  // The crypto threads start, and the snapshot and the index are read, at once (one after another, they
  // held a restore from S3's first pack back by ~0.1 s). Both settle before anything is thrown: an index
  // load left running behind a refused snapshot would refill the repository's index after the caller
  // moved on.
  o.repo.codec.warmUp();
  const [read, loaded] = await Promise.allSettled([o.repo.readSnapshot(o.id), o.repo.loadIndex()]);
  if (read.status === 'rejected') throw read.reason;
  if (loaded.status === 'rejected') throw loaded.reason;
  const snapshot = read.value;
  const tree = JSON.parse((await o.repo.readBlob(snapshot.tree, 'tree')).toString('utf8')) as Tree;
  const chunkSize = o.repo.config.chunkSize;

  const temp = path.join(parent, `.${path.basename(to)}.restoring-${randomBytes(4).toString('hex')}`);
  fs.mkdirSync(temp, { mode: 0o750 });
  try {
    // Files are written with O_DIRECT where the filesystem allows it (restore-file-writer.ts): from an
    // aligned buffer per worker, straight to the device, instead of a kernel copy into the page cache,
    // the largest cost of a restore.
    const files = new RestoreFileWriter(temp, o.directIo !== false);
    if (o.repo.streamsRanges) {
      await restoreStreamed(o, tree, files, temp, chunkSize);
      return await commit(o, tree, temp, to, parent, targetIsEmptyDir, started);
    }
    // A run is a stretch of one pack that holds consecutive chunks of one file: one ranged read each.
    interface Run { pack: string; offset: number; length: number; file: RestoredFile; parts: (Chunk & { stored: number })[] }
    const runs: Run[] = [];
    const empty: string[] = [];
    let bytesTotal = 0;
    for (const f of tree.files) {
      checkFileName(o.id, f.name);
      const file = files.file(f.name, f.size);
      let run: Run | null = null;
      for (const chunk of fileChunks(o, f, chunkSize)) {
        const loc = locate(o, f.name, chunk.id);
        if (run && run.pack === loc.pack && run.offset + run.length === loc.offset && run.length + loc.length <= MAX_RUN) {
          run.length += loc.length;
        } else {
          run = { pack: loc.pack, offset: loc.offset, length: loc.length, file, parts: [] };
          runs.push(run);
          file.remaining++;
        }
        run.parts.push({ ...chunk, stored: loc.length });
      }
      if (f.chunks.length === 0) empty.push(f.name);
      bytesTotal += f.size;
    }
    for (const name of empty) fs.writeFileSync(path.join(temp, name), Buffer.alloc(0), { flag: 'wx', mode: 0o640 });

    const codec = o.repo.codec;
    let next = 0;
    let bytesDone = 0;
    let failure: unknown = null;
    const worker = async (lane: Buffer, out: Buffer | null) => {
      while (next < runs.length && failure === null) {
        if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, 'restore cancelled');
        const run = runs[next++]!;
        const stored = await o.repo.readPackRange(run.pack, run.offset, run.length, lane);
        // Every chunk is opened (checked against its id) before a byte of it is written. A plain chunk
        // is its plaintext, written from the lane it was read into; a sealed one opens into `out`, the
        // chunks of the run one after another.
        // One chunk after another, never two at once: chunk k's plaintext lands over the tail of chunk
        // k-1's stored bytes, which must have been read whole by then (lanes run at once instead).
        let at = 0;
        let to = 0;
        for (const part of run.parts) {
          const from = at;
          at += part.stored;
          try {
            const plain = await codec.openBlob('data', part.id, stored.subarray(from, from + part.stored), MAX_RUN, out?.subarray(to));
            checkChunk(o.id, run.file.name, part, plain);
          } catch (err) {
            throw err instanceof AdminError && err.message.startsWith('backup ') ? err : blobDamaged(run.pack, part.id, run.offset + from, err);
          }
          to += part.plain;
        }
        const data = out ? out.subarray(0, to) : stored;
        await files.write(run.file, data, out ?? lane, run.parts[0]!.position);
        bytesDone += data.length;
        o.onProgress?.({ bytesDone, bytesTotal, filesTotal: tree.files.length });
        if (--run.file.remaining === 0) files.finish(run.file);
      }
    };
    // Every worker stops at the first failure; all have settled before anything is cleaned up.
    const lanes = Math.max(1, o.concurrency ?? 12);
    // A sealed run opens in place, each chunk's plaintext into the lane at or before its stored bytes:
    // the plaintext of chunks 0..k fits in the stored bytes of chunks 0..k (sealing only adds bytes), so
    // no chunk's plaintext lands on the stored bytes of a later chunk, the chunks open one at a time, and
    // within a chunk every slice is decrypted before its output lands behind it (sealed-ops.ts openBlob).
    // One buffer a lane, not two.
    await Promise.allSettled(
      alignedBuffers(lanes, MAX_RUN + 2 * DIRECT_ALIGN).map((lane) =>
        worker(lane, codec.encrypted ? lane : null).catch((err: unknown) => {
          failure ??= err;
        }),
      ),
    );
    failure ??= await files.settle();
    if (failure !== null) {
      await files.abandon(new Set(runs.map((r) => r.file)));
      throw failure;
    }
    return await commit(o, tree, temp, to, parent, targetIsEmptyDir, started);
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw toAdminError(err);
  }
}

/** Every file fsynced, the directory too, then renamed into place: a restore appears only whole. */
async function commit(
  o: RestoreBackupOptions,
  tree: Tree,
  temp: string,
  to: string,
  parent: string,
  targetIsEmptyDir: boolean,
  started: number,
): Promise<RestoreBackupResult> {
  // fsync applies to the file, whichever descriptor asks: open each again (a few at a time: no fd limit).
  await mapLimit(
    tree.files.map((f) => f.name),
    SYNCS_AT_ONCE,
    async (name) => {
      const fh = await fs.promises.open(path.join(temp, name), 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
  );
  fsyncDir(temp);
  if (targetIsEmptyDir) fs.rmdirSync(to);
  fs.renameSync(temp, to);
  fsyncDir(parent);
  const bytes = tree.files.reduce((sum, f) => sum + f.size, 0);
  return { id: o.id, path: to, files: tree.files.length, bytes, durationMs: Date.now() - started };
}

/** A chunk of a restored file: its blob, its length and where it goes. */
interface Chunk {
  id: string;
  /** Its plaintext's length: every chunk but a file's last is the repository's chunk size. */
  plain: number;
  position: number;
}

/**
 * A file's chunks, where each goes. A plain blob is as long as its plaintext, so the index says where
 * each chunk goes (a restore takes chunks of any size there, as backups of other versions may cut
 * them). A sealed blob's plaintext length shows only once opened, so its place comes from the
 * repository's chunk size, which format 3 backups always cut at (and each chunk is checked to open to
 * exactly that: checkChunk). CORRUPT when the chunks do not add up to the file's size.
 */
function fileChunks(o: RestoreBackupOptions, f: TreeFile, chunkSize: number): Chunk[] {
  const bad = (why: string) => new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: ${f.name} ${why}`);
  if (!Number.isSafeInteger(f.size) || f.size < 0 || !Array.isArray(f.chunks)) throw bad('is malformed in its tree');
  if (o.repo.codec.encrypted) {
    if (f.chunks.length !== Math.ceil(f.size / chunkSize)) throw bad(`has ${f.chunks.length} chunks, not what ${f.size} bytes take`);
    return f.chunks.map((id, k) => ({ id, plain: Math.min(chunkSize, f.size - k * chunkSize), position: k * chunkSize }));
  }
  let position = 0;
  const chunks = f.chunks.map((id) => {
    const plain = locate(o, f.name, id).length;
    position += plain;
    return { id, plain, position: position - plain };
  });
  if (position !== f.size) throw bad(`has chunks that add up to ${position} bytes, not ${f.size}`);
  return chunks;
}

/** A chunk opened to a length other than its place takes (a bug or a forged tree: never written). */
function checkChunk(backup: string, file: string, chunk: Chunk, plain: Buffer): void {
  if (plain.length !== chunk.plain) {
    throw new AdminError(ErrorCodes.CORRUPT, `backup ${backup}: chunk ${chunk.id} of ${file} is ${plain.length} bytes where ${chunk.plain} belong`);
  }
}

/**
 * From a storage that streams ranges (S3): the needed blobs of each pack read as extents (pack-extents.ts),
 * a pack needed whole in one GET, each blob written once its hash is checked. Memory: one chunk buffer
 * per extent in flight, whatever the pack or database size.
 */
async function restoreStreamed(o: RestoreBackupOptions, tree: Tree, files: RestoreFileWriter, temp: string, chunkSize: number): Promise<void> {
  // Each target is a file and the chunk of it that goes there.
  type Target = { file: RestoredFile; chunk: Chunk };
  const needs: { pack: string; id: string; offset: number; length: number; target: BlobTarget<Target> }[] = [];
  const all: RestoredFile[] = [];
  let bytesTotal = 0;
  let longest = 0;
  for (const f of tree.files) {
    checkFileName(o.id, f.name);
    const file = files.file(f.name, f.size);
    all.push(file);
    for (const chunk of fileChunks(o, f, chunkSize)) {
      const loc = locate(o, f.name, chunk.id);
      needs.push({ pack: loc.pack, id: chunk.id, offset: loc.offset, length: loc.length, target: { file: { file, chunk }, position: chunk.position } });
      file.remaining++;
      // A buffer holds a chunk's stored bytes, then its plaintext: a compressed one is the longer.
      longest = Math.max(longest, loc.length, chunk.plain);
    }
    if (f.chunks.length === 0) fs.writeFileSync(path.join(temp, f.name), Buffer.alloc(0), { flag: 'wx', mode: 0o640 });
    bytesTotal += f.size;
  }
  const extents = planExtents(needs);
  const lanes = Math.max(1, o.concurrency ?? STREAMS_AT_ONCE);
  // One chunk buffer per read: while it is written, the next bytes wait in the socket's kernel buffer
  // (a second buffer per read was no faster here, and cost ~9 MiB of peak RSS at 4 reads).
  const buffers = alignedBuffers(lanes, roundUpToAlign(Math.max(longest, 1)) + DIRECT_ALIGN);
  const codec = o.repo.codec;
  let next = 0;
  let bytesDone = 0;
  let failure: unknown = null;
  const worker = async (pool: BufferPool) => {
    while (next < extents.length && failure === null) {
      if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, 'restore cancelled');
      const extent = extents[next++]!;
      const open = (blob: NeededBlob<Target>, stored: Buffer, buffer: Buffer) => codec.openBlob('data', blob.id, stored, MAX_RUN, buffer);
      await streamExtent(o.repo, extent, pool, open, async (blob, data, buffer) => {
        for (const t of blob.targets) checkChunk(o.id, t.file.file.name, t.file.chunk, data);
        for (const t of blob.targets) {
          await files.write(t.file.file, data, buffer, t.position);
          bytesDone += data.length;
          if (--t.file.file.remaining === 0) files.finish(t.file.file);
        }
        o.onProgress?.({ bytesDone, bytesTotal, filesTotal: tree.files.length });
      });
    }
  };
  await Promise.allSettled(
    Array.from({ length: lanes }, (_, i) =>
      worker(new BufferPool([buffers[i]!])).catch((err: unknown) => {
        failure ??= err;
      }),
    ),
  );
  failure ??= await files.settle();
  if (failure !== null) {
    await files.abandon(all);
    throw failure;
  }
}

function checkFileName(id: string, name: string): void {
  if (name.includes('/') || name === '..' || name === '.' || name === '') {
    throw new AdminError(ErrorCodes.CORRUPT, `backup ${id} names a bad file ${JSON.stringify(name)}`);
  }
}

function locate(o: RestoreBackupOptions, file: string, id: string): { pack: string; offset: number; length: number } {
  const loc = o.repo.blobs.get(id);
  if (!loc) throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: chunk ${id} of ${file} is not in the repository`);
  if (loc.length > MAX_RUN) throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: chunk ${id} of ${file} is ${loc.length} bytes, more than a chunk can be`);
  return loc;
}

