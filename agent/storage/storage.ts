import type { Readable } from 'node:stream';
import { AdminError, ErrorCodes, type ErrorCode } from '../../shared/errors.js';

/**
 * Where remote backups keep their objects: the one interface every backend (dir-storage, s3-storage,
 * memory-storage) and every wrapper (retry-storage, logging-storage, fault-storage) implements.
 * `openStorage` (open-storage.ts) builds a backend from a URL and stacks the wrappers, in one place.
 *
 * The contract every implementation gives (test/support/storage-conformance.ts checks it, for each):
 *
 * Names. An object's name is a `/`-separated relative path whose segments use only `[a-z0-9._-]`: no
 * empty segment, no `.` or `..` segment, no leading or trailing `/` (see `checkName`). Every method
 * rejects any other name with a `permanent` StorageError (code INVALID_ARGUMENT) before touching the
 * storage. A name must not also be the directory of another name (`a` and `a/b`): a filesystem cannot
 * hold both, so callers never create both.
 *
 * Atomic, idempotent writes. After `put`/`putStream` resolves, the object is durable and complete. A
 * reader sees either the whole new object or what was there before, never a partial one, even if the
 * writer crashes or the call fails. Putting a name again replaces the object; putting the same content
 * again is harmless, which content-addressed callers rely on (a retried write whose first answer was lost
 * is such a second put).
 *
 * Read-after-write consistency. Once a `put` or `delete` has resolved, every later `get`, `getRange`,
 * `stat` and `list` (by any caller of the same storage) sees its effect. A storage that cannot give this
 * must not implement this interface. Objects put or deleted while a `list` is running may or may not
 * appear in it.
 *
 * Errors. Every failure is a StorageError (never a raw SDK or system error) whose `kind` tells the caller
 * what to do: `not-found` (the object does not exist), `transient` (5xx, throttling, a reset connection,
 * a timeout: retrying may succeed, and only these are retried), `permanent` (anything else: access
 * denied, bad credentials, no such bucket, an invalid name or range). Messages name the backend and the
 * object, and never contain credentials, signatures or tokens.
 *
 * No call waits forever: a backend that talks to a server bounds every attempt with a timeout and
 * reports it as `transient`.
 */
export interface Storage {
  /** The backend, for messages and logs: `file:///srv/backups`, `s3://bucket/prefix`. Never credentials. */
  readonly description: string;

  /** Stores `data` under `name`, atomically, replacing any object of that name. */
  put(name: string, data: Buffer): Promise<void>;

  /**
   * Stores a large object without holding it in memory (S3: a multipart upload; directory: a temp file).
   * `open` is called once per attempt and must return a fresh stream of exactly `size` bytes each time
   * (like restic's RewindReader: it is what lets a failed attempt be retried from the start). If the
   * stream yields more or fewer bytes, nothing is stored and the call fails `permanent`. An error of the
   * stream itself is `permanent` too (retrying would not fix the source).
   */
  putStream(name: string, open: () => Readable, size: number): Promise<void>;

  /**
   * The whole object. `not-found` if there is none. One larger than the backend's `maxGetBytes` (default
   * MAX_GET_BYTES) is refused `permanent` (code CORRUPT) before it is read: a repository is untrusted
   * input, and no object may make a reader allocate without bound.
   */
  get(name: string): Promise<Buffer>;

  /**
   * Exactly `length` bytes from `offset`. `not-found` if the object does not exist; `permanent` if the
   * range does not lie within the object (`offset + length > size`). `length` 0 at `offset <= size` is an
   * empty buffer. With `into` (at least `length` bytes long) the bytes land at its start and the result
   * is `into.subarray(0, length)`: a restore reads gigabytes through a few buffers instead of allocating
   * one per read. A failed call may have written into it.
   */
  getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer>;

  /**
   * Optional: `length` bytes from `offset`, handed to `onPiece` as they arrive, in order, without
   * holding the range in memory (S3: one GET whose body is read piece by piece). Each piece is
   * consecutive to the last; `onPiece` is awaited before the next is read (backpressure), and a piece
   * is valid only until its call resolves. Resolves once all `length` bytes were handed over. Fails
   * like `getRange` (op `getRange`); an error thrown by `onPiece` ends the read and is rethrown as it
   * is. A failed read may have handed over some pieces: the retry wrapper goes on from the first byte
   * not handed over, so that its caller sees one run of consecutive pieces. Backends where a
   * `getRange` into a reused buffer is as good (a directory) leave it out.
   */
  streamRange?(name: string, offset: number, length: number, onPiece: (piece: Buffer) => Promise<void> | void): Promise<void>;

  /** The object's size, or null if there is no object of that name. */
  stat(name: string): Promise<ObjectInfo | null>;

  /**
   * Every object whose name starts with `prefix` (a plain string prefix: `index/` or `data/ab`; `''` for
   * all), each exactly once, in ascending byte order of name. Paging is internal. A prefix nothing has
   * yields nothing (not an error). Entries that are not valid names (temp files, foreign keys) are skipped.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /**
   * Optional: an object written in pieces, at positions the caller chooses, and named only when it is
   * whole (a pack is named by the hash of its header, which comes last). A backup then writes each chunk
   * straight from the buffer it was read into, with no pack-sized buffer in memory. Backends that cannot
   * (S3 needs the name before the first byte) leave it out, and callers fall back to `put`.
   */
  openWriter?(): ObjectWriter;

