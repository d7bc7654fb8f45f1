import crypto from 'node:crypto';
import { AdminError, ErrorCodes } from '../../../shared/errors.js';
import { SealError } from './seal-error.js';
import { releaseMemory } from '../../worker/release-memory.js';

/**
 * The byte layout of a sealed envelope, shared by seal/open and the streaming reader and writer:
 *
 *   "NASEAL03" (8) | chunkShift (1) | salt (32) | chunk_0 | ... | chunk_n
 *   chunk_i = AES-256-GCM(k, nonce_i, aad, plaintext_i) || tag (16)
 *   k       = HMAC-SHA256(purposeKey, salt)               a key of its own for every envelope
 *   nonce_i = i (11 bytes, big-endian) || (i == n ? 0x01 : 0x00)
 *   aad     = the 41 header bytes || UTF-8(label)
 *
 * Every plaintext_i is exactly 2^chunkShift bytes except the last, which holds 1..2^chunkShift bytes,
 * or 0 when the whole plaintext is empty (then it is the only chunk). That pins one encoding per
 * plaintext, so the sealed length is a function of the plaintext length alone.
 */

export const SEAL_MAGIC: Buffer = Buffer.from('NASEAL03', 'latin1');
export const SEAL_HEADER_BYTES = 41;
export const TAG_BYTES = 16;
export const SALT_BYTES = 32;
export const KEY_BYTES = 32;
export const MIN_CHUNK_SHIFT = 12;
export const MAX_CHUNK_SHIFT = 30;
/** One chunk for anything up to 1 GiB: a blob is sealed and opened in one piece. */
export const DEFAULT_CHUNK_SHIFT = 30;

const NONCE_BYTES = 12;
/** Chunk indexes are written in the low 6 bytes of the 11-byte counter: 2^48 chunks is beyond any object. */
const MAX_CHUNK_INDEX = 2 ** 48 - 1;
/**
 * GCM is fed in slices of this size rather than a whole chunk at once: one multi-megabyte update runs
 * several times slower here (the ciphertext leaves the cache before GHASH reads it back).
 */
export const UPDATE_SLICE = 64 * 1024;

export function isChunkShift(shift: unknown): shift is number {
  return Number.isInteger(shift) && (shift as number) >= MIN_CHUNK_SHIFT && (shift as number) <= MAX_CHUNK_SHIFT;
}

/** A caller's mistake, not damaged data: INTERNAL. */
export function checkChunkShift(shift: number): void {
  if (!isChunkShift(shift)) throw new AdminError(ErrorCodes.INTERNAL, `chunk shift ${String(shift)} is not an integer in ${MIN_CHUNK_SHIFT}..${MAX_CHUNK_SHIFT}`);
}

export function checkKey(key: Buffer, what: string): void {
  if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) throw new AdminError(ErrorCodes.INTERNAL, `${what} must be a ${KEY_BYTES}-byte Buffer`);
}

export function checkLabel(label: string): void {
  if (typeof label !== 'string' || label.length === 0) throw new AdminError(ErrorCodes.INTERNAL, 'an envelope label must be a non-empty string');
}

export function buildHeader(chunkShift: number, salt: Buffer): Buffer {
  const header = Buffer.allocUnsafe(SEAL_HEADER_BYTES);
  SEAL_MAGIC.copy(header, 0);
  header[SEAL_MAGIC.length] = chunkShift;
  salt.copy(header, SEAL_MAGIC.length + 1);
  return header;
}

/**
 * Checks a complete 41-byte header and returns its chunk shift. `maxChunkShift` lets a reader that
 * expects small chunks refuse a header that would make it buffer up to 1 GiB before the first tag.
 */
export function parseHeader(header: Buffer, label: string, maxChunkShift: number): number {
  checkMagic(header, label);
  const shift = header[SEAL_MAGIC.length]!;
  if (!isChunkShift(shift) || shift > maxChunkShift) {
    throw new SealError('format', `sealed envelope for "${label}" declares chunk shift ${shift}, outside ${MIN_CHUNK_SHIFT}..${maxChunkShift}`);
  }
  return shift;
}

/** Refuses bytes that do not begin like an envelope; a prefix of the magic passes (more may come). */
export function checkMagic(bytes: Buffer, label: string): void {
  const n = Math.min(bytes.length, SEAL_MAGIC.length);
  if (!bytes.subarray(0, n).equals(SEAL_MAGIC.subarray(0, n))) throw new SealError('format', `not a sealed envelope (bad magic) for "${label}"`);
}

/** The envelope's own AES-256 key: a fresh random salt per envelope makes it fresh too. */
export function envelopeKey(purposeKey: Buffer, salt: Uint8Array): Buffer {
  return crypto.createHmac('sha256', purposeKey).update(salt).digest();
}

