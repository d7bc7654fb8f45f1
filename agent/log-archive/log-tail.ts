import { crc32c, unmaskCrc } from '../leveldb/crc32c.js';
import { BLOCK_SIZE, HEADER_SIZE, LogCorruptionError } from '../leveldb/log-reader.js';

/**
 * Reads the records of a LevelDB log that is still being written, a piece at a time.
 *
 * `push(bytes)` takes the bytes that follow those pushed before (the file from offset 0 on) and returns
 * every record completed by them. A fragment or record not yet whole is kept for the next push: it is
 * the writer's torn tail, completed later. Every fragment's checksum is verified; a bad checksum, an
 * impossible length or fragments out of order throw LogCorruptionError (the bytes before the end of a
 * file never change in an append-only log, so that is damage, not a race).
 */
export class LogTail {
  /** Bytes received but not yet consumed, starting at file offset `pos`. */
  private pending: Buffer = Buffer.alloc(0);
  /** File offset of pending[0]. */
  private pos = 0;
  /** Fragments of the record being assembled, and the file offset of its first fragment. */
  private fragments: Buffer[] | null = null;

  /** File offset just past the last byte pushed. */
  get offset(): number {
    return this.pos + this.pending.length;
  }

  /** Bytes pushed that belong to no complete record yet (a torn tail, if the log is finished). */
  get incompleteBytes(): number {
    return this.pending.length + (this.fragments?.reduce((n, f) => n + f.length + HEADER_SIZE, 0) ?? 0);
  }

  push(bytes: Buffer): Buffer[] {
    const buf = this.pending.length === 0 ? bytes : Buffer.concat([this.pending, bytes]);
    const base = this.pos;
    const out: Buffer[] = [];
    let at = 0;
    while (at < buf.length) {
      const abs = base + at;
      const blockLeft = BLOCK_SIZE - (abs % BLOCK_SIZE);
      if (blockLeft < HEADER_SIZE) {
        // The writer pads a block's tail shorter than a header with zeros: wait until all of it is there.
        if (at + blockLeft > buf.length) break;
        at += blockLeft;
        continue;
      }
      if (at + HEADER_SIZE > buf.length) break;
      const length = buf.readUInt16LE(at + 4);
      const type = buf[at + 6]!;
      if (HEADER_SIZE + length > blockLeft) throw new LogCorruptionError('record length exceeds block', abs);
      const dataEnd = at + HEADER_SIZE + length;
      if (dataEnd > buf.length) break; // payload not all there yet
      if (type === 0 && length === 0) {
        // Never written in LevelDB 1.20's logs (no preallocation); treat as damage rather than guess.
        throw new LogCorruptionError('zero record', abs);
      }
      if (unmaskCrc(buf.readUInt32LE(at)) !== crc32c(buf, at + 6, dataEnd)) throw new LogCorruptionError('checksum mismatch', abs);
      // Copied: the record outlives `buf`, which may be a large read buffer.
      const data = Buffer.from(buf.subarray(at + HEADER_SIZE, dataEnd));
      at = dataEnd;
      switch (type) {
        case 1:
          if (this.fragments) throw new LogCorruptionError('FULL record inside a fragmented record', abs);
          out.push(data);
          break;
        case 2:
          if (this.fragments) throw new LogCorruptionError('FIRST record inside a fragmented record', abs);
          this.fragments = [data];
          break;
        case 3:
          if (!this.fragments) throw new LogCorruptionError('MIDDLE record without FIRST', abs);
          this.fragments.push(data);
          break;
        case 4:
          if (!this.fragments) throw new LogCorruptionError('LAST record without FIRST', abs);
          this.fragments.push(data);
          out.push(Buffer.concat(this.fragments));
          this.fragments = null;
          break;
        default:
          throw new LogCorruptionError(`unknown record type ${type}`, abs);
      }
    }
    this.pending = Buffer.from(buf.subarray(at));
    this.pos = base + at;
    return out;
  }
}
