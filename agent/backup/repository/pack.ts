import { PACK_MAGIC, canonicalJson, sha256, type PackHeader } from './format.js';

/** Blobs collected into one pack: bytes back to back, then the header that lists them. */
export class PackBuilder {
  private readonly parts: Buffer[] = [];
  private readonly entries: [string, number, number][] = [];
  private offset = 0;

  add(id: string, data: Buffer): void {
    this.entries.push([id, this.offset, data.length]);
    this.parts.push(data);
    this.offset += data.length;
  }

  get size(): number {
    return this.offset;
  }

  get count(): number {
    return this.entries.length;
  }

  /** The pack's bytes and id; the builder is empty afterwards. */
  finish(): { id: string; data: Buffer; blobs: [string, number, number][] } {
    const header: PackHeader = { version: 1, blobs: this.entries.splice(0) };
    const headerBytes = Buffer.from(canonicalJson(header));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(headerBytes.length);
    const data = Buffer.concat([...this.parts.splice(0), headerBytes, len, PACK_MAGIC]);
    this.offset = 0;
    return { id: sha256(data), data, blobs: header.blobs };
  }
}

/** Reads the header at the end of a whole pack; throws a plain Error when the pack is damaged. */
export function readPackHeader(pack: Buffer): PackHeader {
  const tail = PACK_MAGIC.length + 4;
  if (pack.length < tail || !pack.subarray(pack.length - PACK_MAGIC.length).equals(PACK_MAGIC)) {
    throw new Error('not a pack (bad magic)');
  }
  const len = pack.readUInt32LE(pack.length - tail);
  if (len > pack.length - tail) throw new Error('pack header length out of range');
  const header = JSON.parse(pack.subarray(pack.length - tail - len, pack.length - tail).toString('utf8')) as PackHeader;
  if (header.version !== 1 || !Array.isArray(header.blobs)) throw new Error('unknown pack header version');
  return header;
}
