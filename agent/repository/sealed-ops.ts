import { createHash } from 'node:crypto';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { Compression, compressPlaintext, decompressPlaintext, type CompressionPolicy } from './compression.js';
import { blobId, blobLabel, objectLabel, open, openAfterByteInto, openInto, openedLength, packHeaderLabel, seal, sealInto, type BlobType, type RepoKeys } from './crypto/index.js';

/**
 * The work of format 3 on bytes, as pure synchronous functions of the keys and the input: run by the
 * codec's worker threads (crypto-worker.ts) for blobs and large objects, in the calling thread for
 * small ones (sealed-codec.ts). Every input is read, never kept; `out`, where given, receives the result
 * (a view of it is returned) and may overlap the input, which is read whole first.
 */

/** Objects are sealed in chunks of 64 KiB: a log segment is opened while it streams in, a chunk at a time. */
export const OBJECT_CHUNK_SHIFT = 16;

/**
 * This thread's buffer for opening blobs into: reused blob after blob (a fresh multi-megabyte buffer a
 * blob costs as much as decrypting it: its pages are new to the process). Ops are synchronous, so one
 * op at a time holds it.
 */
let scratch = Buffer.alloc(0);

function scratchFor(n: number): Buffer {
  if (scratch.length < n) scratch = Buffer.allocUnsafeSlow(Math.max(n, 2 * 1024 * 1024));
  return scratch;
}

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
  if (!out) return seal(Buffer.from(keys.blob), blobLabel(type, id), pieces);
  const n = sealInto(Buffer.from(keys.blob), blobLabel(type, id), pieces, out, 0);
  return Buffer.from(out.buffer, out.byteOffset, n);
}

/**
 * identifyBlob then sealBlob, in one call: a worker's round trip a blob instead of two. `out` is
 * required (the sealed bytes are written there); returns the id and the sealed length.
 */
export function identifyAndSealBlob(keys: RepoKeys, type: BlobType, data: Uint8Array, policy: CompressionPolicy, out: Uint8Array): { id: string; length: number } {
  const id = identifyBlob(keys.id, type, data);
  return { id, length: sealBlob(keys, type, id, data, policy, out).length };
}

/**
 * A blob's plaintext, once its envelope opens under its type and id, it inflates to at most
 * `maxLength`, and its content id is `id` again (a writer's bug, or a key holder's forgery, is caught
 * here, not by whoever reads the database next). `out` may overlap `stored` where it starts at or
 * before it; after a throw, whatever `out` holds is garbage (it may hold bytes that did not verify).
 */
export function openBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number, out: Uint8Array | null): Buffer {
  const label = blobLabel(type, id);
  const bound = openedLength(stored, label);
  if (bound > maxLength + 1) throw new AdminError(ErrorCodes.CORRUPT, `blob ${id} holds ${bound} bytes, more than ${maxLength}`);
  if (out) {
    // A blob stored uncompressed (every table's chunk) opens straight into `out`, no copy through the
    // scratch; its id is then checked there. On any refusal the caller drops `out`'s contents.
    const n = openAfterByteInto(Buffer.from(keys.blob), label, stored, Compression.none, out);
    if (n !== null) {
      const plaintext = Buffer.from(out.buffer, out.byteOffset, n);
      if (blobId(Buffer.from(keys.id), type, [plaintext]) !== id) throw new AdminError(ErrorCodes.CORRUPT, `blob ${id} opens to bytes of another id`);
      return plaintext;
    }
  }
  // Opened into this thread's scratch (`out` may overlap `stored`: a restore reads and writes one buffer).
  const plaintext = openInScratch(keys, label, type, id, stored, bound, maxLength);
  // Never hand out a view of the scratch: the next op reuses it.
  return out ? place(plaintext, out) : Buffer.from(plaintext);
}

/**
 * Whether the stored bytes are the ones sealed as this blob: every tag verifies under its type and id
 * (the associated data binds both), and it fits `maxLength`; the length it opens to. For bytes only
 * moved between repositories of the same keys (a copy): a flipped bit, a truncation, a blob under
 * another's id or type each fail here. Its plaintext is neither decompressed nor hashed against the id:
 * only the key's holder seals bytes that verify, and the id is checked where the plaintext is used (a
 * restore, `verify --read-data`). The HMAC over every byte was the copy's largest CPU cost.
 */
export function checkBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number): number {
  const label = blobLabel(type, id);
  const bound = openedLength(stored, label);
  if (bound > maxLength + 1) throw new AdminError(ErrorCodes.CORRUPT, `blob ${id} holds ${bound} bytes, more than ${maxLength}`);
  return openInto(Buffer.from(keys.blob), label, stored, scratchFor(bound), 0);
}

/** A blob's plaintext, checked, as a view of this thread's scratch (or of what decompression made). */
function openInScratch(keys: RepoKeys, label: string, type: BlobType, id: string, stored: Uint8Array, bound: number, maxLength: number): Buffer {
  const opened = scratchFor(bound).subarray(0, openInto(Buffer.from(keys.blob), label, stored, scratchFor(bound), 0));
  const plaintext = decompressPlaintext(opened, maxLength);
  if (blobId(Buffer.from(keys.id), type, [plaintext]) !== id) throw new AdminError(ErrorCodes.CORRUPT, `blob ${id} opens to bytes of another id`);
  return plaintext;
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
