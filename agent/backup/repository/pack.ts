import { PACK_MAGIC, canonicalJson, sha256, type PackHeader } from './format.js';

const TRAILER = 4 + PACK_MAGIC.length;

/**
 * Blobs collected into one pack, in one buffer: bytes back to back, then the header that lists them,
 * its length and the magic. The buffer is the caller's and is reused pack after pack (no per-blob
 * allocations, no concatenation), which is what keeps a backup's memory flat.
 */
export class PackBuilder {
  private readonly entries: [string, number, number][] = [];
  private offset = 0;

  constructor(private buffer: Buffer) {}

  /** Copies `data` in as blob `id`. Grows the buffer if it must (a pack has no hard size limit). */
  add(id: string, data: Buffer): void {
    this.ensure(this.offset + data.length);
    data.copy(this.buffer, this.offset);
    this.entries.push([id, this.offset, data.length]);
    this.offset += data.length;
  }

  get size(): number {
    return this.offset;
  }

  get count(): number {
    return this.entries.length;
  }

  /**
   * The pack: `data` is a view of the builder's buffer (valid until the buffer is reused), `id` the
   * SHA-256 of its header. The header names every blob by its own SHA-256 with its place, so it pins
   * the whole content: hashing the header, not the whole pack, saves a second pass over every byte.
   */
  finish(): { id: string; data: Buffer; blobs: [string, number, number][]; buffer: Buffer } {
    const header: PackHeader = { version: 1, blobs: this.entries.splice(0) };
    const headerBytes = Buffer.from(canonicalJson(header));
    const end = this.offset + headerBytes.length + TRAILER;
    this.ensure(end);
    headerBytes.copy(this.buffer, this.offset);
    this.buffer.writeUInt32LE(headerBytes.length, this.offset + headerBytes.length);
    PACK_MAGIC.copy(this.buffer, end - PACK_MAGIC.length);
    this.offset = 0;
    return { id: sha256(headerBytes), data: this.buffer.subarray(0, end), blobs: header.blobs, buffer: this.buffer };
  }

  private ensure(size: number): void {
    if (size <= this.buffer.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(size, this.buffer.length * 2));
    this.buffer.copy(bigger, 0, 0, this.offset);
    this.buffer = bigger;
  }
}

/** Splits a whole pack into its header and the header's own bytes; throws a plain Error when damaged. */
export function readPackHeader(pack: Buffer): PackHeader & { headerBytes: Buffer } {
  if (pack.length < TRAILER || !pack.subarray(pack.length - PACK_MAGIC.length).equals(PACK_MAGIC)) {
    throw new Error('not a pack (bad magic)');
  }
  const len = pack.readUInt32LE(pack.length - TRAILER);
  if (len > pack.length - TRAILER) throw new Error('pack header length out of range');
  const headerBytes = pack.subarray(pack.length - TRAILER - len, pack.length - TRAILER);
  const header = JSON.parse(headerBytes.toString('utf8')) as PackHeader;
  if (header.version !== 1 || !Array.isArray(header.blobs)) throw new Error('unknown pack header version');
  return { ...header, headerBytes };
}
