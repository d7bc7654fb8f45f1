import fs from 'node:fs';
import path from 'node:path';
import { DIRECT_ALIGN, isDirectRefused, openDirect, roundUpToAlign, writeAll } from '../fs/direct-io.js';

/** One file of a restore being written: created on its first write, closed once its last run is in. */
export interface RestoredFile {
  readonly name: string;
  readonly size: number;
  /** Runs of this file not yet written; the restore counts them down and calls finish() at zero. */
  remaining: number;
  /** Whether `handle` was opened with O_DIRECT (fixed, for good, once `handle` resolves). */
  direct: boolean;
  handle: Promise<fs.promises.FileHandle> | null;
  /** An ordinary handle beside a direct one, for runs off the page grid. */
  plain: Promise<fs.promises.FileHandle> | null;
}

/**
 * Where a restore writes its files, into a directory of its own (the restore's temp directory). Contract:
 *
 * - `write(file, data, lane, start)` puts `data` at `start` of the file, creating it (exclusively) on the
 *   first write. Writes of one file may run concurrently at ranges that do not overlap, in any order.
 *   `data` must be the start of `lane`, a page-aligned buffer with room to pad `data` to whole pages:
 *   with O_DIRECT (where the filesystem allows it) a run on the page grid goes straight from `lane` to
 *   the device, padded with zeros only where nothing else is written, at the end of the file; every
 *   other run goes through an ordinary handle. So no page is ever written both ways.
 * - `finish(file)` is called once, after the file's last write: the file is cut to its size and closed
 *   without holding up the caller; a failure of that surfaces from `settle()`.
 * - `settle()` waits for every finish and resolves with the first failure (or null); `abandon(files)`
 *   closes whatever is still open after a failure and never throws. Nothing here fsyncs: the restore
 *   fsyncs every file once all are written (one journal commit for all, not one per file).
 */
export class RestoreFileWriter {
  private direct: boolean;
  private readonly finishing: Promise<void>[] = [];

  constructor(
    private readonly dir: string,
    directIo: boolean,
  ) {
    this.direct = directIo;
  }

  file(name: string, size: number): RestoredFile {
    return { name, size, remaining: 0, direct: false, handle: null, plain: null };
  }

  async write(file: RestoredFile, data: Buffer, lane: Buffer, start: number): Promise<void> {
    file.handle ??= this.open(file);
    const fh = await file.handle; // `file.direct` says what it is, for good, once this resolves
    if (!file.direct) return writeAll(fh, data, start);
    const end = start + data.length;
    // Whole pages only, and padding only where nothing else is written: at the end of the file. So a
    // direct run never shares a page with a run written the ordinary way.
    if (start % DIRECT_ALIGN === 0 && (end % DIRECT_ALIGN === 0 || end === file.size)) {
      // `data` is the start of `lane` (read into it): pad it to whole pages in place.
      const padded = roundUpToAlign(data.length);
      lane.fill(0, data.length, padded);
      try {
        return await writeAll(fh, lane.subarray(0, padded), start);
      } catch (err) {
        if (!isDirectRefused(err)) throw err;
        this.direct = false; // later files: the ordinary way from the start
      }
    }
    // Off the page grid, or refused: through an ordinary handle of the same file.
    file.plain ??= fs.promises.open(path.join(this.dir, file.name), 'r+');
    await writeAll(await file.plain, data, start);
  }

  finish(file: RestoredFile): void {
    const done = this.close(file, file.size);
    done.catch(() => {}); // surfaced by settle()
    this.finishing.push(done);
  }

  async settle(): Promise<unknown> {
    const finished = await Promise.allSettled(this.finishing);
    return finished.find((r) => r.status === 'rejected')?.reason ?? null;
  }

  async abandon(files: Iterable<RestoredFile>): Promise<void> {
    await Promise.allSettled([...files].map((f) => this.close(f, null)));
  }

  /** Opens a file for the first time: with O_DIRECT while the filesystem allows it (`file.direct`). */
  private async open(file: RestoredFile): Promise<fs.promises.FileHandle> {
    const p = path.join(this.dir, file.name);
    if (this.direct) {
      const fh = await openDirect(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o640);
      if (fh) {
        file.direct = true;
        return fh;
      }
      this.direct = false;
    }
    return fs.promises.open(p, 'wx', 0o640);
  }

  /** Closes both handles; with a size, a direct file is first cut to it (its last page was padded). */
  private async close(file: RestoredFile, size: number | null): Promise<void> {
    const handles = [file.handle, file.plain];
    file.handle = null;
    file.plain = null;
    const [fh, plain] = await Promise.all(handles);
    try {
      if (size !== null && file.direct) await fh!.truncate(size);
    } finally {
      await Promise.all([fh?.close(), plain?.close()]);
    }
  }
}
