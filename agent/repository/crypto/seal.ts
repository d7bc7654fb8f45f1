import crypto from 'node:crypto';
import { AdminError, ErrorCodes } from '../../../shared/errors.js';
import { EnvelopeReader } from './envelope-reader.js';
import {
  DEFAULT_CHUNK_SHIFT,
  MAX_CHUNK_SHIFT,
  SALT_BYTES,
  SEAL_HEADER_BYTES,
  TAG_BYTES,
  associatedData,
  authError,
  buildHeader,
  checkChunkShift,
  checkKey,
  checkLabel,
  chunkDecipher,
  encryptChunkInto,
  envelopeKey,
  parseHeader,
  updateInto,
} from './envelope-format.js';
import { SealError } from './seal-error.js';

/**
 * Seals the concatenation of `pieces` as one envelope under a fresh random salt (hence a fresh
 * AES-256-GCM key): see envelope-format.ts for the layout. `chunkShift` defaults to 30, one chunk for
 * anything up to 1 GiB. The pieces are read, never kept or modified.
 */
export function seal(purposeKey: Buffer, label: string, pieces: readonly Uint8Array[], chunkShift: number = DEFAULT_CHUNK_SHIFT): Buffer {
  const out = Buffer.allocUnsafe(sealedLength(totalLength(pieces), chunkShift));
  sealInto(purposeKey, label, pieces, out, 0, chunkShift);
  return out;
}

/**
 * seal() into the caller's buffer at `offset` (a pack buffer, reused): it must have room for
 * sealedLength(n, chunkShift) bytes and must not overlap the pieces; returns that length. Saves seal()'s allocation of a fresh buffer,
 * which costs as much as the encryption itself for large objects (its pages are new to the process).
 */
export function sealInto(purposeKey: Buffer, label: string, pieces: readonly Uint8Array[], out: Uint8Array, offset: number, chunkShift: number = DEFAULT_CHUNK_SHIFT): number {
  checkKey(purposeKey, 'a purpose key');
  checkLabel(label);
  checkChunkShift(chunkShift);
  const total = totalLength(pieces);
  const length = sealedLength(total, chunkShift);
  checkRoom(out, offset, length);
  const salt = crypto.randomBytes(SALT_BYTES);
  const header = buildHeader(chunkShift, salt);
  out.set(header, offset);
  const key = envelopeKey(purposeKey, salt);
  const aad = associatedData(header, label);
  const chunkBytes = 2 ** chunkShift;
  let at = offset + SEAL_HEADER_BYTES;
  let piece = 0;
  let pieceOffset = 0;
  let left = total;
  for (let index = 0; ; index++) {
    const n = Math.min(chunkBytes, left);
    left -= n;
    // The pieces of the plaintext that make this chunk, as views.
    const parts: Uint8Array[] = [];
    for (let need = n; need > 0; ) {
      const p = pieces[piece]!;
      const take = Math.min(need, p.length - pieceOffset);
      if (take > 0) parts.push(p.subarray(pieceOffset, pieceOffset + take));
      need -= take;
      pieceOffset += take;
      if (pieceOffset === p.length) {
        piece++;
        pieceOffset = 0;
      }
    }
    at = encryptChunkInto(key, aad, index, left === 0, parts, out, at);
    if (left === 0) break;
  }
  return length;
}

/**
 * The sealed size of an n-byte plaintext: the header, the plaintext, and a tag per chunk (an empty
 * plaintext is one empty chunk; otherwise ceil(n / 2^chunkShift) chunks).
 */
export function sealedLength(n: number, chunkShift: number = DEFAULT_CHUNK_SHIFT): number {
  checkChunkShift(chunkShift);
  if (!Number.isSafeInteger(n) || n < 0) throw new AdminError(ErrorCodes.INTERNAL, `plaintext length ${n} is not a non-negative integer`);
  const chunks = n === 0 ? 1 : Math.ceil(n / 2 ** chunkShift);
  return SEAL_HEADER_BYTES + n + chunks * TAG_BYTES;
}

/**
 * Opens a whole envelope: the plaintext, or SealError (format, auth, truncated). Every chunk's tag is
 * verified before any byte is returned; there is no partial result.
 */
export function open(purposeKey: Buffer, label: string, envelope: Uint8Array): Buffer {
  const reader = new EnvelopeReader(purposeKey, label);
  const pieces = reader.push(envelope);
  pieces.push(...reader.end());
  return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
}

