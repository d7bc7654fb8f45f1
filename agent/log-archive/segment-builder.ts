import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { roundUpToAlign } from '../fs/direct-io.js';
import { canonicalJson } from '../repository/format.js';
import { SEGMENT_MAGIC, SEGMENT_VERSION, type SegmentBatch, type SegmentInfo, type Sha256 } from './segment.js';

/** Room kept before the batches for the magic, the header's length and its JSON (about 200 bytes). */
export const HEADER_ROOM = 1024;
const DIGEST = 32;
/** What each batch costs in a segment besides its payload: readAt (u64) and length (u32). */
export const BATCH_OVERHEAD = 12;

/**
 * The body a sender's reused segment buffer holds: more than any segment the archiver cuts (about
 * 8 MiB, more only when one pass of the log is larger; such a segment gets a buffer of its own). Only
 * the pages a segment fills are ever touched: the archiver's segments are a second's log.
 */
export const BUFFER_BODY_BYTES = 16 * 1024 * 1024;
/** The size of a reused buffer for a segment body of up to `body` bytes (page-aligned: one size class of the process's AlignedPool). */
export function segmentBufferBytes(body: number): number {
  return roundUpToAlign(HEADER_ROOM + body + DIGEST);
}
/** The size of a sender's reused segment buffer. */
export const SEGMENT_BUFFER_BYTES = segmentBufferBytes(BUFFER_BODY_BYTES);

/** The bytes `batches` take in a segment's body (segment.ts): the measure every memory bound here uses. */
export function bodyBytes(batches: readonly SegmentBatch[]): number {
  let n = 0;
  for (const b of batches) n += BATCH_OVERHEAD + b.payload.length;
  return n;
}

/**
 * Builds a segment (segment.ts's encoding, byte for byte the same) in a buffer the caller gives and
 * keeps, batches appended as they come: a merge copies each input in as soon as it is decoded and lets
 * the input go, and the log archive's senders encode every segment into one buffer reused segment
 * after segment, instead of a fresh multi-megabyte buffer each time (which glibc keeps, and which is
 * copied again to every worker thread that reads it; a view of shared memory is not).
 *
 * The batches go after HEADER_ROOM bytes; `finish` writes the header just before them and the digest
 * after, and returns a view of the buffer: valid until the builder's next use. One user at a time.
 */
export class SegmentBuilder {
  private at = HEADER_ROOM;
  private count = 0;

  constructor(private readonly buffer: Buffer) {
    if (buffer.length < HEADER_ROOM + DIGEST) throw new AdminError(ErrorCodes.INTERNAL, `a segment buffer of ${buffer.length} bytes is too small`);
  }

  /** Body bytes appended so far. */
  get bytes(): number {
    return this.at - HEADER_ROOM;
  }

  /** Whether `bytes` more body bytes fit. */
  fits(bytes: number): boolean {
    return this.at + bytes + DIGEST <= this.buffer.length;
  }

  /** Appends batches (copied); throws INTERNAL when they do not fit (ask `fits` first). */
  add(batches: readonly SegmentBatch[]): void {
    if (!this.fits(bodyBytes(batches))) throw new AdminError(ErrorCodes.INTERNAL, `batches of ${bodyBytes(batches)} bytes do not fit a segment buffer of ${this.buffer.length}`);
    const buf = this.buffer;
    let at = this.at;
    for (const b of batches) {
      at = buf.writeBigUInt64LE(BigInt(b.readAt), at);
      at = buf.writeUInt32LE(b.payload.length, at);
      at += b.payload.copy(buf, at);
    }
    this.at = at;
    this.count += batches.length;
  }

  /** The segment `info` of the batches appended: a view of the buffer (digest by `sha256`). Starts the builder over. */
  async finish(info: SegmentInfo, sha256: Sha256): Promise<Buffer> {
    const header = Buffer.from(
      canonicalJson({ batches: this.count, first: info.first, from: info.from, last: info.last, timeline: info.timeline, to: info.to, version: SEGMENT_VERSION }),
    );
    const start = HEADER_ROOM - header.length - 4 - SEGMENT_MAGIC.length;
    if (start < 0) throw new AdminError(ErrorCodes.INTERNAL, `a segment header of ${header.length} bytes does not fit its room`);
    const buf = this.buffer;
    SEGMENT_MAGIC.copy(buf, start);
    buf.writeUInt32LE(header.length, start + SEGMENT_MAGIC.length);
    header.copy(buf, start + SEGMENT_MAGIC.length + 4);
    const end = this.at;
    (await sha256(buf.subarray(start, end))).copy(buf, end);
    this.reset();
    return buf.subarray(start, end + DIGEST);
  }

  /** `batches` as segment `info` in `buffer` (a view of it), or null when they do not fit there. */
  static async encode(buffer: Buffer, info: SegmentInfo, batches: readonly SegmentBatch[], sha256: Sha256): Promise<Buffer | null> {
    const builder = new SegmentBuilder(buffer);
    if (!builder.fits(bodyBytes(batches))) return null;
    builder.add(batches);
    return builder.finish(info, sha256);
  }

  /** Forgets the batches appended. */
  reset(): void {
    this.at = HEADER_ROOM;
    this.count = 0;
  }
}
