import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';
import { fsyncDir, isErrno } from '../fs/durable-fs.js';
import type { Repository } from './repository/repository.js';
import { packName, sha256Async, type Tree } from './repository/format.js';

/** Longest single ranged read: bounds memory at concurrency × MAX_RUN. */
const MAX_RUN = 2 * 1024 * 1024;

export interface RestoreBackupOptions {
  repo: Repository;
  id: string;
  /** The directory to create; must not exist, or be empty. */
  to: string;
  /** Ranged reads at once (default 4; each up to 2 MiB in memory). */
  concurrency?: number;
  signal?: AbortSignal;
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

  const snapshot = await o.repo.readSnapshot(o.id);
  await o.repo.loadIndex();
  const tree = JSON.parse((await o.repo.readBlob(snapshot.tree)).toString('utf8')) as Tree;

  const temp = path.join(parent, `.${path.basename(to)}.restoring-${randomBytes(4).toString('hex')}`);
  fs.mkdirSync(temp, { mode: 0o750 });
  try {
    // A run is a stretch of one pack that holds consecutive chunks of one file: one ranged read each.
    interface FileState { name: string; remaining: number; handle: Promise<fs.promises.FileHandle> | null }
    interface Run { pack: string; offset: number; length: number; file: FileState; parts: { id: string; length: number; position: number }[] }
    const runs: Run[] = [];
    const empty: string[] = [];
    let bytesTotal = 0;
    for (const f of tree.files) {
      if (f.name.includes('/') || f.name === '..' || f.name === '.' || f.name === '') {
        throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id} names a bad file ${JSON.stringify(f.name)}`);
      }
      const file: FileState = { name: f.name, remaining: 0, handle: null };
      let position = 0;
      let run: Run | null = null;
      for (const id of f.chunks) {
        const loc = o.repo.blobs.get(id);
        if (!loc) throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: chunk ${id} of ${f.name} is not in the repository`);
        if (run && run.pack === loc.pack && run.offset + run.length === loc.offset && run.length + loc.length <= MAX_RUN) {
          run.length += loc.length;
        } else {
          run = { pack: loc.pack, offset: loc.offset, length: loc.length, file, parts: [] };
          runs.push(run);
          file.remaining++;
        }
        run.parts.push({ id, length: loc.length, position });
        position += loc.length;
      }
      if (position !== f.size) throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: chunks of ${f.name} add up to ${position} bytes, not ${f.size}`);
      if (f.chunks.length === 0) empty.push(f.name);
      bytesTotal += f.size;
    }
    for (const name of empty) fs.writeFileSync(path.join(temp, name), Buffer.alloc(0), { flag: 'wx', mode: 0o640 });

    let next = 0;
    let bytesDone = 0;
    let failure: unknown = null;
    const worker = async () => {
      while (next < runs.length && failure === null) {
        if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, 'restore cancelled');
        const run = runs[next++]!;
        const data = await o.repo.storage.getRange(packName(run.pack), run.offset, run.length);
        run.file.handle ??= fs.promises.open(path.join(temp, run.file.name), 'wx', 0o640);
        const fh = await run.file.handle;
        let at = 0;
        for (const part of run.parts) {
          const bytes = data.subarray(at, at + part.length);
          at += part.length;
          // Every chunk is checked before a byte of it is written.
          if ((await sha256Async(bytes)) !== part.id) {
            throw new AdminError(ErrorCodes.CORRUPT, `object ${packName(run.pack)} is damaged: blob ${part.id} does not match its hash`);
          }
          let written = 0;
          while (written < bytes.length) {
            written += (await fh.write(bytes, written, bytes.length - written, part.position + written)).bytesWritten;
          }
          bytesDone += bytes.length;
        }
        o.onProgress?.({ bytesDone, bytesTotal, filesTotal: tree.files.length });
        if (--run.file.remaining === 0) {
          await fh.sync();
          await fh.close();
          run.file.handle = null;
        }
      }
    };
    // Every worker stops at the first failure; all have settled before anything is cleaned up.
    await Promise.allSettled(
      Array.from({ length: Math.max(1, o.concurrency ?? 4) }, () =>
        worker().catch((err: unknown) => {
          failure ??= err;
        }),
      ),
    );
    if (failure !== null) {
      await Promise.allSettled(runs.map(async (r) => (r.file.handle ? (await r.file.handle).close() : undefined)));
      throw failure;
    }
    fsyncDir(temp);
    if (targetIsEmptyDir) fs.rmdirSync(to);
    fs.renameSync(temp, to);
    fsyncDir(parent);
    return { id: o.id, path: to, files: tree.files.length, bytes: bytesTotal, durationMs: Date.now() - started };
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw toAdminError(err);
  }
}