  /** Removes the object. Deleting a name that does not exist succeeds. */
  delete(name: string): Promise<void>;

  /** Releases connections and handles. The storage is not used afterwards. */
  close(): Promise<void>;
}

/**
 * An object being written (Storage.openWriter). Contract:
 *
 * - `write` puts `data` at `position`; writes may run concurrently at ranges that do not overlap, in any
 *   order. Bytes never written inside the object read as zeros. `data` may be reused once `write`
 *   resolves. Where `position` and `data` are page-aligned, a directory writes them with O_DIRECT.
 * - `commit(name, size)` is called at most once, after every write has resolved: the object then exists
 *   under `name` exactly as `put` would have left it (atomic, durable, replacing any object of that
 *   name). If the bytes written do not end exactly at `size`, nothing is stored and it fails `permanent`.
 * - Until `commit` resolves nothing is visible under any name, to `get` or `list`, whatever happens to
 *   the writer (a crash leaves at most an unlisted temp file). `abort` discards it; it may be called
 *   any number of times, after anything, and never throws.
 */
export interface ObjectWriter {
  write(data: Buffer, position: number): Promise<void>;
  commit(name: string, size: number): Promise<void>;
  abort(): Promise<void>;
}

export interface ObjectInfo {
  name: string;
  size: number;
}

/** The methods, for logs, fault rules and errors. */
export type StorageOp = 'put' | 'putStream' | 'get' | 'getRange' | 'stat' | 'list' | 'delete';

export const STORAGE_OPS: readonly StorageOp[] = ['put', 'putStream', 'get', 'getRange', 'stat', 'list', 'delete'];

/**
 * What a caller should do about a failure: `not-found` (the object is not there), `transient` (retry
 * later: 5xx, throttling, resets, timeouts), `permanent` (retrying will not help).
 */
export type StorageErrorKind = 'not-found' | 'transient' | 'permanent';

const codeByKind: Record<StorageErrorKind, ErrorCode> = {
  'not-found': ErrorCodes.NOT_FOUND,
  transient: ErrorCodes.STORAGE_UNAVAILABLE,
  permanent: ErrorCodes.STORAGE_REFUSED,
};

export interface StorageErrorOptions {
  op?: StorageOp;
  /** The object's name, when the failure concerns one. */
  name?: string;
  /** Overrides the AdminError code the kind implies (INVALID_ARGUMENT for a bad name, INSUFFICIENT_SPACE). */
  code?: ErrorCode;
  /** How many attempts were made (set by the retry wrapper). */
  attempts?: number;
  /** Only causes known to hold no credentials: system errors, other StorageErrors. Never an SDK error. */
  cause?: unknown;
}

/**
 * The one error type storages throw. An AdminError (so it reaches the CLI and the admin socket with a
 * stable code: NOT_FOUND, STORAGE_UNAVAILABLE, STORAGE_REFUSED), plus the `kind` that drives retries.
 * Its message reads `<backend>: <op> <name>: <what happened>`.
 */
export class StorageError extends AdminError {
  readonly kind: StorageErrorKind;
  /** The storage's `description`. */
  readonly backend: string;
  readonly op: StorageOp | undefined;
  readonly objectName: string | undefined;
  readonly attempts: number | undefined;
  /** What happened, without the `<backend>: <op> <name>: ` the message starts with. */
  readonly detail: string;

  constructor(kind: StorageErrorKind, backend: string, detail: string, options: StorageErrorOptions = {}) {
    const where = [options.op, options.name].filter((s) => s !== undefined && s !== '').join(' ');
    super(options.code ?? codeByKind[kind], `${backend}: ${where ? `${where}: ` : ''}${detail}`, { cause: options.cause });
    this.name = 'StorageError';
    this.kind = kind;
    this.backend = backend;
    this.op = options.op;
    this.objectName = options.name;
    this.attempts = options.attempts;
    this.detail = detail;
  }
}

export function isStorageError(err: unknown, kind?: StorageErrorKind): err is StorageError {
  return err instanceof StorageError && (kind === undefined || err.kind === kind);
}

const SEGMENT = /^[a-z0-9._-]+$/;

/** Why `name` is not a valid object name, or null if it is one. */
export function nameProblem(name: string): string | null {
  if (typeof name !== 'string' || name === '') return 'the name is empty';
  if (name.length > 1024) return 'the name is longer than 1024 characters';
  if (name.startsWith('/')) return 'the name starts with /';
  if (name.endsWith('/')) return 'the name ends with /';
  for (const segment of name.split('/')) {
    if (segment === '') return 'the name has an empty segment (//)';
    if (segment === '.' || segment === '..') return `the name has a "${segment}" segment`;
    if (!SEGMENT.test(segment)) return 'the name has a character outside [a-z0-9/._-]';
  }
  return null;
}

