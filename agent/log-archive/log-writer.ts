import { crc32c, maskCrc } from '../leveldb/crc32c.js';
import { BLOCK_SIZE, HEADER_SIZE } from '../leveldb/log-reader.js';

/**
 * Records into LevelDB's log format, as log_writer.cc writes them: 32 KiB blocks, a record cut into
 * FIRST/MIDDLE/LAST fragments where it crosses a block, a block's tail shorter than a header padded with
 * zeros, each fragment's crc32c masked. Stateful (where the current block stands), so a log of any size
 * can be written a record at a time.
 */
export class LogEncoder {
  private blockOffset = 0;

  /** The bytes that follow the records encoded so far with `payload` as the next record. */
  encode(payload: Buffer): Buffer[] {
    const parts: Buffer[] = [];
    let left = payload.length;
    let at = 0;
    let begin = true;
    do {
      const leftover = BLOCK_SIZE - this.blockOffset;
      if (leftover < HEADER_SIZE) {
        if (leftover > 0) parts.push(Buffer.alloc(leftover));
        this.blockOffset = 0;
      }
      const avail = BLOCK_SIZE - this.blockOffset - HEADER_SIZE;
      const length = Math.min(left, avail);
      const end = left === length;
      const type = begin && end ? 1 : begin ? 2 : end ? 4 : 3;
      const header = Buffer.alloc(HEADER_SIZE);
      const fragment = payload.subarray(at, at + length);
      header.writeUInt16LE(length, 4);
      header[6] = type;
      const typeAndData = Buffer.concat([header.subarray(6, 7), fragment]);
      header.writeUInt32LE(maskCrc(crc32c(typeAndData)), 0);
      parts.push(header, fragment);
      this.blockOffset += HEADER_SIZE + length;
      at += length;
      left -= length;
      begin = false;
    } while (left > 0);
    return parts;
  }
}

/** The bytes of a LevelDB log holding `payloads` as records (tests, and small logs). */
export function encodeLog(payloads: readonly Buffer[]): Buffer {
  const encoder = new LogEncoder();
  return Buffer.concat(payloads.flatMap((p) => encoder.encode(p)));
}