export function chunkNonce(index: number, last: boolean): Buffer {
  if (!Number.isInteger(index) || index < 0 || index > MAX_CHUNK_INDEX) throw new AdminError(ErrorCodes.INTERNAL, `chunk index ${index} out of range`);
  const nonce = Buffer.alloc(NONCE_BYTES);
  nonce.writeUIntBE(index, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

export function associatedData(header: Buffer, label: string): Buffer {
  return Buffer.concat([header, Buffer.from(label, 'utf8')]);
}

/**
 * Where a piece of GCM output is copied into a buffer, its destination starts this many bytes into an
 * aligned stretch wherever it can. Why: node:crypto gives every update's output in a fresh buffer
 * (malloc'd, 16-byte aligned), and a copy into shared memory (the lanes' buffers: direct-io.ts) is
 * V8's relaxed memmove, which goes a word at a time only when source and destination share their
 * alignment and a byte at a time otherwise; an envelope's 41-byte header and a blob's mode byte put
 * every destination off by one. Measured (Node 20, sealing 1 MiB blobs): the byte-wise copy cost about
 * as much CPU as AES-GCM itself.
 */
const OUTPUT_ALIGN = 64;

/**
 * Runs `pieces` through `update` (a GCM cipher's or decipher's) and copies each output into `out` at
 * `at` onwards; returns where the output ended. Updates are at most UPDATE_SLICE long and cut so that
 * each destination after the first few bytes of a piece starts on an OUTPUT_ALIGN boundary of the
 * memory (`out`'s byteOffset counts: a shared buffer's memory is page-aligned). GCM's output is as long
 * as its input, byte for byte, so the cut changes nothing of what is written.
 */
export function updateInto(update: (data: Uint8Array) => Buffer, pieces: readonly Uint8Array[], out: Uint8Array, at: number): number {
  for (const piece of pieces) {
    for (let o = 0; o < piece.length; ) {
      const where = out.byteOffset + at;
      const misaligned = where % OUTPUT_ALIGN;
      const n = Math.min(piece.length - o, misaligned !== 0 ? OUTPUT_ALIGN - misaligned : UPDATE_SLICE - (where % UPDATE_SLICE));
      const b = update(piece.subarray(o, o + n));
      out.set(b, at);
      at += b.length;
      o += n;
      releaseMemory(b); // at once, for the next update to reuse while it is still in the cache
    }
  }
  return at;
}

/** Encrypts one chunk into `out` at `at` (ciphertext, then its tag); returns where it ended. See updateInto. */
export function encryptChunkInto(key: Buffer, aad: Buffer, index: number, last: boolean, pieces: readonly Uint8Array[], out: Uint8Array, at: number): number {
  const cipher = crypto.createCipheriv('aes-256-gcm', key, chunkNonce(index, last), { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  at = updateInto((d) => cipher.update(d), pieces, out, at);
  cipher.final(); // GCM emits nothing here
  const tag = cipher.getAuthTag();
  out.set(tag, at);
  return at + tag.length;
}

/** Encrypts one chunk given as pieces (subarrays, in order); returns ciphertext pieces then the tag. */
export function encryptChunk(key: Buffer, aad: Buffer, index: number, last: boolean, pieces: readonly Uint8Array[]): Buffer[] {
  const cipher = crypto.createCipheriv('aes-256-gcm', key, chunkNonce(index, last), { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const out: Buffer[] = [];
  for (const piece of pieces) {
    for (let o = 0; o < piece.length; o += UPDATE_SLICE) out.push(cipher.update(piece.subarray(o, o + UPDATE_SLICE)));
  }
  cipher.final(); // GCM emits nothing here
  out.push(cipher.getAuthTag());
  return out;
}

/** A decipher for one chunk, its tag set: its `final()` throws when the tag does not verify. */
export function chunkDecipher(key: Buffer, aad: Buffer, index: number, last: boolean, tag: Uint8Array): crypto.DecipherGCM {
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, chunkNonce(index, last), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return decipher;
}

/**
 * Decrypts one chunk (ciphertext pieces in order, then its tag): its plaintext as pieces (views of
 * GCM's output, in order), or null when the tag does not verify. Nothing decrypted leaves this function
 * before final() verified the tag.
 */
export function decryptChunk(key: Buffer, aad: Buffer, index: number, last: boolean, pieces: readonly Uint8Array[], tag: Buffer): Buffer[] | null {
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, chunkNonce(index, last), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  const out: Buffer[] = [];
  for (const piece of pieces) {
    for (let o = 0; o < piece.length; o += UPDATE_SLICE) {
      const b = decipher.update(piece.subarray(o, o + UPDATE_SLICE));
      if (b.length > 0) out.push(b);
    }
  }
  try {
    decipher.final();
  } catch {
    return null;
  }
  return out;
}

export function authError(label: string, index: number): SealError {
  return new SealError('auth', `sealed envelope for "${label}" does not authenticate at chunk ${index} (wrong key or label, or damaged)`);
}

export function truncatedError(label: string, where: string): SealError {
  return new SealError('truncated', `sealed envelope for "${label}" is truncated (${where})`);
}
