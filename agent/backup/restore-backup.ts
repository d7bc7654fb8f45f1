import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes, toAdminError } from '../../shared/errors.js';
import { fsyncDir, isErrno } from '../fs/durable-fs.js';
import type { Repository } from './repository/repository.js';
import type { Tree } from './repository/format.js';

export interface RestoreBackupOptions {
  repo: Repository;
  id: string;
  /** The directory to create; must not exist, or be empty. */
  to: string;
  /** Chunks downloading at once (default 8). */
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
    // Every chunk becomes a task: (file, position). Files are created up front at their final size.
    const tasks: { fd: number; position: number; id: string }[] = [];
    const fds: number[] = [];
    let bytesTotal = 0;
    try {
      for (const f of tree.files) {
        if (f.name.includes('/') || f.name === '..' || f.name === '.') throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id} names a bad file ${JSON.stringify(f.name)}`);
        const fd = fs.openSync(path.join(temp, f.name), 'wx', 0o640);
        fds.push(fd);
        let position = 0;
        for (const id of f.chunks) {
          const loc = o.repo.blobs.get(id);
          if (!loc) throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: chunk ${id} of ${f.name} is not in the repository`);
          tasks.push({ fd, position, id });
          position += loc.length;
        }
        if (position !== f.size) throw new AdminError(ErrorCodes.CORRUPT, `backup ${o.id}: chunks of ${f.name} add up to ${position} bytes, not ${f.size}`);
        bytesTotal += f.size;
      }
      let next = 0;
      let bytesDone = 0;
      const worker = async () => {
        while (next < tasks.length) {
          if (o.signal?.aborted) throw new AdminError(ErrorCodes.CANCELLED, 'restore cancelled');
          const t = tasks[next++]!;
          const data = await o.repo.readBlob(t.id); // verifies the hash, names the pack if damaged
          let written = 0;
          while (written < data.length) written += fs.writeSync(t.fd, data, written, data.length - written, t.position + written);
          bytesDone += data.length;
          o.onProgress?.({ bytesDone, bytesTotal, filesTotal: tree.files.length });
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 8) }, worker));
      for (const fd of fds) fs.fsyncSync(fd);
    } finally {
      for (const fd of fds) fs.closeSync(fd);
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
