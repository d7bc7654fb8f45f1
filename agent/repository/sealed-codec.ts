import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { MAX_GET_BYTES } from '../storage/storage.js';
import type { CompressionPolicy } from './compression.js';
import { sealedLength, type RepoKeys } from './crypto/index.js';
import type { CryptoPool } from './crypto-pool.js';
import { canonicalJson, isBlobId, type PackHeader } from './format.js';
import type { PackEntry } from './pack.js';
import type { BlobType, ReadAndIdentified, RepoCodec } from './repo-codec.js';
import type { ChunkRead } from '../fs/direct-io.js';
import * as ops from './sealed-ops.js';

/** The magic that ends a format 3 pack (a format 2 pack ends with "NAPACK01"). */
export const SEALED_PACK_MAGIC = Buffer.from('NAPACK03');
const TRAILER = 4 + SEALED_PACK_MAGIC.length;
/** A header of more blobs than any pack holds is not read (a hostile store cannot make us parse without bound). */
const MAX_HEADER_BYTES = 16 * 1024 * 1024;
/** Objects this small are sealed and opened on the calling thread: a round trip to a worker would cost more. */
const IN_THREAD_BYTES = 64 * 1024;

/**
 * Format 3 with keys (docs/FORMAT.md): a blob's id is HMAC-SHA256 of its type and bytes under the
 * repository's id key; every blob and every object is compressed where it pays and sealed (AES-256-GCM,
 * a fresh key per envelope) under a label binding what it claims to be — a blob's type and id, an
 * object's name; a pack ends with its header sealed, and is named by the SHA-256 of that sealed header.
 *
 * The CPU work runs in `pool`'s worker threads, off the caller's event loop (blobs, and objects above
 * IN_THREAD_BYTES); without a pool, in the calling thread. Buffers in shared memory go to the workers
 * as they are; others are copied there, and results into `out`. `close()` stops the pool where the
 * codec owns it (`ownsPool`), not one lent to it (OpenOptions.threads).
 */
export class SealedCodec implements RepoCodec {
  readonly encrypted = true;

  constructor(
    private readonly keys: RepoKeys,
    private readonly pool: CryptoPool | null,
    private readonly ownsPool = true,
  ) {}

  async blobId(type: BlobType, data: Buffer): Promise<string> {
    return this.pool ? this.pool.call('identifyBlob', this.keys.id, type, data) : ops.identifyBlob(this.keys.id, type, data);
  }

  async sealBlob(type: BlobType, id: string, data: Buffer, policy: CompressionPolicy, out?: Buffer): Promise<Buffer> {
    if (!this.pool) return ops.sealBlob(this.keys, type, id, data, policy, out ?? null);
    return landed(await this.pool.call('sealBlob', this.keys, type, id, data, policy, sharedOrNull(out)), out);
  }

  async identifyAndSealBlob(type: BlobType, data: Buffer, policy: CompressionPolicy, out: Buffer): Promise<{ id: string; sealed: Buffer }> {
    if (!this.pool || !(out.buffer instanceof SharedArrayBuffer)) {
      const id = await this.blobId(type, data);
      return { id, sealed: await this.sealBlob(type, id, data, policy, out) };
    }
    const { id, length } = await this.pool.call('identifyAndSealBlob', this.keys, type, data, policy, out);
    return { id, sealed: out.subarray(0, length) };
  }

  async readAndIdentifyBlob(type: BlobType, read: ChunkRead, into: Buffer, policy: CompressionPolicy, out: Buffer | null): Promise<ReadAndIdentified | null> {
    if (!this.pool || !(into.buffer instanceof SharedArrayBuffer) || (out && !(out.buffer instanceof SharedArrayBuffer))) return null;
    const r = await this.pool.call('readAndIdentifyBlob', this.keys, type, read, into, policy, out);
    if (!('id' in r)) return r;
    return { id: r.id, sealed: out && r.length >= 0 ? out.subarray(0, r.length) : null };
  }

  async openBlob(type: BlobType, id: string, stored: Buffer, maxLength: number, out?: Buffer): Promise<Buffer> {
    if (!this.pool) return ops.openBlob(this.keys, type, id, stored, maxLength, out ?? null);
    return landed(await this.pool.call('openBlob', this.keys, type, id, stored, maxLength, sharedOrNull(out)), out);
  }

