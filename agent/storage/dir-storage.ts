import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { ErrorCodes } from '../../shared/errors.js';
import { DIRECT_ALIGN, DirectOpener, openDirect, readPagesUnlessRefused, roundUpToAlign, writeSplit } from '../fs/direct-io.js';
import { fsyncDirAsync, mkdirDurable } from '../fs/durable-fs.js';
import { mapLimit } from '../fs/map-limit.js';
import { DirWriter } from './dir-writer.js';
import { SourceStreamError, StreamSizeMismatch, sizedStream } from './sized-stream.js';
import {
  MAX_GET_BYTES,
  StorageError,
  checkName,
  checkPrefix,
  checkRangeArgs,
  checkSize,
  isValidName,
  objectTooLarge,
  rangeError,
  streamSizeError,
  streamSourceError,
  type ObjectInfo,
  type ObjectWriter,
  type Storage,
  type StorageOp,
} from './storage.js';

/** Puts at least this large write their whole pages with O_DIRECT when they can (packs). */
const DIRECT_MIN_BYTES = 1024 * 1024;

/**
 * A writer's temp file untouched for this long is what a crash (kill -9) left: a live writer writes
 * every few milliseconds, or at worst once per chunk at the slowest bandwidth limit anyone sets.
 */
const STALE_TEMP_MS = 24 * 60 * 60 * 1000;

/** Stats a listing runs at once. */
const STATS_AT_ONCE = 32;

/**
 * `file:///path`: each object is a file under the root, at its name (`data/ab/cd` → `<root>/data/ab/cd`).
 *
 * A put writes `<name>~<random>.tmp` in the object's directory, fsyncs it, renames it over the name and
 * fsyncs the directory; directories it creates are fsynced into their parents. A crash leaves at most a
 * temp file, which is never listed (`~` is not a name character). The root is created on the first put;
 * before that the storage is simply empty.
 */
export class DirStorage implements Storage {
  readonly description: string;
  /** Large puts and writers' pieces with O_DIRECT, until the filesystem refuses it. */
  private readonly direct = new DirectOpener();
  /** Whether this instance has looked for writers' temp files left by a crash. */
  private swept = false;
  /** The root's device and inode, from the first operation that found it (null: not yet). */
  private rootId: string | null = null;

  /** `maxGetBytes`: the largest object get() reads (default MAX_GET_BYTES). */
  constructor(
    readonly root: string,
    private readonly maxGetBytes = MAX_GET_BYTES,
  ) {
    if (!path.isAbsolute(root)) {
      throw new StorageError('permanent', `file:${root}`, 'the storage directory must be an absolute path', { code: ErrorCodes.INVALID_ARGUMENT });
    }
    this.root = path.resolve(root);
    this.description = pathToFileURL(this.root).href;
  }

  async put(name: string, data: Buffer): Promise<void> {
    checkName(this.description, 'put', name);
    await this.writeAtomic('put', name, async (fh, tmp) => {
      // Large objects (packs) with O_DIRECT: no kernel copy into the page cache, and no cache full of
      // pack data nobody reads back.
      let direct: FileHandle | null = null;
      try {
        await writeSplit(async () => (data.length >= DIRECT_MIN_BYTES ? (direct = await this.direct.open(tmp, fsConstants.O_WRONLY)) : null), async () => fh, data, 0);
      } finally {
        await (direct as FileHandle | null)?.close();
      }
    });
  }

  async putStream(name: string, open: () => Readable, size: number): Promise<void> {
    checkName(this.description, 'putStream', name);
    checkSize(this.description, name, size);
    await this.writeAtomic('putStream', name, async (fh) => {
      try {
        let source: Readable;
        try {
          source = open();
        } catch (err) {
          throw new SourceStreamError(err);
        }
        for await (const chunk of sizedStream(source, size)) await fh.write(chunk as Buffer);
      } catch (err) {
        if (err instanceof StreamSizeMismatch) throw streamSizeError(this.description, name, err.expected, err.got);
        if (err instanceof SourceStreamError) throw streamSourceError(this.description, name, err.cause);
        throw err;
      }
    });
  }

  /** An object written in pieces through a temp file in the root (dir-writer.ts). */
  openWriter(): ObjectWriter {
    if (!this.swept) {
      this.swept = true;
      this.sweepStaleTemps().catch(() => {}); // only space: never worth failing a backup for
    }
    return new DirWriter({
      root: this.root,
      tmp: path.join(this.root, `~${randomBytes(8).toString('hex')}.tmp`),
      description: this.description,
      file: (name) => this.file(name),
      beforeRename: (name) => this.sameRoot('put', name),
      direct: this.direct,
      error: (op, name, err) => this.error(op, name, err),
    });
  }

