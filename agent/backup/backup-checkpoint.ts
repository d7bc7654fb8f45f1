import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CheckpointRecord } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { newCheckpointId } from '../checkpoint/checkpoint-id.js';
import { alignedBuffers } from '../fs/direct-io.js';
import { DirectReader } from '../fs/direct-reader.js';
import { HashCache, type FileIdentity } from './hash-cache.js';
import { mapLimit } from './map-limit.js';
import { BufferedPack, StreamedPack, type PackSink } from './repository/pack.js';
import type { Repository } from './repository/repository.js';
import { CHUNK_SIZE, PACK_TARGET_SIZE, canonicalJson, sha256, type Snapshot, type Tree, type TreeFile } from './repository/format.js';
import type { BackupProgress, BackupRecord } from '../../shared/api.js';
import { RateLimiter } from './rate-limiter.js';

/**
 * A pack's buffer, where a pack must be stored whole (S3): a full pack, one more chunk (the one that made
 * it full) and its header, in whole pages. A directory storage needs none (packs are streamed).
 */
const PACK_BUFFER_SIZE = PACK_TARGET_SIZE + CHUNK_SIZE + 64 * 1024;

/** Chunks read, hashed and written at once at most (each holds a CHUNK_SIZE buffer). */
const MAX_READERS = 16;

/**
 * Chunks in flight by default: half of libuv's thread pool, at most MAX_READERS. Reads and writes queue
 * in that pool (first come, first served) with the host node's own I/O (classic-level's reads and
 * writes): a backup that kept every thread busy would make each of the node's requests wait behind its
 * queue (measured, example node's KV GETs during a backup, idle p50 0.4 ms: 3.5-3.7 ms with 24 chunks
 * in flight on 16 threads, 1.1-1.3 ms with 8). With half, the node always finds a free thread. A node
 * that wants faster backups raises UV_THREADPOOL_SIZE.
 */
export function defaultReaders(poolSize = threadPoolSize()): number {
  return Math.max(1, Math.min(MAX_READERS, Math.floor(poolSize / 2)));
}
/** libuv's thread pool size as the process has it: UV_THREADPOOL_SIZE, else libuv's default 4. */
export function threadPoolSize(): number {
  return Number(process.env.UV_THREADPOOL_SIZE) || 4;
}

/** A backup that leaves more index files than this merges them into one. */
const INDEX_FILES_BEFORE_COMPACTION = 32;

export interface BackupOptions {
  repo: Repository;
  checkpoint: CheckpointRecord;
  cache: HashCache;
  /** Packs uploading at once (default 4). Where packs are stored whole (S3), each holds a PACK_BUFFER_SIZE buffer. */
  concurrency?: number;
  /** Upload bandwidth cap in bytes/s (null: none). */
  bandwidthLimit?: number | null;
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  pinned?: boolean;
  /** Read files around the page cache (O_DIRECT) where the filesystem allows it (default true). */
  directIo?: boolean;
  /** Chunks in flight (default: defaultReaders()). */
  readers?: number;
}

/**
 * Backs a checkpoint up into a repository, incrementally: only chunks the repository does not hold are
 * uploaded, and files the hash cache knows (same inode, size, mtime: a table hard-linked again) are
 * not even read. Reading, hashing and uploading form a pipeline with backpressure: `readers` chunk
 * buffers, at most `concurrency` packs being stored plus the one being filled, so memory stays bounded
 * whatever the size. Where the storage writes objects in pieces (a directory), each new chunk is
 * written into its pack straight from the buffer it was read into: no pack is ever held in memory.
 *
 * Crash safety: every pack gets its own index file as soon as it is stored, so an interrupted backup
 * (kill -9, network failure, cancel) leaves packs the next run reuses; the snapshot, written last, is
 * the commit point. Without it the backup does not exist for any reader.
 */