/**
 * open() into the caller's buffer at `offset`; returns the plaintext's length. An envelope whose
 * plaintext (openedLength) would not fit in `out` is refused (SealError 'format') before anything is
 * decrypted. On SealError, `out` may already hold the plaintext of chunks that did verify, never a
 * byte of one that did not: treat the whole range as garbage.
 */
export function openInto(purposeKey: Buffer, label: string, envelope: Uint8Array, out: Uint8Array, offset: number): number {
  const reader = new EnvelopeReader(purposeKey, label);
  if (!Number.isInteger(offset) || offset < 0 || offset > out.length) throw new AdminError(ErrorCodes.INTERNAL, `offset ${offset} outside a ${out.length}-byte buffer`);
  const room = out.length - offset;
  const holds = openedLength(envelope, label);
  if (holds > room) throw new SealError('format', `sealed envelope for "${label}" holds ${holds} bytes, more than the ${room} expected`);
  let at = offset;
  const put = (pieces: Buffer[]) => {
    for (const b of pieces) {
      out.set(b, at);
      at += b.length;
    }
  };
  put(reader.push(envelope));
  put(reader.end());
  return at - offset;
}

/**
 * Opens an envelope of one chunk whose plaintext begins with the byte `first`, writing the plaintext
 * after that byte straight into `out` at 0 (no copy through a buffer of ours); returns its length.
 * Null, with nothing written, when the envelope is not of that shape (several chunks, another first
 * byte, too short to hold one byte, a bad header): the caller then opens it with openInto, which says
 * what is wrong. A tag that does not verify throws SealError 'auth' (as openInto would): then the
 * range of `out` the plaintext would take holds bytes that are NOT authentic — the caller must treat
 * it as garbage and never use it. `out` may overlap `envelope` where it starts at or before it: every
 * slice of ciphertext is decrypted before its output lands, and the output stays behind the input.
 */
export function openAfterByteInto(purposeKey: Buffer, label: string, envelope: Uint8Array, first: number, out: Uint8Array): number | null {
  checkKey(purposeKey, 'a purpose key');
  checkLabel(label);
  const body = envelope.length - SEAL_HEADER_BYTES - TAG_BYTES;
  if (body < 1) return null;
  const header = Buffer.from(envelope.buffer, envelope.byteOffset, SEAL_HEADER_BYTES);
  let shift: number;
  try {
    shift = parseHeader(header, label, MAX_CHUNK_SHIFT);
  } catch {
    return null;
  }
  if (body > 2 ** shift) return null;
  const salt = header.subarray(SEAL_HEADER_BYTES - SALT_BYTES);
  // Copied: the header and tag are read after `out` may have been written over the envelope's start.
  const aad = associatedData(Buffer.from(header), label);
  const tag = Buffer.from(envelope.subarray(envelope.length - TAG_BYTES));
  const key = envelopeKey(purposeKey, salt);
  const ciphertext = envelope.subarray(SEAL_HEADER_BYTES, SEAL_HEADER_BYTES + body);
  const decipher = chunkDecipher(key, aad, 0, true, tag);
  if (decipher.update(ciphertext.subarray(0, 1))[0] !== first) return null;
  if (out.length < body - 1) throw new AdminError(ErrorCodes.INTERNAL, `an output buffer of ${out.length} bytes cannot hold ${body - 1}`);
  const n = updateInto((d) => decipher.update(d), [ciphertext.subarray(1)], out, 0);
  try {
    decipher.final();
  } catch {
    throw authError(label, 0);
  }
  return n;
}

/**
 * The plaintext length a well-formed envelope of these bytes holds (from its length and its header's
 * chunk shift; nothing is decrypted, so this is a bound to check, not a fact). SealError 'format' for a
 * bad header; 0 for bytes too short to hold a chunk (opening them will say why).
 */
export function openedLength(envelope: Uint8Array, label = 'envelope'): number {
  if (envelope.length < SEAL_HEADER_BYTES) return 0;
  const shift = parseHeader(Buffer.from(envelope.buffer, envelope.byteOffset, SEAL_HEADER_BYTES), label, MAX_CHUNK_SHIFT);
  const body = envelope.length - SEAL_HEADER_BYTES;
  const chunks = Math.max(1, Math.ceil(body / (2 ** shift + TAG_BYTES)));
  return Math.max(0, body - chunks * TAG_BYTES);
}

function totalLength(pieces: readonly Uint8Array[]): number {
  let total = 0;
  for (const p of pieces) total += p.length;
  return total;
}

function checkRoom(out: Uint8Array, offset: number, length: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + length > out.length) {
    throw new AdminError(ErrorCodes.INTERNAL, `no room for ${length} bytes at offset ${offset} of a ${out.length}-byte buffer`);
  }
}
