import { constants as fsConstants } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { writeSplit, type DirectOpener } from '../fs/direct-io.js';
import { fsyncDirAsync, mkdirDurable } from '../fs/durable-fs.js';
import { StorageError, checkName, writerClosedError, writerSizeError, type ObjectWriter, type StorageOp } from './storage.js';

export interface DirWriterOptions {
  /** The storage's root: the temp file lives there, and is created (with the root) on the first write. */
  root: string;
  /** The temp file, in the root: `~<random>.tmp` (never listed; swept by DirStorage after a crash). */
  tmp: string;
  /** The storage's description, for errors. */
  description: string;
  /** Where an object of a name lives. */
  file: (name: string) => string;
  /** Called before the temp file is renamed to `name` (the storage's check that its root is still its own); a throw fails the commit. */
  beforeRename?: (name: string) => Promise<void>;
  /** The storage's O_DIRECT opener (shared: one refusal is the filesystem's). */
  direct: DirectOpener;
  /** The storage's mapping of a filesystem error to a StorageError. */
  error: (op: StorageOp, name: string, err: unknown) => StorageError;
}

/**
 * A directory storage's object written in pieces (Storage.openWriter, whose contract it keeps): a temp
 * file in the root, renamed to the name on commit after an fsync, and the directory fsynced, so the
 * same guarantees as `put`. Each piece is written as `put` writes a pack (writeSplit: its whole pages
 * with O_DIRECT, the rest the ordinary way), through two handles of the one file opened on the first
 * write that needs each.
 *
 * It owns the temp file: after `commit` fails or `abort` it is gone, and a write still on its way then
 * cannot create it again.
 */
export class DirWriter implements ObjectWriter {
  private plain: Promise<FileHandle> | null = null;
  private directFh: Promise<FileHandle | null> | null = null;
  private end = 0;
  private failed = false;
  private state: 'open' | 'committing' | 'done' = 'open';
  private readonly tmpName: string;

  constructor(private readonly o: DirWriterOptions) {
    this.tmpName = path.basename(o.tmp);
  }

  async write(data: Buffer, position: number): Promise<void> {
    if (this.state !== 'open') throw this.closed('write');
    this.end = Math.max(this.end, position + data.length);
    try {
      await writeSplit(() => this.directHandle(), () => this.plainHandle(), data, position);
    } catch (err) {
      this.failed = true;
      throw this.o.error('put', this.tmpName, err);
    }
  }

  async commit(name: string, size: number): Promise<void> {
    checkName(this.o.description, 'put', name);
    if (this.state !== 'open') throw this.closed('commit');
    this.state = 'committing';
    try {
      if (this.failed) throw new StorageError('permanent', this.o.description, 'a write failed; nothing was stored', { op: 'put', name });
      if (this.end !== size) throw writerSizeError(this.o.description, name, size, this.end);
      // fsync is of the file: it flushes what either handle wrote, and the file's size and blocks.
      await (await this.plainHandle()).sync();
      await this.closeHandles();
      const file = this.o.file(name);
      const dir = path.dirname(file);
      await this.o.beforeRename?.(name);
      await mkdirDurable(dir);
      await fs.rename(this.o.tmp, file);
      await fsyncDirAsync(dir);
      this.state = 'done';
    } catch (err) {
      this.state = 'done';
      await this.closeHandles();
      await fs.rm(this.o.tmp, { force: true }).catch(() => {});
      throw this.o.error('put', name, err);
    }
  }

  async abort(): Promise<void> {
    this.state = 'done';
    await this.closeHandles();
    await fs.rm(this.o.tmp, { force: true }).catch(() => {});
  }

  private closed(op: 'write' | 'commit'): StorageError {
    return writerClosedError(this.o.description, op, this.tmpName);
  }

  private plainHandle(): Promise<FileHandle> {
    // Never (re)create the temp file once aborted: a write still on its way must not leave one.
    if (this.state === 'done') return Promise.reject(this.closed('write'));
    return (this.plain ??= (async () => {
      await mkdirDurable(this.o.root);
      return fs.open(this.o.tmp, 'wx', 0o640);
    })());
  }

  private directHandle(): Promise<FileHandle | null> {
    return (this.directFh ??= this.plainHandle().then(() => this.o.direct.open(this.o.tmp, fsConstants.O_WRONLY)));
  }

  private async closeHandles(): Promise<void> {
    const handles = [this.plain, this.directFh];
    this.plain = this.directFh = null;
    await Promise.allSettled(handles.map(async (h) => (await h)?.close()));
  }
}
