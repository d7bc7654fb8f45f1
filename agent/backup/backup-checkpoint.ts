import type { BackupPace, BackupProgress, BackupRecord, CheckpointRecord } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { DirectReader } from '../fs/direct-reader.js';
import { roundUpToAlign } from '../fs/direct-io.js';
import { alignedPool } from '../fs/aligned-pool.js';
import { BackupPlan, listCheckpoint } from './backup-plan.js';
import { policyForFile } from '../repository/compression.js';
import { ProgressReporter } from './backup-progress.js';
import { readChunks } from './chunk-reader.js';
import { BackupPacer } from './backup-pacer.js';
import { LaneSealer } from './lane-sealer.js';
import type { HashCache } from './hash-cache.js';
import { PackPlacer } from './pack-placer.js';
import { RateLimiter } from './rate-limiter.js';
import type { Repository } from '../repository/repository.js';
import { CHUNK_SIZE } from '../repository/format.js';
import { writeSnapshot } from './write-snapshot.js';

/** Chunks read, hashed and written at once at most (each holds a CHUNK_SIZE buffer). */
const MAX_READERS = 16;

/**
 * Chunks in flight by default: a quarter of libuv's thread pool, at most MAX_READERS. Reads and writes
 * queue in that pool (first come, first served) with the host node's own I/O (classic-level's reads
 * and writes), and a backup's pool jobs are more than its reads: each pack's writes and fsyncs, the
 * directories' fsyncs. Half the pool in reads was too much: on 16 threads with 8 chunks in flight
 * the pool had a queue (an fs.stat waited 1.0-1.8 ms instead of 0.2) and the node's KV GETs at
 * 2,000/s went from 0.1 to 1.5-2.2 ms at the median; on 32 threads with the same 8 chunks, no queue
 * (0.2 ms) and 0.25 ms, the backup as fast (bench/backup-breakdown.ts, 1 GiB). A node that wants
 * faster backups raises UV_THREADPOOL_SIZE.
 */
export function defaultReaders(poolSize = threadPoolSize()): number {
  return Math.max(1, Math.min(MAX_READERS, Math.floor(poolSize / 4)));
}
/** libuv's thread pool size as the process has it: UV_THREADPOOL_SIZE, else libuv's default 4. */
export function threadPoolSize(): number {
  return Number(process.env.UV_THREADPOOL_SIZE) || 4;
}

export interface BackupOptions {
  repo: Repository;
  checkpoint: CheckpointRecord;
  cache: HashCache;
  /** Packs uploading at once (default 4). Where packs are stored whole (S3), each holds a PACK_BUFFER_SIZE buffer (pack-placer.ts). */
  concurrency?: number;
  /** Upload bandwidth cap in bytes/s (null: none). */
  bandwidthLimit?: number | null;
  /** How fast the checkpoint's files are read (default 'auto': backup-pacer.ts). */
  pace?: BackupPace;
  /** The pace's rate in effect changed (bytes/s; Infinity: not held back); called at start too. */
  onPaceRate?: (bytesPerSecond: number) => void;
  /** Reads were held back by the pace this many more seconds. */
  onPaced?: (seconds: number) => void;
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  pinned?: boolean;
  /** Read files around the page cache (O_DIRECT) where the filesystem allows it (default true). */
  directIo?: boolean;
  /** Chunks in flight (default: defaultReaders()). */
  readers?: number;
  /** The backup's id (default: a new one); a log archive replica's base keeps its primary's. */
  snapshotId?: string;
  /** The snapshot's time (default: when it is written); a replica's copy keeps its primary's. */
  snapshotCreatedAt?: string;
}

/**
 * Backs a checkpoint up into a repository, incrementally: only chunks the repository does not hold are
 * uploaded, and files the hash cache knows (same inode, size, mtime: a table hard-linked again) are
 * not even read. Reading, hashing and uploading form a pipeline with backpressure: `readers` chunk
 * buffers, at most `concurrency` packs being stored plus the one being filled, so memory stays bounded
 * whatever the size. Where the storage writes objects in pieces (a directory), each new chunk is
 * written into its pack straight from the buffer it was read into: no pack is ever held in memory.
 *
 * Crash safety: every pack gets its own index file as soon as it is stored, and a pending marker stays
 * while a pack may be stored without one, so an interrupted backup (kill -9, a full disk, network
 * failure, cancel) leaves packs the next run reuses (Repository.indexStrayPacks); the snapshot, written
 * last, is the commit point. Without it the backup does not exist for any reader.
 *
 * The parts, each with its contract: backup-plan.ts lists the checkpoint and decides what to read (the
 * hash cache), chunk-reader.ts reads and hashes chunks, pack-placer.ts places blobs into packs and
 * stores them with their index files, write-snapshot.ts writes the tree and the snapshot. This function
 * only joins them, counts progress (backup-progress.ts) and holds the lock.
 */
