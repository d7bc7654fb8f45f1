import { AdminError, ErrorCodes } from '../../../shared/errors.js';
import {
  MAX_CHUNK_SHIFT,
  SEAL_HEADER_BYTES,
  SEAL_MAGIC,
  TAG_BYTES,
  associatedData,
  authError,
  checkKey,
  checkLabel,
  checkMagic,
  decryptChunk,
  envelopeKey,
  isChunkShift,
  parseHeader,
  truncatedError,
} from './envelope-format.js';
import { SealError } from './seal-error.js';

export interface EnvelopeReaderOptions {
  /**
   * The largest chunk shift this reader accepts (default 30). The reader must buffer one whole chunk
   * before it can check its tag, so a caller that knows its objects use small chunks (log segments)
   * says so, and a forged header cannot make it hold up to 1 GiB.
   */
  maxChunkShift?: number;
}

/**
 * Opens one sealed envelope from bytes that arrive in any split.
 *
 * Contract:
 * - `push()` returns the plaintext of every chunk whose tag has verified and that is known not to be
 *   the last (a chunk is known to be non-last once a byte beyond it has arrived), as buffers in order
 *   (a chunk may come as several). No byte of a chunk is returned before its tag verified.
 * - `end()` says the stream is over: it authenticates the last chunk and RETURNS ITS PLAINTEXT (the
 *   stream's tail; only the end of the stream can tell a full last chunk from a full middle one).
 *   It throws SealError if the stream did not end with its last chunk.
 * - Plaintext handed out by `push()` is authentic but the stream is complete only once `end()`
 *   returned: write it somewhere provisional (a temp file) and commit only after `end()`.
 * - After a SealError every later call throws the same error. Pushed bytes are kept by reference until
 *   consumed: do not modify them after pushing.
 */
export class EnvelopeReader {
  private readonly purposeKey: Buffer;
  private readonly label: string;
  private readonly maxChunkShift: number;
  private readonly queue: Buffer[] = [];
  private head = 0;
  private queued = 0;
  private key: Buffer | null = null;
  private aad: Buffer | null = null;
  private sealedChunkBytes = 0;
  private index = 0;
  private failure: SealError | null = null;
  private ended = false;

  constructor(purposeKey: Buffer, label: string, options: EnvelopeReaderOptions = {}) {
    checkKey(purposeKey, 'a purpose key');
    checkLabel(label);
    const max = options.maxChunkShift ?? MAX_CHUNK_SHIFT;
    if (!isChunkShift(max)) throw new AdminError(ErrorCodes.INTERNAL, `maxChunkShift ${String(max)} out of range`);
    this.purposeKey = purposeKey;
    this.label = label;
    this.maxChunkShift = max;
  }

  push(bytes: Uint8Array): Buffer[] {
    this.checkUsable();
    if (bytes.length === 0) return [];
    this.queue.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    this.queued += bytes.length;
    try {
      if (this.key === null && !this.readHeader()) return [];
      // Strictly more than a chunk: then the chunk in front is not the last one.
      if (this.queued <= this.sealedChunkBytes) return [];
      const out: Buffer[] = [];
      while (this.queued > this.sealedChunkBytes) out.push(...this.openNext(this.sealedChunkBytes, false));
      return out;
    } catch (err) {
      throw this.failed(err);
    }
  }

  end(): Buffer[] {
    this.checkUsable();
    this.ended = true;
    try {
      if (this.key === null && !this.readHeader()) throw truncatedError(this.label, `${this.queued} bytes, shorter than the header`);
      const rest = this.queued;
      if (rest < TAG_BYTES) {
        throw truncatedError(this.label, `${rest} bytes of chunk ${this.index}, less than its tag`);
      }
      const pieces = this.take(rest - TAG_BYTES);
      const tag = Buffer.concat(this.take(TAG_BYTES));
      const plain = decryptChunk(this.key!, this.aad!, this.index, true, pieces, tag);
      if (plain === null) {
        // A full-size tail that verifies as a middle chunk: the stream was cut at a chunk boundary.
        if (rest === this.sealedChunkBytes && decryptChunk(this.key!, this.aad!, this.index, false, pieces, tag) !== null) {
          throw truncatedError(this.label, `ends at the boundary after chunk ${this.index}`);
        }
        throw authError(this.label, this.index);
      }
      if (plain.length === 0 && this.index > 0) {
        throw new SealError('format', `sealed envelope for "${this.label}" ends with an empty chunk after full ones (not an encoding this format writes)`);
      }
      this.index++;
      return plain;
    } catch (err) {
      throw this.failed(err);
    }
  }

  private checkUsable(): void {
    if (this.failure) throw this.failure;
    if (this.ended) throw new AdminError(ErrorCodes.INTERNAL, `envelope reader for "${this.label}" used after end()`);
  }

  /** Remembers a refusal (every later call repeats it) and drops what was buffered. */
  private failed(err: unknown): unknown {
    if (err instanceof SealError) {
      this.failure = err;
      this.queue.length = 0;
      this.head = 0;
      this.queued = 0;
    }
    return err;
  }

  /** Checks as much of the header as has arrived; true once all of it was read. */
  private readHeader(): boolean {
    const seen = this.peek(Math.min(this.queued, SEAL_MAGIC.length + 1));
    checkMagic(seen, this.label);
    if (this.queued < SEAL_HEADER_BYTES) {
      if (seen.length > SEAL_MAGIC.length) parseHeaderShiftOnly(seen, this.label, this.maxChunkShift);
      return false;
    }
    const header = Buffer.concat(this.take(SEAL_HEADER_BYTES));
    const shift = parseHeader(header, this.label, this.maxChunkShift);
    this.key = envelopeKey(this.purposeKey, header.subarray(SEAL_MAGIC.length + 1));
    this.aad = associatedData(header, this.label);
    this.sealedChunkBytes = 2 ** shift + TAG_BYTES;
    return true;
  }

  private openNext(sealedBytes: number, last: boolean): Buffer[] {
    const pieces = this.take(sealedBytes - TAG_BYTES);
    const tag = Buffer.concat(this.take(TAG_BYTES));
    const plain = decryptChunk(this.key!, this.aad!, this.index, last, pieces, tag);
    if (plain === null) throw authError(this.label, this.index);
    this.index++;
    return plain;
  }

  /** The first n queued bytes, copied, without consuming them. */
  private peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (let i = this.head; filled < n; i++) {
      const b = this.queue[i]!;
      filled += b.copy(out, filled, 0, Math.min(b.length, n - filled));
    }
    return out;
  }

  /** Consumes the first n queued bytes, as views on the pushed buffers (no copy unless they are tiny). */
  private take(n: number): Buffer[] {
    const out: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const b = this.queue[this.head]!;
      if (b.length <= need) {
        out.push(b);
        need -= b.length;
        this.queue[this.head++] = EMPTY;
      } else {
        out.push(b.subarray(0, need));
        this.queue[this.head] = b.subarray(need);
        need = 0;
      }
    }
    this.queued -= n;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    // Fed a byte at a time, a chunk would be thousands of one-byte pieces: one GCM update each is slow.
    return out.length > 64 && n < out.length * 4096 ? [Buffer.concat(out, n)] : out;
  }
}

const EMPTY = Buffer.alloc(0);

function parseHeaderShiftOnly(seen: Buffer, label: string, maxChunkShift: number): void {
  const padded = Buffer.alloc(SEAL_HEADER_BYTES);
  seen.copy(padded);
  parseHeader(padded, label, maxChunkShift);
}
