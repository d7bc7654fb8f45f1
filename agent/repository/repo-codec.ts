import type { ChunkRead } from '../fs/direct-io.js';
import type { PackEntry } from './pack.js';

import type { CompressionPolicy } from './compression.js';
import type { BlobType } from './crypto/index.js';

export type { CompressionPolicy } from './compression.js';
/** What a blob holds: file data (a chunk) or a tree (a backup's file list); a sealed blob is bound to it. */
export type { BlobType } from './crypto/index.js';

/** readAndIdentifyBlob's answer: the id and, where asked for, the stored bytes (a view of `out`); or why there is none. */
export type ReadAndIdentified = { id: string; sealed: Buffer | null } | { got: number } | { refused: true };

/**
 * What a repository's format does with bytes: how a blob is named and stored, how every other object is
 * stored, how a pack ends. Two implementations: the plain one (format 2, and format 3 created with
 * `--insecure-no-encryption`: stored as given, blobs named by SHA-256) and the sealed one (format 3:
 * keyed ids, every blob and object compressed where it pays and sealed with AEAD). Every stored byte of a
 * repository passes through one (Repository holds it); nothing else turns plaintext into stored bytes.
 *
 * Contract, for every implementation:
 * - `blobId` is a function of (type, data) only, for the life of the repository (dedup rests on it).
 * - `openBlob(type, id, sealBlob(type, id, data))` gives `data` back; any other stored bytes (another id,
 *   another type, a flipped bit, a truncation) are refused with AdminError CORRUPT, never returned.
 *   Likewise `openObject(name, sealObject(name, x))` is `x`, and an object stored under another name is
 *   refused.
 * - `out`, where given, is a buffer the result may be written into (page-aligned, as long as
 *   `storedLength` says): the result is then a view of it. Without it, or where the codec needs no copy,
 *   the result may be a view of the input.
 * - Calls may run at once, any number; `close()` once, last.
 */
export interface RepoCodec {
  /** True when blobs and objects are sealed (format 3 with keys). */
  readonly encrypted: boolean;
  /** A blob's id: 64 lowercase hex. */
  blobId(type: BlobType, data: Buffer): Promise<string>;
  /** The bytes stored for blob `id` (whose id `blobId` gave). */
  sealBlob(type: BlobType, id: string, data: Buffer, policy: CompressionPolicy, out?: Buffer): Promise<Buffer>;
  /**
   * blobId and sealBlob in one step, where a codec does both off the caller's thread (one round trip
   * instead of two): the id, and the stored bytes written into `out` (as long as `storedLength` says).
   * The caller that finds the id already stored drops them (a seal spent for nothing).
   */
  identifyAndSealBlob?(type: BlobType, data: Buffer, policy: CompressionPolicy, out: Buffer): Promise<{ id: string; sealed: Buffer }>;
  /**
   * Where a codec has threads of its own: reads the piece `read` names into `into` (shared memory) on
   * one of them, then names it and, given `out`, seals it there (as identifyAndSealBlob). The read
   * leaves the caller's libuv pool, which the host's own I/O queues in. Answers `got` where the file
   * ended first, `refused` where the filesystem refused direct I/O (nothing named either way), and
   * null where the codec cannot (then the caller reads the piece itself).
   */
  readAndIdentifyBlob?(type: BlobType, read: ChunkRead, into: Buffer, policy: CompressionPolicy, out: Buffer | null): Promise<ReadAndIdentified | null>;
  /** The blob's plaintext from its stored bytes, checked against `type` and `id`. `maxLength`: the most it may inflate to. */
  openBlob(type: BlobType, id: string, stored: Buffer, maxLength: number, out?: Buffer): Promise<Buffer>;
  /**
   * Refuses (CORRUPT) stored bytes that are not the ones written as this blob, without giving the
   * plaintext: for a caller that moves them as they are (a copy) and only needs to know they are whole.
   * Takes nothing `openBlob` refuses for a store's doing (a flipped bit, a truncation, a blob under
   * another id or type); sealed, it checks authenticity only, not the plaintext against the id (what
   * only the key's holder could get wrong, refused where the plaintext is used).
   */
  checkBlob(type: BlobType, id: string, stored: Buffer, maxLength: number): Promise<void>;
  /** The most bytes `sealBlob` stores for `n` bytes of plaintext (buffers are sized by it). */
  storedLength(n: number): number;
  /** The bytes stored under `name` for `plaintext`. */
  sealObject(name: string, plaintext: Buffer): Promise<Buffer>;
  /** An object's plaintext from the bytes stored under `name`. */
  openObject(name: string, stored: Buffer): Promise<Buffer>;
  /** What ends a pack holding `blobs` (header, its length, the magic), and the pack's id. */
  packTail(blobs: PackEntry[]): { id: string; tail: Buffer };
  /** The blobs a pack's header lists, from the pack's last bytes (at least the whole tail); checked against `id`. Throws CORRUPT. */
  readPackTail(id: string, end: Buffer): PackEntry[];
  /** The tail's length, from a pack's last 12 bytes (to read a longer tail again). */
  tailLength(last12: Buffer): number;
  /**
   * Starts the threads the codec works on now, where it has any, so that the first calls of a long job
   * (a restore, a copy, a backup) do not wait for them: a thread starts on its first call otherwise, a
   * new isolate loading its modules (80-100 ms here, measured in a restore from S3, where it held the
   * first pack back). Any number of times; nothing where there is nothing to start.
   */
  warmUp(): void;
  close(): Promise<void>;
}
