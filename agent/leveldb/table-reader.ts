import fs from 'node:fs';
import { crc32c, unmaskCrc } from './crc32c.js';
import { snappyDecompress, TableCorruptionError, varint } from './table-check.js';

/**
 * One entry of a table, its internal key split: the user key, the sequence number and the type
 * (1 a value, 0 a deletion: db/dbformat.h).
 */
export interface TableEntry {
  key: Buffer;
  sequence: number;
  type: 0 | 1;
  value: Buffer;
}

const FOOTER_SIZE = 48;
const BLOCK_TRAILER = 5;
const MAGIC_LO = 0x8b80fb57;
const MAGIC_HI = 0xdb477524;
/** Data blocks kept parsed per table (a lookup touches one or two). */
const CACHED_BLOCKS = 16;

interface Parsed {
  /** Internal keys, in order. */
  keys: Buffer[];
  values: Buffer[];
}

/**
 * Point lookups in one LevelDB table file (doc/table_format.md) with the bytewise comparator, by internal
 * key: `seek(key, sequence)` is the first entry at or after (key, sequence) in the table's order (user
 * key ascending, then sequence descending), as LevelDB's own Get positions an iterator. Every block read
 * is checked against its CRC-32C (a flipped bit is an error, never a wrong answer). Reads are positional
 * on one descriptor, so a table LevelDB deletes meanwhile stays readable until close().
 *
 * Contract: open() fails with ENOENT when the file is gone; every other failure is a TableCorruptionError
 * naming the file. The reader holds the index block and a few data blocks; close() releases the file.
 */
export class TableReader {
  private index: Parsed | null = null;
  private readonly blocks = new Map<number, Parsed>();

  private constructor(
    readonly file: string,
    private readonly fh: fs.promises.FileHandle,
    private readonly size: number,
  ) {}

  static async open(file: string): Promise<TableReader> {
    const fh = await fs.promises.open(file, 'r');
    try {
      const { size } = await fh.stat();
      return new TableReader(file, fh, size);
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }

  /** The first entry at or after (key, sequence) in the table's order, or null past its end. */
  async seek(key: Buffer, sequence: number): Promise<TableEntry | null> {
    const target = internalKey(key, sequence, 1);
    const index = await this.readIndex();
    for (let i = lowerBound(index.keys, target); i < index.keys.length; i++) {
      // The separator of block i is at or after its last key and before the next block's first key, so
      // the first key at or after the target is in block i, or (if block i ends before it) in block i + 1.
      const block = await this.dataBlock(index.values[i]!);
      const j = lowerBound(block.keys, target);
      if (j < block.keys.length) return this.entry(block.keys[j]!, block.values[j]!);
    }
    return null;
  }

  private entry(ikey: Buffer, value: Buffer): TableEntry {
    if (ikey.length < 8) throw this.fail('an internal key shorter than 8 bytes');
    const { sequence, type } = tagOf(ikey);
    if (type !== 0 && type !== 1) throw this.fail(`an entry of unknown type ${type}`);
    return { key: ikey.subarray(0, ikey.length - 8), sequence, type, value };
  }

  private async readIndex(): Promise<Parsed> {
    if (this.index) return this.index;
    if (this.size < FOOTER_SIZE) throw this.fail('too short to be a table');
    const footer = await this.read(this.size - FOOTER_SIZE, FOOTER_SIZE);
    if (footer.readUInt32LE(40) !== MAGIC_LO || footer.readUInt32LE(44) !== MAGIC_HI) throw this.fail('bad magic number');
    const pos = { p: 0 };
    varint(footer, pos, this.fail); // metaindex handle: filters are not used
    varint(footer, pos, this.fail);
    const offset = varint(footer, pos, this.fail);
    const size = varint(footer, pos, this.fail);
    this.index = parseBlock(await this.block(offset, size), this.fail);
    return this.index;
  }

  private async dataBlock(handle: Buffer): Promise<Parsed> {
    const pos = { p: 0 };
    const offset = varint(handle, pos, this.fail);
    const size = varint(handle, pos, this.fail);
    let parsed = this.blocks.get(offset);
    if (!parsed) {
      parsed = parseBlock(await this.block(offset, size), this.fail);
      if (this.blocks.size >= CACHED_BLOCKS) this.blocks.delete(this.blocks.keys().next().value!);
      this.blocks.set(offset, parsed);
    }
    return parsed;
  }

  /** A block's contents, its checksum verified and (snappy) decompressed. */
  private async block(offset: number, size: number): Promise<Buffer> {
    if (offset + size + BLOCK_TRAILER > this.size) throw this.fail(`block at ${offset} runs past the end of the file`);
    const raw = await this.read(offset, size + BLOCK_TRAILER);
    const type = raw[size]!;
    if (crc32c(raw, 0, size + 1) !== unmaskCrc(raw.readUInt32LE(size + 1))) throw this.fail(`checksum mismatch in block at offset ${offset}`);
    const contents = raw.subarray(0, size);
    if (type === 0) return contents;
    if (type === 1) return snappyDecompress(contents, this.fail);
    throw this.fail(`unknown block compression ${type} at offset ${offset}`);
  }

  private async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw this.fail(`the file ends inside the block at ${offset}`);
      done += bytesRead;
    }
    return buf;
  }

  private readonly fail = (m: string): Error => new TableCorruptionError(this.file, m);
}

