import fs from 'node:fs';

/**
 * O_DIRECT file access: reads and writes that go between the device and our own buffers, around the page
 * cache. Backups read each table once and restores write each file once; through the page cache both
 * cost a kernel copy of every byte (the largest CPU cost of either, measured) and fill the cache with
 * data nobody reads again, pushing out the host node's hot pages.
 *
 * O_DIRECT needs page-aligned memory, offsets and lengths. Node cannot ask for aligned memory, but a
 * WebAssembly.Memory is page-aligned by construction, so buffers are views of one. Filesystems that
 * refuse O_DIRECT (tmpfs, some FUSE and network filesystems) answer EINVAL, on open or on the first
 * read or write: callers then fall back to ordinary I/O with the same result.
 */

/** Offsets, lengths and addresses of direct I/O are multiples of this (a page: enough everywhere). */
export const DIRECT_ALIGN = 4096;
const WASM_PAGE = 64 * 1024;
// The one piece of WebAssembly used here (lib "es2023" has no WebAssembly types).
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number; shared: true }) => { buffer: SharedArrayBuffer } };

/**
 * `count` buffers of `size` bytes (a multiple of DIRECT_ALIGN), each starting on a page boundary. Where
 * a WebAssembly memory cannot be had (V8 reserves gigabytes of address space for one: a tight
 * `ulimit -v` refuses it), ordinary buffers: direct I/O is then refused and ordinary I/O used.
 *
 * The memory is shared (a SharedArrayBuffer): a view of it posted to a worker thread (the repository's
 * crypto workers) is the same memory there, where a view of ordinary memory would be copied — and a
 * view's whole underlying buffer with it, every buffer of the set.
 */
export function alignedBuffers(count: number, size: number): Buffer[] {
  if (size <= 0 || size % DIRECT_ALIGN !== 0) throw new Error(`aligned buffer size ${size} is not a positive multiple of ${DIRECT_ALIGN}`);
  let all: Buffer;
  try {
    const pages = Math.ceil((count * size) / WASM_PAGE) || 1;
    all = Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer);
  } catch {
    return Array.from({ length: count }, () => Buffer.allocUnsafeSlow(size));
  }
  return Array.from({ length: count }, (_, i) => all.subarray(i * size, (i + 1) * size));
}

export function roundUpToAlign(n: number): number {
  return Math.ceil(n / DIRECT_ALIGN) * DIRECT_ALIGN;
}

/** Whether `err` is the filesystem refusing direct I/O. */
export function isDirectRefused(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'EINVAL';
}

/** Opens `file` with O_DIRECT added to `flags`; null if the filesystem refuses direct I/O. */
export async function openDirect(file: string, flags: number, mode?: number): Promise<fs.promises.FileHandle | null> {
  if (fs.constants.O_DIRECT === undefined) return null;
  try {
    return await fs.promises.open(file, flags | fs.constants.O_DIRECT, mode);
  } catch (err) {
    if (isDirectRefused(err)) return null;
    throw err;
  }
}

/** Writes all of `data` at `position` (a write may take less than it is given). */
export async function writeAll(fh: fs.promises.FileHandle, data: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < data.length) {
    written += (await fh.write(data, written, data.length - written, position + written)).bytesWritten;
  }
}

/**
 * Reads up to `length` bytes at the page-aligned `offset` of a file opened with O_DIRECT into the start
 * of the page-aligned `buf` (which holds `length` rounded up to whole pages), whole pages at a time.
 * Returns how many bytes it got: fewer than `length` only where the file ends. Throws the
 * filesystem's refusal as it comes (see isDirectRefused).
 */
export async function readPages(fh: fs.promises.FileHandle, buf: Buffer, offset: number, length: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, roundUpToAlign(length - got), offset + got);
    got += bytesRead;
    // A short read of whole pages may go on; anything else is the end of the file.
    if (bytesRead === 0 || bytesRead % DIRECT_ALIGN !== 0) break;
  }
  return got;
}

/**
 * A piece of an open file for another thread to read (readChunkSync): `fd` is the process's, so any of
 * its threads may read it while the opener keeps it open; `direct`: opened with O_DIRECT, so whole
 * pages are read (`offset` page-aligned, the buffer page-aligned and holding `length` rounded up).
 */
export interface ChunkRead {
  fd: number;
  offset: number;
  length: number;
  direct: boolean;
}

/**
 * readPages' synchronous twin, for a worker thread that reads for itself (no round trip through
 * libuv's pool): reads the piece `r` names into the start of `into`; how many bytes it got, fewer than
 * `r.length` only where the file ends first. Throws the read's error as it comes (isDirectRefused).
 */
export function readChunkSync(r: ChunkRead, into: Uint8Array): number {
  let got = 0;
  while (got < r.length) {
    const n = fs.readSync(r.fd, into, got, r.direct ? roundUpToAlign(r.length - got) : r.length - got, r.offset + got);
    got += n;
    // A short read of whole pages may go on; anything else is the end of the file.
    if (n === 0 || (r.direct && n % DIRECT_ALIGN !== 0)) break;
  }
  return got;
}

/**
 * Writes `data` at `position`: the pages it covers whole through the O_DIRECT handle `direct` gives
 * (asked for only when `position` is page-aligned and there is a whole page; null: none), the rest
 * through `plain`. So a page is written directly only when one piece covers it whole, never both ways
 * (a direct write could be lost under a stale cached page). Memory that is not page-aligned makes the
 * kernel refuse the direct write: then all of it goes the ordinary way.
 */
export async function writeSplit(
  direct: () => Promise<fs.promises.FileHandle | null>,
  plain: () => Promise<fs.promises.FileHandle>,
  data: Buffer,
  position: number,
): Promise<void> {
  let at = 0;
  const whole = data.length - (data.length % DIRECT_ALIGN);
  const fh = whole > 0 && position % DIRECT_ALIGN === 0 ? await direct() : null;
  if (fh) {
    try {
      await writeAll(fh, data.subarray(0, whole), position);
      at = whole;
    } catch (err) {
      if (!isDirectRefused(err)) throw err;
    }
  }
  if (at < data.length) await writeAll(await plain(), data.subarray(at), position + at);
}

/** Whether `length` bytes came in whole pages (readPages); false if direct I/O was refused (`into` not page-aligned). */
export async function readPagesUnlessRefused(fh: fs.promises.FileHandle, into: Buffer, offset: number, length: number): Promise<boolean> {
  try {
    return (await readPages(fh, into, offset, length)) >= length;
  } catch (err) {
    if (!isDirectRefused(err)) throw err;
    return false;
  }
}

/**
 * Opens files with O_DIRECT until the filesystem refuses once, and never tries again after that (a
 * refusal is the filesystem's, so every later open would be refused too). Shared by whatever writes
 * to one filesystem (a directory storage's puts and its streamed writers).
 */
export class DirectOpener {
  private refused = false;

  /** Whether direct opens are still tried. */
  get enabled(): boolean {
    return !this.refused;
  }

  /** `file` opened with O_DIRECT added to `flags`; null once the filesystem has refused it. */
  async open(file: string, flags: number): Promise<fs.promises.FileHandle | null> {
    if (this.refused) return null;
    const fh = await openDirect(file, flags);
    if (!fh) this.refused = true;
    return fh;
  }
}