  /** Deletes writers' temp files in the root that nobody has written to for STALE_TEMP_MS. */
  private async sweepStaleTemps(): Promise<void> {
    const now = Date.now();
    for (const n of await fs.readdir(this.root).catch(() => [] as string[])) {
      if (!/^~[0-9a-f]{16}\.tmp$/.test(n)) continue;
      const p = path.join(this.root, n);
      const st = await fs.stat(p).catch(() => null);
      if (st?.isFile() && now - st.mtimeMs > STALE_TEMP_MS) await fs.rm(p, { force: true });
    }
  }

  async get(name: string): Promise<Buffer> {
    checkName(this.description, 'get', name);
    await this.learnRoot();
    try {
      const fh = await fs.open(this.file(name), 'r');
      try {
        const { size } = await fh.stat();
        if (size > this.maxGetBytes) throw objectTooLarge(this.description, name, size, this.maxGetBytes);
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw (await this.rootGone('get', name, err)) ?? this.error('get', name, err);
    }
  }

  async getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkName(this.description, 'getRange', name);
    checkRangeArgs(this.description, name, offset, length, into);
    await this.learnRoot();
    // Into a caller's buffer with room for the whole pages around the range: read them with O_DIRECT.
    const head = offset % DIRECT_ALIGN;
    const direct = into !== undefined && this.direct.enabled && length >= DIRECT_MIN_BYTES / 4 && into.length >= roundUpToAlign(head + length);
    let fh: FileHandle;
    let directFh: FileHandle | null = null;
    try {
      directFh = direct ? await openDirect(this.file(name), fsConstants.O_RDONLY) : null;
      fh = directFh ?? (await fs.open(this.file(name), 'r'));
    } catch (err) {
      throw (await this.rootGone('getRange', name, err)) ?? this.error('getRange', name, err);
    }
    try {
      const { size } = await fh.stat();
      if (offset + length > size) throw rangeError(this.description, name, offset, length, size);
      if (directFh) {
        if (await readPagesUnlessRefused(directFh, into!, offset - head, head + length)) {
          into!.copyWithin(0, head, head + length);
          return into!.subarray(0, length);
        }
        // Refused: an ordinary handle for an ordinary read (the direct one is closed below).
        fh = await fs.open(this.file(name), 'r');
      }
      const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
      let pos = 0;
      while (pos < length) {
        const { bytesRead } = await fh.read(buf, pos, length - pos, offset + pos);
        if (bytesRead === 0) throw rangeError(this.description, name, offset, length, offset + pos); // shrank: cannot happen to a renamed-in file
        pos += bytesRead;
      }
      return buf;
    } catch (err) {
      throw this.error('getRange', name, err);
    } finally {
      await fh.close();
      if (directFh && directFh !== fh) await directFh.close();
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    checkName(this.description, 'stat', name);
    await this.learnRoot();
    try {
      const st = await fs.stat(this.file(name));
      return st.isFile() ? { name, size: st.size } : null;
    } catch (err) {
      const gone = await this.rootGone('stat', name, err);
      if (gone) throw gone;
      if (isMissing(err)) return null;
      throw this.error('stat', name, err);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(this.description, prefix);
    await this.learnRoot();
    // Walk from the deepest whole directory of the prefix (`data/ab` → `data/`), keep what starts with it.
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash + 1);
    yield* this.walk(base, prefix);
  }

  async delete(name: string): Promise<void> {
    checkName(this.description, 'delete', name);
    const file = this.file(name);
    try {
      await this.sameRoot('delete', name);
      await fs.unlink(file);
    } catch (err) {
      // No such object (and a directory is not one): nothing to delete.
      if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'EISDIR') return;
      throw this.error('delete', name, err);
    }
    try {
      await fsyncDirAsync(path.dirname(file));
    } catch (err) {
      throw this.error('delete', name, err);
    }
  }

  async close(): Promise<void> {}

  private file(name: string): string {
    return path.join(this.root, ...name.split('/'));
  }

