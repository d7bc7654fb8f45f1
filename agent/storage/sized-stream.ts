import { Readable } from 'node:stream';

/** The stream given to putStream yielded more or fewer bytes than promised. */
export class StreamSizeMismatch extends Error {
  constructor(
    readonly expected: number,
    readonly got: number,
  ) {
    super(`stream yielded ${got > expected ? `more than ${expected}` : got} bytes, expected ${expected}`);
    this.name = 'StreamSizeMismatch';
  }
}

/** The stream given to putStream failed by itself (its `cause`): not the storage's fault. */
export class SourceStreamError extends Error {
  constructor(cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
    this.name = 'SourceStreamError';
  }
}

/**
 * `source` as Buffers, failing with StreamSizeMismatch as soon as it yields more than `size` bytes, or at
 * its end if it yielded fewer; its own errors arrive as SourceStreamError. A consumer that stops early
 * destroys `source` too. What backends read in putStream, so that a wrong size never gets stored.
 */
export function sizedStream(source: Readable, size: number): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    let got = 0;
    const it = source[Symbol.asyncIterator]();
    try {
      for (;;) {
        let next: IteratorResult<unknown>;
        try {
          next = await it.next();
        } catch (err) {
          throw new SourceStreamError(err);
        }
        if (next.done) break;
        const value = next.value;
        const chunk = Buffer.isBuffer(value) ? value : Buffer.from(value as string | Uint8Array);
        got += chunk.length;
        if (got > size) throw new StreamSizeMismatch(size, got);
        yield chunk;
      }
    } finally {
      source.destroy(); // ended, failed or abandoned by the consumer: release the source either way
    }
    if (got !== size) throw new StreamSizeMismatch(size, got);
  }
  return Readable.from(chunks(), { objectMode: false });
}