  async checkBlob(type: BlobType, id: string, stored: Buffer, maxLength: number): Promise<void> {
    if (!this.pool) ops.checkBlob(this.keys, type, id, stored, maxLength);
    else await this.pool.call('checkBlob', this.keys, type, id, stored, maxLength);
  }

  storedLength(n: number): number {
    return sealedLength(n + 1); // the mode byte, when nothing compresses
  }

  async sealObject(name: string, plaintext: Buffer): Promise<Buffer> {
    if (!this.pool || plaintext.length <= IN_THREAD_BYTES) return ops.sealObject(this.keys, name, plaintext);
    return landed(await this.pool.call('sealObject', this.keys, name, plaintext), undefined);
  }

  async openObject(name: string, stored: Buffer): Promise<Buffer> {
    if (!this.pool || stored.length <= IN_THREAD_BYTES) return ops.openObject(this.keys, name, stored, MAX_GET_BYTES);
    return landed(await this.pool.call('openObject', this.keys, name, stored, MAX_GET_BYTES), undefined);
  }

  packTail(blobs: PackEntry[]): { id: string; tail: Buffer } {
    const header: PackHeader = { version: 2, blobs };
    const { id, sealed } = ops.sealPackHeader(this.keys, Buffer.from(canonicalJson(header)));
    const tail = Buffer.allocUnsafe(sealed.length + TRAILER);
    sealed.copy(tail, 0);
    tail.writeUInt32LE(sealed.length, sealed.length);
    SEALED_PACK_MAGIC.copy(tail, sealed.length + 4);
    return { id, tail };
  }

  readPackTail(id: string, end: Buffer): PackEntry[] {
    const bad = (why: string) => new AdminError(ErrorCodes.CORRUPT, why);
    if (end.length < TRAILER || !end.subarray(end.length - SEALED_PACK_MAGIC.length).equals(SEALED_PACK_MAGIC)) throw bad('not a format 3 pack (bad magic)');
    const length = end.readUInt32LE(end.length - TRAILER);
    if (length > end.length - TRAILER || length > MAX_HEADER_BYTES) throw bad('its header length is out of range');
    const sealed = end.subarray(end.length - TRAILER - length, end.length - TRAILER);
    if (ops.sealPackHeaderId(sealed) !== id) throw bad('its header does not match its name');
    let header: PackHeader;
    try {
      header = JSON.parse(ops.openPackHeader(this.keys, sealed).toString('utf8')) as PackHeader;
    } catch (err) {
      throw err instanceof AdminError ? bad(`its header does not open: ${err.message}`) : bad('its header is not JSON');
    }
    if (header?.version !== 2 || !Array.isArray(header.blobs)) throw bad('its header is of an unknown version');
    for (const entry of header.blobs) {
      const [blob, offset, length] = Array.isArray(entry) ? entry : [];
      if (!isBlobId(blob) || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset! < 0 || length! < 0) throw bad('its header lists a malformed blob');
    }
    return header.blobs;
  }

  tailLength(last12: Buffer): number {
    return last12.length >= TRAILER ? last12.readUInt32LE(last12.length - TRAILER) + TRAILER : 0;
  }

  warmUp(): void {
    this.pool?.start();
  }

  close(): Promise<void> {
    return (this.ownsPool ? this.pool?.close() : undefined) ?? Promise.resolve();
  }
}

/** `out` when a worker can write into it where it is (shared memory), else null: the result comes back moved. */
function sharedOrNull(out: Buffer | undefined): Buffer | null {
  return out !== undefined && out.buffer instanceof SharedArrayBuffer ? out : null;
}

/** A worker's answer as a Buffer: written into `out` (its length came back), or moved back (copied into `out` if one was given). */
function landed(result: number | Uint8Array, out: Buffer | undefined): Buffer {
  if (typeof result === 'number') return out!.subarray(0, result);
  const bytes = Buffer.from(result.buffer, result.byteOffset, result.byteLength);
  if (!out) return bytes;
  if (out.length < bytes.length) throw new AdminError(ErrorCodes.INTERNAL, `an output buffer of ${out.length} bytes cannot hold ${bytes.length}`);
  bytes.copy(out);
  return out.subarray(0, bytes.length);
}
