import fs from 'node:fs';
import path from 'node:path';

/**
 * Durable file primitives. The synchronous ones block the calling thread, so the agent runs them in a
 * worker thread (checkpoint/fs-worker.ts), never on the host node's event loop; the async ones (at the
 * end) are for work that runs on that loop (backups).
 */

export function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Makes a directory's entries (creates, renames, links) durable. */
export const fsyncDir = fsyncPath;

/** Writes `data` to `file` atomically: temp file, fsync, rename, fsync of the directory. `mode`: the new file's (a secret's: 0o600). */
export function writeFileAtomicSync(file: string, data: string | Buffer, mode = 0o640): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(16).slice(2, 10)}`);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(dir);
}

/**
 * Where a staging directory's writers leave the files they wrote unsynced and open, for the caller to
 * fsync all at once (syncAllSync / syncAll) before the directory is renamed into place. Without one,
 * each file is fsynced and closed as it is written.
 */
export type PendingSyncs = number[];

/** fsyncs (or leaves to `pending`) and closes a file just written. */
function syncOrDefer(fd: number, pending: PendingSyncs | undefined): void {
  if (pending) {
    pending.push(fd);
    return;
  }
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates `file` (which must not exist) with `data`, fsynced. Not atomic on its own: for staging dirs. */
export function writeNewFileSync(file: string, data: Buffer, pending?: PendingSyncs): void {
  const fd = fs.openSync(file, 'wx', 0o640);
  try {
    fs.writeFileSync(fd, data);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  syncOrDefer(fd, pending);
}

/** Adds a directory to `pending`: its entries become durable with the rest. */
export function deferDirSync(dir: string, pending: PendingSyncs): void {
  pending.push(fs.openSync(dir, 'r'));
}

/** fsyncs every pending file, one after another, and closes them all. */
export function syncAllSync(pending: PendingSyncs): void {
  try {
    for (const fd of pending) fs.fsyncSync(fd);
  } finally {
    closeAll(pending);
  }
}

/**
 * fsyncs every pending file at once, through libuv's pool, and closes them all. Concurrent fsyncs share
 * journal commits (ext4's jbd2 groups them), where one after another each waits for its own: on a
 * checkpoint's handful of files (WAL copies, MANIFEST, CURRENT, checkpoint.json, two directories) that
 * is several times faster, and it is the bulk of a create's time beside the links.
 */
export async function syncAll(pending: PendingSyncs): Promise<void> {
  try {
    await Promise.all(pending.map((fd) => new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())))));
  } finally {
    closeAll(pending);
  }
}

/** Closes every pending file without syncing it (the staging directory they are in is being thrown away). */
export function closeAll(pending: PendingSyncs): void {
  for (const fd of pending.splice(0)) {
    try {
      fs.closeSync(fd);
    } catch {
      // closing is all that is left to do with it
    }
  }
}

/** Copies the first `length` bytes readable from `srcFd` into a new file, fsynced. Returns the bytes copied. */
export function copyFdPrefixSync(srcFd: number, length: number, dst: string, pending?: PendingSyncs): number {
  const out = fs.openSync(dst, 'wx', 0o640);
  let pos = 0;
  try {
    const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(length, 1)));
    while (pos < length) {
      const n = fs.readSync(srcFd, buf, 0, Math.min(buf.length, length - pos), pos);
      if (n === 0) break; // the file cannot shrink, but never loop forever
      fs.writeSync(out, buf, 0, n);
      pos += n;
    }
  } catch (err) {
    fs.closeSync(out);
    throw err;
  }
  syncOrDefer(out, pending);
  return pos;
}

/** Copies a whole file into a new one, fsynced (copy_file_range where the kernel can). */
export function copyFileDurableSync(src: string, dst: string, pending?: PendingSyncs): void {
  fs.copyFileSync(src, dst, fs.constants.COPYFILE_EXCL);
  if (pending) pending.push(fs.openSync(dst, 'r'));
  else fsyncPath(dst);
}

/** Reads the whole of an open file as it is now. */
export function readFdSync(fd: number): Buffer {
  const size = fs.fstatSync(fd).size;
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  while (pos < size) {
    const n = fs.readSync(fd, buf, pos, size - pos, pos);
    if (n === 0) break;
    pos += n;
  }
  return buf.subarray(0, pos);
}

export function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

/** fsyncDir without blocking the event loop. */
export async function fsyncDirAsync(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** writeFileAtomicSync without blocking the event loop: temp file, fsync, rename, fsync of the directory. */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(16).slice(2, 10)}`);
  try {
    const fh = await fs.promises.open(tmp, 'wx', 0o640);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDirAsync(dir);
}

