import crypto from 'node:crypto';
import { AdminError, ErrorCodes } from '../../../shared/errors.js';
import { SALT_BYTES, associatedData, buildHeader, checkChunkShift, checkKey, checkLabel, encryptChunk, envelopeKey } from './envelope-format.js';

/**
 * Seals a plaintext that arrives in pieces (a log segment as it is written), one chunk at a time.
 *
 * Contract: `write()` and `finish()` return the sealed bytes that are ready, in order; their
 * concatenation over the writer's life is exactly the envelope `seal()` would make of the
 * concatenated pieces with the same salt. A chunk is sealed only once a byte beyond it has arrived (or
 * at `finish()`), because whether it is the last one is part of its nonce; so the writer holds up to
 * one chunk of plaintext (a copy: the caller may reuse its buffers once write() returned). The header
 * comes out with the first call. After `finish()` the writer is spent.
 */
export class EnvelopeWriter {
  private readonly key: Buffer;
  private readonly aad: Buffer;
  private readonly chunkBytes: number;
  private header: Buffer | null;
  /** The current chunk's plaintext so far (copies: the caller may reuse its buffers). */
  private pendingParts: Buffer[] = [];
  private filled = 0;
  private index = 0;
  private finished = false;

  constructor(purposeKey: Buffer, label: string, chunkShift: number) {
    checkKey(purposeKey, 'a purpose key');
    checkLabel(label);
    checkChunkShift(chunkShift);
    const salt = crypto.randomBytes(SALT_BYTES);
    this.header = buildHeader(chunkShift, salt);
    this.key = envelopeKey(purposeKey, salt);
    this.aad = associatedData(this.header, label);
    this.chunkBytes = 2 ** chunkShift;
  }

  write(p: Uint8Array): Buffer[] {
    this.checkOpen();
    const out = this.takeHeader();
    let offset = 0;
    while (offset < p.length) {
      if (this.filled === this.chunkBytes) {
        // A byte beyond a full chunk has arrived: that chunk is not the last.
        out.push(...this.sealPending(false));
      }
      if (this.filled === 0 && p.length - offset > this.chunkBytes) {
        // A whole chunk with a byte beyond it: sealed straight from the caller's bytes, no copy.
        out.push(...encryptChunk(this.key, this.aad, this.index++, false, [p.subarray(offset, offset + this.chunkBytes)]));
        offset += this.chunkBytes;
        continue;
      }
      const n = Math.min(this.chunkBytes - this.filled, p.length - offset);
      this.pendingParts.push(Buffer.from(p.subarray(offset, offset + n)));
      this.filled += n;
      offset += n;
    }
    return out;
  }

  finish(): Buffer[] {
    this.checkOpen();
    const out = this.takeHeader();
    out.push(...this.sealPending(true));
    this.finished = true;
    return out;
  }

  private sealPending(last: boolean): Buffer[] {
    const parts = this.pendingParts;
    // Many tiny writes would mean one GCM update per few bytes: join them first.
    const pieces = parts.length > 64 && this.filled < parts.length * 4096 ? [Buffer.concat(parts, this.filled)] : parts;
    const sealed = encryptChunk(this.key, this.aad, this.index++, last, pieces);
    this.pendingParts = [];
    this.filled = 0;
    return sealed;
  }

  private takeHeader(): Buffer[] {
    const h = this.header;
    this.header = null;
    return h ? [h] : [];
  }

  private checkOpen(): void {
    if (this.finished) throw new AdminError(ErrorCodes.INTERNAL, 'envelope writer used after finish()');
  }
}
