import type { ObjectWriter } from '../storage/storage.js';
import { BLOB_ALIGN, PACK_MAGIC, canonicalJson, packName, sha256, type PackHeader } from './format.js';

const TRAILER = 4 + PACK_MAGIC.length;

/** A blob in a pack: [id, offset, length]. */
export type PackEntry = [string, number, number];

/** Where the next blob goes after one that ends at `end`. */
export function alignBlob(end: number): number {
  return Math.ceil(end / BLOB_ALIGN) * BLOB_ALIGN;
}

/** What ends a pack and names it (RepoCodec.packTail). */
export type PackTail = (blobs: PackEntry[]) => { id: string; tail: Buffer };

/** A plain pack's end: the header, its length and the magic; the pack's id is the header's hash. */
export const plainPackTail: PackTail = (blobs) => {
  const header: PackHeader = { version: 1, blobs };
  const headerBytes = Buffer.from(canonicalJson(header));
  const tail = Buffer.alloc(headerBytes.length + TRAILER);
  headerBytes.copy(tail, 0);
  tail.writeUInt32LE(headerBytes.length, headerBytes.length);
  PACK_MAGIC.copy(tail, headerBytes.length + 4);
  // The header names every blob by its own SHA-256 with its place, so it pins the whole content:
  // hashing the header, not the whole pack, saves a second pass over every byte.
  return { id: sha256(headerBytes), tail };
};

/**
 * Blobs collected into one pack, in one buffer: each at the next multiple of BLOB_ALIGN (zeros between),
 * then the header that lists them, its length and the magic. The buffer is the caller's and is reused
 * pack after pack (no per-blob allocations, no concatenation), which is what keeps memory flat where a
 * pack must be stored whole (S3).
 */
export class PackBuilder {
  private readonly entries: PackEntry[] = [];
  private end = 0;

  constructor(
    private buffer: Buffer,
    private readonly tail: PackTail = plainPackTail,
  ) {}

  /** Copies `data` in as blob `id`. Grows the buffer if it must (a pack has no hard size limit). */
  add(id: string, data: Buffer): void {
    const at = alignBlob(this.end);
    this.ensure(at + data.length);
    this.buffer.fill(0, this.end, at); // the buffer is reused: a gap must not carry an old pack's bytes
    data.copy(this.buffer, at);
    this.entries.push([id, at, data.length]);
    this.end = at + data.length;
  }

  get size(): number {
    return this.end;
  }

  get count(): number {
    return this.entries.length;
  }

  /** The pack: `data` is a view of the builder's buffer (valid until the buffer is reused). */
  finish(): { id: string; data: Buffer; blobs: PackEntry[]; buffer: Buffer } {
    const blobs = this.entries.splice(0);
    const { id, tail } = this.tail(blobs);
    this.ensure(this.end + tail.length);
    tail.copy(this.buffer, this.end);
    const data = this.buffer.subarray(0, this.end + tail.length);
    this.end = 0;
    return { id, data, blobs, buffer: this.buffer };
  }

  private ensure(size: number): void {
    if (size <= this.buffer.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(size, this.buffer.length * 2));
    this.buffer.copy(bigger, 0, 0, this.end);
    this.buffer = bigger;
  }
}

/** A pack being filled and then stored, whichever way the storage takes it. */
export interface PackSink {
  /** Adds blob `id`; resolves when `data` may be reused. */
  add(id: string, data: Buffer): Promise<void>;
  /** Where the blobs added so far end. */
  readonly size: number;
  readonly count: number;
  /** After every `add` has resolved, once: stores the pack (atomically) and says what it holds. */
  finish(): Promise<{ id: string; size: number; blobs: PackEntry[] }>;
  /** Gives up on the pack (nothing of it is stored); harmless after `finish` and when repeated. */
  abort(): Promise<void>;
}

/** A pack copied into a buffer and stored whole with `store`; `release` hands the buffer back, once. */
export class BufferedPack implements PackSink {
  private readonly builder: PackBuilder;
  private released = false;

  constructor(
    buffer: Buffer,
    tail: PackTail,
    private readonly store: (id: string, data: Buffer) => Promise<void>,
    private readonly release: () => void,
  ) {
    this.builder = new PackBuilder(buffer, tail);
  }

  add(id: string, data: Buffer): Promise<void> {
    this.builder.add(id, data);
    return Promise.resolve();
  }

  get size(): number {
    return this.builder.size;
  }

  get count(): number {
    return this.builder.count;
  }

  async finish(): Promise<{ id: string; size: number; blobs: PackEntry[] }> {
    try {
      const { id, data, blobs } = this.builder.finish();
      await this.store(id, data);
      return { id, size: data.length, blobs };
    } finally {
      this.releaseOnce();
    }
  }

  abort(): Promise<void> {
    this.releaseOnce();
    return Promise.resolve();
  }

  private releaseOnce(): void {
    if (!this.released) this.release();
    this.released = true;
  }
}

/**
 * A pack written straight into the storage as its blobs come (Storage.openWriter): each blob from the
 * caller's own buffer at its aligned offset, so a backup holds no pack in memory and copies no byte.
 * The gaps are never written (they read as zeros). Same bytes as a PackBuilder given the same blobs.
 */
export class StreamedPack implements PackSink {
  private readonly entries: PackEntry[] = [];
  private readonly writes: Promise<void>[] = [];
  private end = 0;

  constructor(
    private readonly writer: ObjectWriter,
    private readonly tail: PackTail,
  ) {}

  /** Writes `data` as blob `id`; resolves when it is written and `data` may be reused. */
  add(id: string, data: Buffer): Promise<void> {
    const at = alignBlob(this.end);
    this.entries.push([id, at, data.length]);
    this.end = at + data.length;
    const written = this.writer.write(data, at);
    this.writes.push(written.catch(() => {})); // finish() learns of a failure from the writer's commit
    return written;
  }

  get size(): number {
    return this.end;
  }

  get count(): number {
    return this.entries.length;
  }

  /** After every write: the tail, then the pack is stored under its id (atomic: see ObjectWriter). */
  async finish(): Promise<{ id: string; size: number; blobs: PackEntry[] }> {
    await Promise.all(this.writes);
    const blobs = this.entries.splice(0);
    const { id, tail } = this.tail(blobs);
    await this.writer.write(tail, this.end);
    await this.writer.commit(packName(id), this.end + tail.length);
    return { id, size: this.end + tail.length, blobs };
  }

  abort(): Promise<void> {
    return this.writer.abort();
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