  /** `<root>/<dir>` entries in ascending byte order of their full names, recursively. */
  private async *walk(dir: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(path.join(this.root, ...dir.split('/').filter(Boolean)), { withFileTypes: true });
    } catch (err) {
      const gone = await this.rootGone('list', prefix, err);
      if (gone) throw gone;
      if (isMissing(err)) return;
      throw this.error('list', prefix, err);
    }
    // Sorting a directory as `name/` (and files as `name`) gives the byte order of the full paths:
    // `a-c` < `a/b` because `-` < `/`.
    const keyed = entries
      .filter((e) => e.isDirectory() || e.isFile())
      .map((e) => ({ e, key: `${dir}${e.name}${e.isDirectory() ? '/' : ''}` }))
      .filter(({ key }) => key.startsWith(prefix) || prefix.startsWith(key))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    // Sizes of this directory's objects, many stats at once (one at a time costs a round trip each).
    const sizes = await mapLimit(keyed, STATS_AT_ONCE, async ({ e, key }) => {
      if (e.isDirectory() || !key.startsWith(prefix) || !isValidName(key)) return null;
      try {
        return (await fs.stat(path.join(this.root, ...key.split('/')))).size;
      } catch (err) {
        if (isMissing(err)) return null; // deleted while listing
        throw this.error('list', prefix, err);
      }
    });
    for (const [i, { e, key }] of keyed.entries()) {
      if (e.isDirectory()) {
        yield* this.walk(key, prefix);
      } else if (sizes[i] !== null && sizes[i] !== undefined) {
        yield { name: key, size: sizes[i] };
      }
    }
  }

  /** Temp file in the object's directory, `fill` it, fsync, rename over the name, fsync the directory. */
  private async writeAtomic(op: StorageOp, name: string, fill: (fh: FileHandle, tmp: string) => Promise<void>): Promise<void> {
    const file = this.file(name);
    const dir = path.dirname(file);
    const tmp = `${file}~${randomBytes(6).toString('hex')}.tmp`;
    try {
      await this.sameRoot(op, name); // before making directories in it too
      await mkdirDurable(dir);
      const fh = await fs.open(tmp, 'wx', 0o640);
      try {
        await fill(fh, tmp);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.sameRoot(op, name);
      await fs.rename(tmp, file);
      await fsyncDirAsync(dir);
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => {});
      throw this.error(op, name, err);
    }
  }

  /** Notes the root's identity the first time an operation finds it (a directory); nothing after that. */
  private async learnRoot(): Promise<void> {
    if (this.rootId !== null) return;
    const st = await fs.stat(this.root).catch(() => null);
    if (st?.isDirectory() && this.rootId === null) this.rootId = `${st.dev}:${st.ino}`;
  }

  /**
   * Before an object is made visible (renamed into place) or deleted: the root is still the directory
   * this storage first found there. Another directory at its path — a filesystem mounted over it since
   * (a NAS back after the agent started on its empty mount point), or one swapped in — holds another
   * repository, or none, whose keys open nothing this process seals: what it stored there could never
   * be read, so nothing is. Not retried; a restart opens what is at the path now.
   */
  private async sameRoot(op: StorageOp, name: string): Promise<void> {
    const st = await fs.stat(this.root).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null; // not made yet: the check before the rename decides
      throw err;
    });
    if (st === null) return;
    const id = `${st.dev}:${st.ino}`;
    if (this.rootId === null) this.rootId = id;
    if (id === this.rootId) return;
    throw new StorageError('permanent', this.description, `${this.root} is not the directory this process opened there (mounted over, or replaced, since): nothing is stored into it; restart to open the repository now at that path`, {
      op,
      name,
      code: ErrorCodes.STORAGE_UNAVAILABLE,
    });
  }

  /**
   * A name missing because the root itself is no longer a directory (a file where the repository was:
   * a mount gone wrong, a directory swapped away) is not "no such object": the
   * repository is unreachable, and a caller that took the miss for an empty location would create a new
   * repository there (new keys, sealing objects that the old keys cannot open once the old directory is
   * back). Null when the root is a directory, or absent (a location never written: simply empty).
   */
  private async rootGone(op: StorageOp, name: string, err: unknown): Promise<StorageError | null> {
    if (!isMissing(err)) return null;
    try {
      if ((await fs.stat(this.root)).isDirectory()) return null;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    }
    // Not retried here (nothing a retry a second later would change); the caller's own backoff tries again.
    return new StorageError('permanent', this.description, `${this.root} is not a directory: the repository cannot be reached`, { op, name, code: ErrorCodes.STORAGE_UNAVAILABLE });
  }

  private error(op: StorageOp, name: string, err: unknown): StorageError {
    if (err instanceof StorageError) return err;
    const e = err as NodeJS.ErrnoException;
    const code = e?.code;
    if (isMissing(err) || code === 'EISDIR') {
      // For a put, a missing or non-directory parent means the name collides with another (`a` vs `a/b`).
      if (op === 'put' || op === 'putStream') {
        return new StorageError('permanent', this.description, `cannot create the object: ${e.message}`, { op, name, cause: err });
      }
      return new StorageError('not-found', this.description, 'no such object', { op, name });
    }
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new StorageError('permanent', this.description, `no space left: ${e.message}`, { op, name, code: ErrorCodes.INSUFFICIENT_SPACE, cause: err });
    }
    const transient = ['EAGAIN', 'EBUSY', 'EMFILE', 'ENFILE', 'EINTR', 'ETIMEDOUT', 'ESTALE'].includes(code ?? '');
    return new StorageError(transient ? 'transient' : 'permanent', this.description, e?.message ?? String(err), { op, name, cause: err });
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