/** An internal key: the user key, then (sequence << 8 | type) as a fixed64, little-endian. */
export function internalKey(key: Buffer, sequence: number, type: number): Buffer {
  const out = Buffer.allocUnsafe(key.length + 8);
  key.copy(out, 0);
  out.writeBigUInt64LE((BigInt(sequence) << 8n) | BigInt(type), key.length);
  return out;
}

function tagOf(ikey: Buffer): { sequence: number; type: number } {
  const tag = ikey.readBigUInt64LE(ikey.length - 8);
  return { sequence: Number(tag >> 8n), type: Number(tag & 0xffn) };
}

/** LevelDB's InternalKeyComparator over the bytewise comparator: user key ascending, then tag descending. */
export function compareInternal(a: Buffer, b: Buffer): number {
  const c = Buffer.compare(a.subarray(0, a.length - 8), b.subarray(0, b.length - 8));
  if (c !== 0) return c;
  const ta = a.readBigUInt64LE(a.length - 8);
  const tb = b.readBigUInt64LE(b.length - 8);
  return ta > tb ? -1 : ta < tb ? 1 : 0;
}

/** The first index whose key is at or after `target`. */
function lowerBound(keys: readonly Buffer[], target: Buffer): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareInternal(keys[mid]!, target) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Every entry of a block, keys rebuilt from their shared prefixes (table/block.cc). */
function parseBlock(block: Buffer, fail: (m: string) => Error): Parsed {
  if (block.length < 4) throw fail('block too short');
  const restarts = block.readUInt32LE(block.length - 4);
  const limit = block.length - 4 - restarts * 4;
  if (limit < 0) throw fail('bad restart count');
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  const pos = { p: 0 };
  let prev: Buffer = Buffer.alloc(0);
  while (pos.p < limit) {
    const shared = varint(block, pos, fail);
    const nonShared = varint(block, pos, fail);
    const valueLength = varint(block, pos, fail);
    if (shared > prev.length || pos.p + nonShared + valueLength > limit) throw fail('block entry runs past the block');
    const key = shared === 0 ? block.subarray(pos.p, pos.p + nonShared) : Buffer.concat([prev.subarray(0, shared), block.subarray(pos.p, pos.p + nonShared)]);
    pos.p += nonShared;
    keys.push(key);
    values.push(block.subarray(pos.p, pos.p + valueLength));
    pos.p += valueLength;
    prev = key;
  }
  for (let i = 0; i < keys.length; i++) {
    if (keys[i]!.length < 8) throw fail('an internal key shorter than 8 bytes');
    if (i > 0 && compareInternal(keys[i - 1]!, keys[i]!) >= 0) throw fail('block keys out of order');
  }
  return { keys, values };
}
