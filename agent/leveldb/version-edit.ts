/**
 * LevelDB's VersionEdit (db/version_edit.cc): one MANIFEST record, a list of tagged fields.
 * Only what a checkpoint needs is kept: file numbers, log numbers and the set of live tables.
 */
export interface VersionEdit {
  comparator?: string;
  logNumber?: number;
  prevLogNumber?: number;
  nextFileNumber?: number;
  lastSequence?: number;
  deletedFiles: { level: number; number: number }[];
  /** `smallest` and `largest` (internal keys) only when decoded with `keys` (they are most of a MANIFEST). */
  newFiles: { level: number; number: number; size: number; smallest?: Buffer; largest?: Buffer }[];
}

const enum Tag {
  Comparator = 1,
  LogNumber = 2,
  NextFileNumber = 3,
  LastSequence = 4,
  CompactPointer = 5,
  DeletedFile = 6,
  NewFile = 7,
  PrevLogNumber = 9,
}

export class VersionEditError extends Error {
  constructor(message: string) {
    super(`bad MANIFEST record: ${message}`);
    this.name = 'VersionEditError';
  }
}

class Cursor {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  /** Varints up to 64 bits; exact while below 2^53, which file numbers and sequences are in practice. */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new VersionEditError('truncated varint');
      const byte = this.buf[this.pos++]!;
      result += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) return result;
      scale *= 128;
    }
    throw new VersionEditError('varint too long');
  }
  slice(): Buffer {
    const len = this.varint();
    if (this.pos + len > this.buf.length) throw new VersionEditError('truncated slice');
    const s = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
  /** A slice passed over without making a Buffer of it: keys are most of a MANIFEST, and unused here. */
  skipSlice(): void {
    const len = this.varint();
    if (this.pos + len > this.buf.length) throw new VersionEditError('truncated slice');
    this.pos += len;
  }
}

export function decodeVersionEdit(payload: Buffer, options: { keys?: boolean } = {}): VersionEdit {
  const edit: VersionEdit = { deletedFiles: [], newFiles: [] };
  const c = new Cursor(payload);
  while (!c.done) {
    const tag = c.varint();
    switch (tag) {
      case Tag.Comparator:
        edit.comparator = c.slice().toString('utf8');
        break;
      case Tag.LogNumber:
        edit.logNumber = c.varint();
        break;
      case Tag.PrevLogNumber:
        edit.prevLogNumber = c.varint();
        break;
      case Tag.NextFileNumber:
        edit.nextFileNumber = c.varint();
        break;
      case Tag.LastSequence:
        edit.lastSequence = c.varint();
        break;
      case Tag.CompactPointer:
        c.varint();
        c.skipSlice();
        break;
      case Tag.DeletedFile: {
        const level = c.varint();
        edit.deletedFiles.push({ level, number: c.varint() });
        break;
      }
      case Tag.NewFile: {
        const level = c.varint();
        const number = c.varint();
        const size = c.varint();
        if (options.keys === true) {
          edit.newFiles.push({ level, number, size, smallest: c.slice(), largest: c.slice() });
        } else {
          c.skipSlice(); // smallest key
          c.skipSlice(); // largest key
          edit.newFiles.push({ level, number, size });
        }
        break;
      }
      default:
        throw new VersionEditError(`unknown tag ${tag}`);
    }
  }
  return edit;
}
