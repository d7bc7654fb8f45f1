import { createHash } from 'node:crypto';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { compressPlaintext, decompressPlaintext, type CompressionPolicy } from './compression.js';
import { blobId, blobLabel, objectLabel, open, packHeaderLabel, seal, type BlobType, type RepoKeys } from './crypto/index.js';

/**
 * The work of format 3 on bytes, as pure synchronous functions of the keys and the input: run by the
 * codec's worker threads (crypto-worker.ts) for blobs and large objects, in the calling thread for
 * small ones (sealed-codec.ts). Every input is read, never kept; `out`, where given, receives the result
 * (a view of it is returned) and may overlap the input, which is read whole first.
 */

/** Objects are sealed in chunks of 64 KiB: a log segment is opened while it streams in, a chunk at a time. */
export const OBJECT_CHUNK_SHIFT = 16;

function place(result: Buffer, out: Uint8Array | null): Buffer {
  if (!out) return result;
  if (out.length < result.length) throw new AdminError(ErrorCodes.INTERNAL, `an output buffer of ${out.length} bytes cannot hold ${result.length}`);
  const view = Buffer.from(out.buffer, out.byteOffset, result.length);
  result.copy(view);
  return view;
}

export function identifyBlob(idKey: Uint8Array, type: BlobType, data: Uint8Array): string {
  return blobId(Buffer.from(idKey), type, [data]);
}

/** A blob compressed where it pays and sealed under its type and id. */
export function sealBlob(keys: RepoKeys, type: BlobType, id: string, data: Uint8Array, policy: CompressionPolicy, out: Uint8Array | null): Buffer {
  const { pieces } = compressPlaintext(Buffer.from(data.buffer, data.byteOffset, data.byteLength), policy);
  return place(seal(Buffer.from(keys.blob), blobLabel(type, id), pieces), out);
}

/**
 * A blob's plaintext, once its envelope opens under its type and id, it inflates to at most
 * `maxLength`, and its content id is `id` again (a writer's bug, or a key holder's forgery, is caught
 * here, not by whoever reads the database next).
 */
export function openBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number, out: Uint8Array | null): Buffer {
  const plaintext = decompressPlaintext(open(Buffer.from(keys.blob), blobLabel(type, id), stored), maxLength);
  if (blobId(Buffer.from(keys.id), type, [plaintext]) !== id) throw new AdminError(ErrorCodes.CORRUPT, `blob ${id} opens to bytes of another id`);
  return place(plaintext, out);
}

export function sealObject(keys: RepoKeys, name: string, plaintext: Uint8Array): Buffer {
  const { pieces } = compressPlaintext(Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength), 'try');
  return seal(Buffer.from(keys.object), objectLabel(name), pieces, OBJECT_CHUNK_SHIFT);
}

export function openObject(keys: RepoKeys, name: string, stored: Uint8Array, maxLength: number): Buffer {
  return decompressPlaintext(open(Buffer.from(keys.object), objectLabel(name), stored), maxLength);
}

/** A pack's header sealed, and the pack's id: the SHA-256 of the sealed header (sealed-codec.ts). */
export function sealPackHeader(keys: RepoKeys, header: Uint8Array): { id: string; sealed: Buffer } {
  const sealed = seal(Buffer.from(keys.object), packHeaderLabel(), [header], OBJECT_CHUNK_SHIFT);
  return { id: sealPackHeaderId(sealed), sealed };
}

/** A pack's id from its sealed header: its SHA-256 (a header moved to another pack's name is refused). */
export function sealPackHeaderId(sealed: Uint8Array): string {
  return createHash('sha256').update(sealed).digest('hex');
}

export function openPackHeader(keys: RepoKeys, sealed: Uint8Array): Buffer {
  return open(Buffer.from(keys.object), packHeaderLabel(), sealed);
}
