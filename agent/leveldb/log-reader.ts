import { crc32c, unmaskCrc } from './crc32c.js';

/** LevelDB's log format (doc/log_format.md): 32 KiB blocks of records with a 7-byte header. */
export const BLOCK_SIZE = 32768;
export const HEADER_SIZE = 7;

const enum RecordType {
  Zero = 0,
  Full = 1,
  First = 2,
  Middle = 3,
  Last = 4,
}

export interface LogRecord {
  payload: Buffer;
  /** Offset just past the record's last fragment: a copy cut here holds this record whole. */
  end: number;
}

export interface ParsedLog {
  records: LogRecord[];
  /** Offset just past the last complete logical record (0 if none). */
  completeEnd: number;
}

export class LogCorruptionError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} at offset ${offset}`);
    this.name = 'LogCorruptionError';
  }
}

/**
 * Parses the logical records of a log file (a WAL or a MANIFEST) held in `buf`, a prefix of the file.
 *
 * A record cut off at the end of `buf` is a clean end (the writer may be in the middle of appending it,
 * or the prefix was taken then), exactly as LevelDB's reader treats the end of a file. A bad CRC, an
 * impossible length or a fragment out of sequence before the end is corruption and throws.
 */
export function parseLog(buf: Buffer): ParsedLog {
  const records: LogRecord[] = [];
  let completeEnd = 0;
  let pos = 0;
  let fragments: Buffer[] | null = null;

  while (pos < buf.length) {
    const blockLeft = BLOCK_SIZE - (pos % BLOCK_SIZE);
    if (blockLeft < HEADER_SIZE) {
      // The writer pads a block's tail shorter than a header with zeros.
      pos += blockLeft;
      continue;
    }
    if (pos + HEADER_SIZE > buf.length) break; // header cut off at the end: clean end
    const length = buf.readUInt16LE(pos + 4);
    const type = buf[pos + 6]!;
    if (type === RecordType.Zero && length === 0) {
      // Preallocated, never-written space (mmap writers): the rest of the block is empty.
      pos += blockLeft;
      continue;
    }
    if (HEADER_SIZE + length > blockLeft) throw new LogCorruptionError('record length exceeds block', pos);
    const dataStart = pos + HEADER_SIZE;
    const dataEnd = dataStart + length;
    if (dataEnd > buf.length) break; // payload cut off at the end: clean end
    const expected = unmaskCrc(buf.readUInt32LE(pos));
    const actual = crc32c(buf, pos + 6, dataEnd);
    if (expected !== actual) throw new LogCorruptionError('checksum mismatch', pos);
    const data = buf.subarray(dataStart, dataEnd);
    pos = dataEnd;
    switch (type) {
      case RecordType.Full:
        if (fragments) throw new LogCorruptionError('FULL record inside a fragmented record', dataStart - HEADER_SIZE);
        records.push({ payload: data, end: pos });
        completeEnd = pos;
        break;
      case RecordType.First:
        if (fragments) throw new LogCorruptionError('FIRST record inside a fragmented record', dataStart - HEADER_SIZE);
        fragments = [data];
        break;
      case RecordType.Middle:
        if (!fragments) throw new LogCorruptionError('MIDDLE record without FIRST', dataStart - HEADER_SIZE);
        fragments.push(data);
        break;
      case RecordType.Last:
        if (!fragments) throw new LogCorruptionError('LAST record without FIRST', dataStart - HEADER_SIZE);
        fragments.push(data);
        records.push({ payload: Buffer.concat(fragments), end: pos });
        fragments = null;
        completeEnd = pos;
        break;
      default:
        throw new LogCorruptionError(`unknown record type ${type}`, dataStart - HEADER_SIZE);
    }
  }
  return { records, completeEnd };
}