export async function backupCheckpoint(o: BackupOptions): Promise<BackupRecord> {
  const started = Date.now();
  const { repo, checkpoint } = o;
  repo.codec.warmUp(); // while the lock is taken and the index read
  // The checkpoint's files are listed while the lock is taken (each costs disk round trips; neither
  // needs the other). The index, though, is read only under the lock: a prune running before it could
  // delete packs the index names.
  const listing = listCheckpoint(checkpoint.path);
  listing.catch(() => {}); // awaited below; a failed lock must not leave it unhandled
  // Started first: auto's first ticks, while the lock is taken and the index read, see the node before
  // the backup's reads begin (its idle baseline).
  const pacer = new BackupPacer({
    pace: o.pace ?? 'auto',
    probeDir: checkpoint.path,
    ...(o.onPaceRate ? { onRate: o.onPaceRate } : {}),
    ...(o.onPaced ? { onWait: o.onPaced } : {}),
  });
  const lock = await repo.lock(`backup of checkpoint ${checkpoint.id}`, false).catch(async (err: unknown) => {
    await pacer.stop();
    throw err;
  });
  let reporter: ProgressReporter<BackupProgress> | null = null;
  let packs: PackPlacer | null = null;
  try {
    await repo.loadIndex();
    // Packs an interrupted backup stored without an index object: reused, not sent again. Only a saving:
    // if it fails, this backup sends them again and the marker stays for the next one.
    await repo.indexStrayPacks().catch(() => 0);
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
    const reporting = (reporter = new ProgressReporter(progress, started, o.onProgress));
    const placer = (packs = new PackPlacer({
      repo,
      concurrency: o.concurrency ?? 4,
      limiter: new RateLimiter(o.bandwidthLimit ?? null),
      ...(o.signal ? { signal: o.signal } : {}),
      cancelled: () => new AdminError(ErrorCodes.CANCELLED, `backup of checkpoint ${checkpoint.id} was cancelled`),
      beforeStore: () => repo.markPending(lock.id),
      onPackStored: (bytes) => {
        progress.bytesUploaded += bytes;
        reporting.report(true);
      },
    }));

    const reader = new DirectReader(CHUNK_SIZE, o.directIo !== false);
    const lanes = Math.max(1, Math.min(MAX_READERS, o.readers ?? defaultReaders()));
    const codec = repo.codec;
    // Where blobs are sealed, each reader seals its chunk into a page-aligned buffer of its own (a
    // directory storage writes it with O_DIRECT); a plain repository stores the chunk's own buffer.
    // Both sets from the process's pool, and back to it once every reader has stopped (readChunks
    // settles only then): a promotion a minute does not leave a set per backup for V8 to free.
    const sealLanes = codec.encrypted ? alignedPool.take(lanes, roundUpToAlign(codec.storedLength(CHUNK_SIZE))) : null;
    const readBuffers = alignedPool.take(lanes, CHUNK_SIZE);
    const sealer = new LaneSealer(codec, sealLanes, lanes);
    const plan = new BackupPlan({
      dir: checkpoint.path,
      listing: { names, stats },
      cache: o.cache,
      isStored: (id) => placer.holds(id),
      open: (file) => reader.open(file),
      onFileDone: (bytesSkipped) => {
        progress.bytesDone += bytesSkipped;
        progress.filesDone++;
        reporting.report();
      },
    });
    const reading = readChunks({
      source: plan,
      reader,
      // Each reader owns one chunk buffer: that many MiB in flight, whatever the file sizes.
      buffers: readBuffers,
      readAndIdentify: (read, buf, job, lane, shrank) => sealer.identifyRead(read, buf, policyForFile(job.file.name), lane, (id) => placer.holds(id), shrank),
      identify: (chunk, job, lane) => sealer.identify(chunk, policyForFile(job.file.name), lane, (id) => placer.holds(id)),
      place: async (id, chunk, job, lane) => {
        // Sealed in the reader's lane, so that readers seal at once; a blob stored meanwhile by another
        // lane is skipped by the placer (a seal wasted, nothing stored twice).
        if (placer.holds(id)) return;
        await placer.place(id, await sealer.sealed(id, chunk, policyForFile(job.file.name), lane));
      },
      checkCancel: () => placer.check(),
      // The limiter's wait ends with the signal's AbortError: the cancel is ours to name (CANCELLED).
      pace: (bytes) =>
        pacer.take(bytes, o.signal).catch((err: unknown) => {
          throw o.signal?.aborted ? new AdminError(ErrorCodes.CANCELLED, `backup of checkpoint ${checkpoint.id} was cancelled`) : err;
        }),
      onRead: (bytes) => {
        progress.bytesRead += bytes;
      },
      onPlaced: (bytes) => {
        progress.bytesDone += bytes;
        reporting.report();
      },
    });
    try {
      await reading;
    } finally {
      alignedPool.give([...readBuffers, ...(sealLanes ?? [])]);
    }
    placer.check();

    progress.phase = 'finishing';
    const snapshot = await writeSnapshot({ repo, packs: placer, tree: plan.tree(), checkpoint, pinned: o.pinned === true, bytes: progress.bytesTotal, ...(o.snapshotId ? { id: o.snapshotId } : {}), ...(o.snapshotCreatedAt ? { createdAt: o.snapshotCreatedAt } : {}) });
    reporting.report(true);
    return {
      id: snapshot.id,
      createdAt: snapshot.createdAt,
      pinned: snapshot.pinned,
      checkpoint: snapshot.checkpoint,
      files: snapshot.files,
      bytes: snapshot.bytes,
      bytesRead: progress.bytesRead,
      bytesUploaded: progress.bytesUploaded,
      blobsUploaded: placer.blobsStored,
      packsUploaded: placer.packsStored,
      durationMs: Date.now() - started,
      pacedSeconds: pacer.waitedSeconds,
      encrypted: repo.codec.encrypted,
    };
  } finally {
    await pacer.stop();
    reporter?.stop();
    await packs?.close();
    await repo.finishPending(packs?.everyPackIndexed ?? true);
    // What was hashed stays known, whether the backup went through or not; a failure here is only a
    // slower next backup.
    await Promise.all([o.cache.save().catch(() => {}), lock.release()]);
  }
}