/**
 * Directories this process has made durable in their parents, by path, with the identity (device and
 * inode) each had then: a later call for one that is still that directory costs one stat, as before;
 * one removed (or replaced) since is made, and made durable, again.
 */
const durableDirs = new Map<string, string>();
/** Passes under way, by path: concurrent calls for one directory share one. */
const inFlight = new Map<string, Promise<void>>();

/**
 * mkdir -p whose result survives a power cut: each directory it creates is fsynced into its parent, and
 * the last one's parent is fsynced even when it already existed, once per process and directory: a
 * directory that exists is not thereby durable (its maker may have died, or still be, between its mkdir
 * and that fsync), and a caller that writes into it and acknowledges must not lose it with its parent's
 * entry. Concurrent calls for one directory share one pass, so none returns before that fsync.
 */
export async function mkdirDurable(dir: string): Promise<void> {
  const abs = path.resolve(dir);
  const st = await statDir(abs);
  if (st !== null && durableDirs.get(abs) === st) return;
  let pass = inFlight.get(abs);
  if (!pass) {
    pass = makeDurable(abs).finally(() => inFlight.delete(abs));
    inFlight.set(abs, pass);
  }
  return pass;
}

async function makeDurable(dir: string): Promise<void> {
  const parent = path.dirname(dir);
  let st = await statDir(dir);
  const existed = st !== null;
  if (st === null) {
    if (parent !== dir) await mkdirDurable(parent);
    try {
      await fs.promises.mkdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another process made it
    }
    st = await statDir(dir);
    if (st === null) throw Object.assign(new Error(`ENOENT: directory removed as it was made, mkdir '${dir}'`), { code: 'ENOENT', path: dir });
  }
  if (parent !== dir) {
    try {
      await fsyncDirAsync(parent);
    } catch (err) {
      // A directory given to us (a repository on a NAS under a root-owned 0711 directory) whose parent we
      // may not even open: its entry is its maker's to have made durable, as it always was.
      if (!existed || !isPermissionError(err)) throw err;
    }
  }
  durableDirs.set(dir, st);
}

/** A directory's identity (`<dev>:<ino>`); null if there is none at `dir`; ENOTDIR if it is something else. */
async function statDir(dir: string): Promise<string | null> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (!st.isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${dir}'`), { code: 'ENOTDIR', path: dir });
  return `${st.dev}:${st.ino}`;
}

/**
 * mkdirDurable for synchronous callers (the fs worker, the CLI): each directory created fsynced into its
 * parent, and the last one's parent fsynced even when it existed (not cached: a few fsyncs of
 * directories with nothing new to write, next to the work such a caller does).
 */
export function mkdirDurableSync(dir: string, mode = 0o750): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let d = abs; ; d = path.dirname(d)) {
    const st = fs.statSync(d, { throwIfNoEntry: false });
    if (st?.isDirectory()) break;
    if (st) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${d}'`), { code: 'ENOTDIR', path: d });
    missing.push(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d, { mode });
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
  }
  for (const p of new Set(missing.map((d) => path.dirname(d)))) fsyncDir(p);
  if (missing.length === 0 && path.dirname(abs) !== abs) {
    try {
      fsyncDir(path.dirname(abs));
    } catch (err) {
      if (!isPermissionError(err)) throw err; // see makeDurable: an existing directory's unreadable parent
    }
  }
}

function isPermissionError(err: unknown): boolean {
  return isErrno(err, 'EACCES') || isErrno(err, 'EPERM');
}
