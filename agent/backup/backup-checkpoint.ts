import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { CheckpointRecord } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { newCheckpointId } from '../checkpoint/checkpoint-id.js';
import { HashCache } from './hash-cache.js';
import { PackBuilder } from './repository/pack.js';
import type { Repository } from './repository/repository.js';
import { CHUNK_SIZE, PACK_TARGET_SIZE, canonicalJson, sha256, type Snapshot, type Tree, type TreeFile } from './repository/format.js';
import type { BackupProgress, BackupRecord } from './backup-types.js';
import { RateLimiter } from './rate-limiter.js';

export interface BackupOptions {
  repo: Repository;
  checkpoint: CheckpointRecord;
  cache: HashCache;
  /** Packs uploading at once (default 2). Each holds up to PACK_TARGET_SIZE in memory. */
  concurrency?: number;
  /** Upload bandwidth cap in bytes/s (null: none). */
  bandwidthLimit?: number | null;
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  pinned?: boolean;
}

/**
 * Backs a checkpoint up into a repository, incrementally: only chunks the repository does not hold are
 * uploaded, and files the hash cache knows (same inode, size, mtime: a table hard-linked again) are
 * not even read. Reading, hashing and uploading form a pipeline with backpressure: at most
 * `concurrency` packs in flight plus the one being filled, so memory stays bounded whatever the size.
 *
 * Crash safety: every pack gets its own index file as soon as it is stored, so an interrupted backup
 * (kill -9, network failure, cancel) leaves packs the next run reuses; the snapshot, written last, is
 * the commit point. Without it the backup does not exist for any reader.
 */
export async function backupCheckpoint(o: BackupOptions): Promise<BackupRecord> {
  const started = Date.now();
  const { repo, checkpoint } = o;
  const concurrency = Math.max(1, o.concurrency ?? 2);
  const limiter = new RateLimiter(o.bandwidthLimit ?? null);
  const lock = await repo.lock(`backup of checkpoint ${checkpoint.id}`, false);
  const inFlight = new Set<Promise<void>>();
  let uploadError: unknown = null;
  let trailing: NodeJS.Timeout | null = null;
  try {
    await repo.loadIndex();
    const names = fs
      .readdirSync(checkpoint.path)
      .filter((n) => n !== 'LOCK' && n !== 'LOG' && n !== 'LOG.old')
      .sort();
    const stats = names.map((n) => fs.statSync(path.join(checkpoint.path, n), { bigint: true }));
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
    const checkCancel = () => {
      if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, `backup of checkpoint ${checkpoint.id} was cancelled`);
      if (uploadError) throw uploadError;
    };

    const pending = new Set<string>(); // in a pack of this run, not yet indexed
    // At most `concurrency` packs uploading plus the one filling: that many pack buffers, reused.
    const freeBuffers: Buffer[] = [];
    const takeBuffer = () => freeBuffers.pop() ?? Buffer.allocUnsafe(PACK_TARGET_SIZE + CHUNK_SIZE + 64 * 1024);
    let pack = new PackBuilder(takeBuffer());
    let blobsUploaded = 0;
    let packsUploaded = 0;

    const flushPack = async () => {
      if (pack.count === 0) return;
      const { id, data, blobs, buffer } = pack.finish();
      // Backpressure: wait for a free upload slot before the next pack starts filling.
      while (inFlight.size >= concurrency) await Promise.race(inFlight);
      checkCancel();
      const upload = (async () => {
        await limiter.take(data.length, o.signal);
        // A cancel while queued behind the limiter must not start the upload.
        if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, `backup of checkpoint ${checkpoint.id} was cancelled`);
        await repo.uploadPack(id, data);
        await repo.writeIndex([{ id, size: data.length, blobs }]);
        for (const [blob] of blobs) pending.delete(blob);
        progress.bytesUploaded += data.length;
        blobsUploaded += blobs.length;
        packsUploaded++;
        report(true);
      })()
        .catch((err: unknown) => {
          uploadError ??= o.signal?.aborted ? new AdminError(ErrorCodes.CANCELLED, `backup of checkpoint ${checkpoint.id} was cancelled`) : err;
        })
        .finally(() => freeBuffers.push(buffer));
      const tracked = upload.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      pack = new PackBuilder(takeBuffer());
    };

    const addBlob = async (id: string, data: Buffer) => {
      if (repo.hasBlob(id) || pending.has(id)) return;
      pending.add(id);
      pack.add(id, data);
      if (pack.size >= PACK_TARGET_SIZE) await flushPack();
    };

    // Two read buffers: the next chunk is read while this one is hashed (reads run in libuv's pool).
    const readBuffers = [Buffer.allocUnsafe(CHUNK_SIZE), Buffer.allocUnsafe(CHUNK_SIZE)] as const;
    const readChunk = async (fh: fs.promises.FileHandle, name: string, buf: Buffer, offset: number, length: number): Promise<Buffer> => {
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) throw new AdminError(ErrorCodes.CORRUPT, `${name} shrank while being backed up`);
        got += bytesRead;
      }
      return buf.subarray(0, length);
    };

    const files: TreeFile[] = [];
    for (let i = 0; i < names.length; i++) {
      checkCancel();
      const name = names[i]!;
      const st = stats[i]!;
      const size = Number(st.size);
      const cached = o.cache.get(st);
      let chunks: string[];
      if (cached && cached.every((c) => repo.hasBlob(c) || pending.has(c))) {
        chunks = cached;
      } else {
        chunks = [];
        const fh = await fs.promises.open(path.join(checkpoint.path, name), 'r');
        const count = Math.ceil(size / CHUNK_SIZE);
        let next: Promise<Buffer> | null = count > 0 ? readChunk(fh, name, readBuffers[0], 0, Math.min(CHUNK_SIZE, size)) : null;
        try {
          for (let c = 0; c < count; c++) {
            checkCancel();
            const chunk: Buffer = await next!;
            const nextOffset = (c + 1) * CHUNK_SIZE;
            next = c + 1 < count ? readChunk(fh, name, readBuffers[(c + 1) % 2]!, nextOffset, Math.min(CHUNK_SIZE, size - nextOffset)) : null;
            progress.bytesRead += chunk.length;
            const id = sha256(chunk);
            chunks.push(id);
            await addBlob(id, chunk);
            progress.bytesDone += chunk.length;
            report();
            // Hashing is synchronous: let the host's event loop breathe between chunks.
            await yieldToLoop();
          }
        } finally {
          // Never close a file with a read still running on it.
          if (next) await next.catch(() => {});
          await fh.close();
        }
        o.cache.set(st, chunks);
      }
      if (cached && chunks === cached) progress.bytesDone += size;
      files.push({ name, size, chunks });
      progress.filesDone++;
      report();
    }

    progress.phase = 'finishing';
    const tree: Tree = { version: 1, files };
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
      files: files.length,
      bytes: progress.bytesTotal,
    };
    await repo.writeSnapshot(snapshot);
    o.cache.save();
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
    // Never leave uploads running behind a failed or cancelled backup.
    await Promise.allSettled(inFlight);
    try {
      o.cache.save();
    } catch {
      // only a cache
    }
    await lock.release();
  }
}