export async function backupCheckpoint(o: BackupOptions): Promise<BackupRecord> {
  const started = Date.now();
  const { repo, checkpoint } = o;
  const concurrency = Math.max(1, o.concurrency ?? 4);
  const limiter = new RateLimiter(o.bandwidthLimit ?? null);
  // The checkpoint's files are listed while the lock is taken (each costs disk round trips; neither
  // needs the other). The index, though, is read only under the lock: a prune running before it could
  // delete packs the index names.
  const listing = listCheckpoint(checkpoint.path);
  listing.catch(() => {}); // awaited below; a failed lock must not leave it unhandled
  const lock = await repo.lock(`backup of checkpoint ${checkpoint.id}`, false);
  const inFlight = new Set<Promise<void>>();
  let uploadError: unknown = null;
  /** The pack being filled (an abort after its finish is harmless: see ObjectWriter). */
  let filling: PackSink | null = null;
  let trailing: NodeJS.Timeout | null = null;
  try {
    await repo.loadIndex();
    const { names, stats } = await listing;
    const progress: BackupProgress = {
      phase: 'uploading',
      filesDone: 0,
      filesTotal: names.length,
      bytesDone: 0,
      bytesTotal: stats.reduce((s, st) => s + Number(st.size), 0),
      bytesRead: 0,
      bytesUploaded: 0,
      bytesPerSecond: 0,
    };
    let lastReport = 0;
    const report = (force = false) => {
      const now = Date.now();
      if (!o.onProgress) return;
      if (!force && now - lastReport < 200) {
        // Throttled: make sure the latest state still goes out shortly (no frozen progress bar).
        trailing ??= setTimeout(() => {
          trailing = null;
          report(true);
        }, 200 - (now - lastReport));
        return;
      }
      if (trailing) clearTimeout(trailing);
      trailing = null;
      lastReport = now;
      progress.bytesPerSecond = Math.round((progress.bytesDone * 1000) / Math.max(1, now - started));
      o.onProgress({ ...progress });
    };
    const cancelled = () => new AdminError(ErrorCodes.CANCELLED, `backup of checkpoint ${checkpoint.id} was cancelled`);
    const checkCancel = () => {
      if (o.signal?.aborted) throw cancelled();
      if (uploadError) throw uploadError;
    };

    const pending = new Set<string>(); // in a pack of this run, not yet indexed
    // Where a pack must be stored whole: at most `concurrency` packs uploading plus the one filling, so
    // that many buffers, reused. Page-aligned, so that a storage can write them with O_DIRECT.
    let freeBuffers: Buffer[] | null = null;
    const openPack = (): PackSink => {
      const writer = repo.storage.openWriter?.();
      if (writer) return new StreamedPack(writer);
      freeBuffers ??= alignedBuffers(concurrency + 1, PACK_BUFFER_SIZE);
      const buffer = freeBuffers.pop() ?? Buffer.allocUnsafe(PACK_BUFFER_SIZE);
      return new BufferedPack(buffer, (id, data) => repo.uploadPack(id, data), () => freeBuffers!.push(buffer));
    };
    let pack = (filling = openPack());
    let blobsUploaded = 0;
    let packsUploaded = 0;

    const flushPack = async () => {
      if (pack.count === 0) return;
      const full = pack;
      // Backpressure: wait for a free upload slot before the next pack starts filling.
      while (inFlight.size >= concurrency) await Promise.race(inFlight);
      checkCancel();
      pack = filling = openPack();
      const upload = (async () => {
        const { id, size, blobs } = await full.finish();
        await repo.writeIndex([{ id, size, blobs }]);
        for (const [blob] of blobs) pending.delete(blob);
        progress.bytesUploaded += size;
        blobsUploaded += blobs.length;
        packsUploaded++;
        report(true);
      })().catch(async (err: unknown) => {
        uploadError ??= o.signal?.aborted ? cancelled() : err;
        await full.abort();
      });
      const tracked = upload.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
    };

    // One blob at a time goes into the pack: a full pack is flushed (and waits for an upload slot)
    // before anyone adds to the next, which is the pipeline's backpressure. Resolves when `data` may be
    // reused (a streamed pack writes it from there).
    let packTurn: Promise<unknown> = Promise.resolve();
    const addBlob = (id: string, data: Buffer): Promise<void> => {
      // The turn ends when the blob has its place; its write may go on (wrapped: a promise returned
      // from the turn would hold the next blob's turn until written).
      const turn = packTurn.then(async (): Promise<{ written: Promise<void> } | null> => {
        if (repo.hasBlob(id) || pending.has(id)) return null;
        await limiter.take(data.length, o.signal);
        // A cancel while queued behind the limiter must not write more.
        if (o.signal?.aborted) throw cancelled();
        pending.add(id);
        const written = pack.add(id, data);
        written.catch(() => {}); // awaited below, after the turn
        if (pack.size >= PACK_TARGET_SIZE) await flushPack();
        return { written };
      });
      packTurn = turn.catch(() => {});
      return turn.then((t) => t?.written);
    };

    // Files to read, chunk by chunk, in name order; `readers` chunks (of one file or the next ones) are
    // read at once, in libuv's pool, with O_DIRECT. Each is hashed on the event loop as it arrives
    // (SHA-NI: ~0.7 ms per MiB, so the host's loop is never held long) and written into its pack.
    interface OpenFile {
      index: number;
      st: FileIdentity;
      chunks: string[];
      remaining: number;
      failed: boolean;
      handle: Promise<fs.promises.FileHandle>;
    }
    const files: (TreeFile | undefined)[] = new Array(names.length);
    const reader = new DirectReader(CHUNK_SIZE, o.directIo !== false);
    const finishFile = (i: number, chunks: string[]) => {
      files[i] = { name: names[i]!, size: Number(stats[i]!.size), chunks };
      progress.filesDone++;
      report();
    };
    let nextFile = 0;
    let current: OpenFile | null = null;
    let nextChunk = 0;
    /** The next chunk to read, or null when every file has been handed out. Synchronous: no races. */
    const nextJob = (): { file: OpenFile; c: number } | null => {
      for (;;) {
        if (current && nextChunk < current.chunks.length) return { file: current, c: nextChunk++ };
        current = null;
        if (nextFile >= names.length) return null;
        const i = nextFile++;
        const st = stats[i]!;
        const size = Number(st.size);
        const cached = o.cache.get(st);
        if (cached && cached.every((c) => repo.hasBlob(c) || pending.has(c))) {
          progress.bytesDone += size;
          finishFile(i, cached);
          continue;
        }
        const count = Math.ceil(size / CHUNK_SIZE);
        if (count === 0) {
          finishFile(i, []);
          continue;
        }
        const handle = reader.open(path.join(checkpoint.path, names[i]!));
        handle.catch(() => {}); // awaited by the chunk jobs; never an unhandled rejection
        current = { index: i, st, chunks: new Array<string>(count), remaining: count, failed: false, handle };
        nextChunk = 0;
      }
    };
    const closeFile = async (file: OpenFile, whole: boolean) => {
      await (await file.handle).close();
      if (!whole) return;
      o.cache.set(file.st, file.chunks);
      finishFile(file.index, file.chunks);
    };

    let readFailure: unknown = null;
    const readChunks = async (buf: Buffer) => {
      for (let job = nextJob(); job && readFailure === null; job = nextJob()) {
        const { file, c } = job;
        let ok = false;
        try {
          checkCancel();
          const offset = c * CHUNK_SIZE;
          const length = Math.min(CHUNK_SIZE, Number(file.st.size) - offset);
          const name = names[file.index]!;
          await reader.read(await file.handle, path.join(checkpoint.path, name), buf, offset, length, () => new AdminError(ErrorCodes.CORRUPT, `${name} shrank while being backed up`));
          const chunk = buf.subarray(0, length);
          progress.bytesRead += length;
          const id = sha256(chunk);
          file.chunks[c] = id;
          await addBlob(id, chunk);
          progress.bytesDone += length;
          report();
          ok = true;
        } finally {
          // The last chunk of a file closes it, whether it went well or not (no handle leaks).
          if (!ok) file.failed = true;
          if (--file.remaining === 0) await closeFile(file, !file.failed);
        }
      }
    };
    // Each reader owns one chunk buffer: that many MiB in flight, whatever the file sizes.
    await Promise.all(
      reader.buffers(Math.max(1, Math.min(MAX_READERS, o.readers ?? defaultReaders()))).map((buf) =>
        readChunks(buf).catch((err: unknown) => {
          readFailure ??= err;
        }),
      ),
    );
    // Files a failed reader left open (handed out but never finished).
    if (current) await (current as OpenFile).handle.then((fh) => fh.close()).catch(() => {});
    if (readFailure !== null) throw readFailure;
    checkCancel();

    progress.phase = 'finishing';
    const tree: Tree = { version: 1, files: files as TreeFile[] };
    const treeBytes = Buffer.from(canonicalJson(tree));
    const treeId = sha256(treeBytes);
    await addBlob(treeId, treeBytes);
    await flushPack();
    while (inFlight.size > 0) await Promise.race(inFlight);
    checkCancel();

    const snapshot: Snapshot = {
      version: 1,
      id: newCheckpointId().toLowerCase(),
      createdAt: new Date().toISOString(),
      hostname: os.hostname(),
      pinned: o.pinned === true,
      checkpoint: { id: checkpoint.id, label: checkpoint.label, createdAt: checkpoint.createdAt, trigger: checkpoint.trigger },
      tree: treeId,
      files: names.length,
      bytes: progress.bytesTotal,
    };
    await repo.writeSnapshot(snapshot);
    // The backup exists. Tidy up: its one index file per pack, and the earlier ones, become one file
    // now and then, so that the next run loads a few files rather than thousands. Only an
    // optimisation: a failure leaves a valid (if longer) index, and does not fail the backup.
    await repo.compactIndex(INDEX_FILES_BEFORE_COMPACTION).catch(() => {});
    report(true);
    if (trailing) clearTimeout(trailing);
    return {
      id: snapshot.id,
      createdAt: snapshot.createdAt,
      pinned: snapshot.pinned,
      checkpoint: snapshot.checkpoint,
      files: snapshot.files,
      bytes: snapshot.bytes,
      bytesRead: progress.bytesRead,
      bytesUploaded: progress.bytesUploaded,
      blobsUploaded,
      packsUploaded,
      durationMs: Date.now() - started,
    };
  } finally {
    if (trailing) clearTimeout(trailing);
    // Never leave uploads running behind a failed or cancelled backup, nor a half-written pack behind.
    await Promise.allSettled(inFlight);
    await filling?.abort();
    // What was hashed stays known, whether the backup went through or not; a failure here is only a
    // slower next backup.
    await Promise.all([o.cache.save().catch(() => {}), lock.release()]);
  }
}

/** The files of a checkpoint to back up, in name order, with what the hash cache knows them by. */
async function listCheckpoint(dir: string): Promise<{ names: string[]; stats: FileIdentity[] }> {
  const names = (await fs.promises.readdir(dir)).filter((n) => n !== 'LOCK' && n !== 'LOG' && n !== 'LOG.old').sort();
  // Many at once: on a cold inode cache, one after another costs a disk round trip each.
  // Only what the hash cache needs: a full BigIntStats is ~1 KB of heap, for every file of the backup.
  const stats = await mapLimit(names, 32, async (n) => {
    const { dev, ino, size, mtimeNs } = await fs.promises.stat(path.join(dir, n), { bigint: true });
    return { dev, ino, size, mtimeNs };
  });
  return { names, stats };
}