/** Why `prefix` is not a valid list prefix (a prefix of some valid name, or ''), or null. */
export function prefixProblem(prefix: string): string | null {
  if (typeof prefix !== 'string') return 'the prefix is not a string';
  if (prefix === '') return null;
  if (prefix.startsWith('/')) return 'the prefix starts with /';
  if (!/^[a-z0-9/._-]*$/.test(prefix)) return 'the prefix has a character outside [a-z0-9/._-]';
  const segments = prefix.split('/');
  segments.pop(); // the last one may be partial (`data/ab`) or empty (`data/`)
  for (const segment of segments) {
    if (segment === '') return 'the prefix has an empty segment (//)';
    if (segment === '.' || segment === '..') return `the prefix has a "${segment}" segment`;
  }
  return null;
}

export function isValidName(name: string): boolean {
  return nameProblem(name) === null;
}

/**
 * The largest object `get` reads by default. Everything node-admin reads whole is far smaller (a pack's
 * index, a snapshot, a log segment: MiBs), and JSON larger than V8's longest string (~512 MiB) could not
 * be parsed anyway.
 */
export const MAX_GET_BYTES = 1024 * 1024 * 1024;

/** The error of a `get` refused for its size. */
export function objectTooLarge(backend: string, name: string, size: number, max: number): StorageError {
  return new StorageError('permanent', backend, `the object is ${size} bytes, more than the ${max} read whole: not one node-admin wrote`, {
    op: 'get',
    name,
    code: ErrorCodes.CORRUPT,
  });
}

/** Throws the permanent INVALID_ARGUMENT StorageError every backend gives for a bad name. */
export function checkName(backend: string, op: StorageOp, name: string): void {
  const problem = nameProblem(name);
  if (problem !== null) {
    throw new StorageError('permanent', backend, `invalid object name ${JSON.stringify(String(name)).slice(0, 200)}: ${problem}`, {
      op,
      code: ErrorCodes.INVALID_ARGUMENT,
    });
  }
}

export function checkPrefix(backend: string, prefix: string): void {
  const problem = prefixProblem(prefix);
  if (problem !== null) {
    throw new StorageError('permanent', backend, `invalid prefix ${JSON.stringify(String(prefix)).slice(0, 200)}: ${problem}`, {
      op: 'list',
      code: ErrorCodes.INVALID_ARGUMENT,
    });
  }
}

/** Throws unless offset and length are non-negative safe integers (a caller's bug, not the storage's). */
export function checkRangeArgs(backend: string, name: string, offset: number, length: number, into?: Buffer): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new StorageError('permanent', backend, `invalid range: offset ${offset}, length ${length}`, {
      op: 'getRange',
      name,
      code: ErrorCodes.INVALID_ARGUMENT,
    });
  }
  if (into !== undefined && (!Buffer.isBuffer(into) || into.length < length)) {
    throw new StorageError('permanent', backend, `the buffer to read into holds fewer than ${length} bytes`, {
      op: 'getRange',
      name,
      code: ErrorCodes.INVALID_ARGUMENT,
    });
  }
}

export function checkSize(backend: string, name: string, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new StorageError('permanent', backend, `invalid size ${size}`, { op: 'putStream', name, code: ErrorCodes.INVALID_ARGUMENT });
  }
}

/** The error for a range that does not lie within an object of `size` bytes. */
export function rangeError(backend: string, name: string, offset: number, length: number, size: number | undefined): StorageError {
  const of = size === undefined ? 'the object' : `the object (${size} bytes)`;
  return new StorageError('permanent', backend, `range [${offset}, ${offset + length}) is not within ${of}`, { op: 'getRange', name });
}

/** A write or commit on an ObjectWriter that was already committed or aborted. */
export function writerClosedError(backend: string, op: 'write' | 'commit', name?: string): StorageError {
  return new StorageError('permanent', backend, `${op} on a writer that was committed or aborted`, { op: 'put', ...(name === undefined ? {} : { name }) });
}

/** An ObjectWriter committed with a size its writes do not end at. */
export function writerSizeError(backend: string, name: string, expected: number, got: number): StorageError {
  return new StorageError('permanent', backend, `the pieces written end at ${got} bytes, not ${expected}; nothing was stored`, {
    op: 'put',
    name,
    code: ErrorCodes.INVALID_ARGUMENT,
  });
}

/** The error for a stream that did not yield the `size` bytes promised to putStream. */
export function streamSizeError(backend: string, name: string, expected: number, got: number): StorageError {
  const what = got > expected ? `more than ${expected} bytes` : `${got} bytes, not ${expected}`;
  return new StorageError('permanent', backend, `the stream yielded ${what}; nothing was stored`, {
    op: 'putStream',
    name,
    code: ErrorCodes.INVALID_ARGUMENT,
  });
}

/** A stream that errored while being stored: the source's fault, so permanent. */
export function streamSourceError(backend: string, name: string, err: unknown): StorageError {
  const message = err instanceof Error ? err.message : String(err);
  return new StorageError('permanent', backend, `reading the stream to store failed: ${message}; nothing was stored`, {
    op: 'putStream',
    name,
    cause: err,
  });
}
