import fs from 'node:fs';
import { alignedBuffers, isDirectRefused, openDirect, readPages, type ChunkRead } from './direct-io.js';

/**
 * Reads pieces of files into buffers it hands out, with O_DIRECT (direct-io.ts) while the filesystem
 * allows it and with ordinary reads, for good, from the first refusal on. Either way the bytes are the
 * same.
 *
 * Contract: `buffers(n)` is called once, before any read; each buffer is used by one read at a time.
 */
export class DirectReader {
  private direct: boolean;
  private readonly openedDirect = new WeakSet<fs.promises.FileHandle>();

  /** `size`: each buffer's size, a multiple of DIRECT_ALIGN; `enabled` false: ordinary reads only. */
  constructor(
    private readonly size: number,
    enabled = true,
  ) {
    this.direct = enabled;
  }

  /** Whether reads still go around the page cache. */
  get isDirect(): boolean {
    return this.direct;
  }

  buffers(n: number): Buffer[] {
    return alignedBuffers(n, this.size);
  }

  /** Opens `file` for reading, directly while this reader reads directly. */
  async open(file: string): Promise<fs.promises.FileHandle> {
    if (this.direct) {
      const fh = await openDirect(file, fs.constants.O_RDONLY);
      if (fh) {
        this.openedDirect.add(fh);
        return fh;
      }
      this.direct = false;
    }
    return fs.promises.open(file, 'r');
  }

  /**
   * The piece as another thread reads it for itself (direct-io.ts readChunkSync), the same way `read`
   * would; null where only `read` can (a handle opened directly, after direct reads were refused). A
   * refusal met there is this reader's to learn: the caller then reads with `read`.
   */
  chunkRead(fh: fs.promises.FileHandle, offset: number, length: number): ChunkRead | null {
    const direct = this.openedDirect.has(fh);
    if (direct && !this.direct) return null;
    return { fd: fh.fd, offset, length, direct };
  }

  /**
   * Reads exactly `length` bytes at `offset` (a multiple of DIRECT_ALIGN) of `file`, open as `fh`, into
   * the start of `buf` (one of `buffers()`). Throws `shrank()` when the file ends before
   * `offset + length`.
   */
  async read(fh: fs.promises.FileHandle, file: string, buf: Buffer, offset: number, length: number, shrank: () => Error): Promise<void> {
    if (this.direct && this.openedDirect.has(fh)) {
      try {
        if ((await readPages(fh, buf, offset, length)) < length) throw shrank();
        return;
      } catch (err) {
        if (!isDirectRefused(err)) throw err;
        this.direct = false;
      }
    }
    // A handle opened with O_DIRECT cannot do ordinary (unaligned) reads: use one of our own.
    const own = this.openedDirect.has(fh) ? await fs.promises.open(file, 'r') : null;
    try {
      const h = own ?? fh;
      let got = 0;
      while (got < length) {
        const { bytesRead } = await h.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) throw shrank();
        got += bytesRead;
      }
    } finally {
      await own?.close();
    }
  }
}
