import { isDirectRefused, readChunkSync, type ChunkRead } from '../fs/direct-io.js';
import { releaseMemory } from '../worker/release-memory.js';
import { Transferring } from '../worker/serve-worker-ops.js';
import type { CompressionPolicy } from './compression.js';
import type { BlobType, RepoKeys } from './crypto/index.js';
import * as ops from './sealed-ops.js';

/**
 * The operations of the sealed codec's worker threads (crypto-pool.ts; served by crypto-worker.ts, and
 * beside the log archive's by archive-crypto-worker.ts): the CPU work of format 3 — content ids,
 * AES-GCM, compression — off the host node's event loop. Inputs and outputs that live in shared memory
 * (alignedBuffers' shared ones) are read and written where they are; any other result is moved back,
 * not copied. The keys come with every call (128 bytes): a restarted thread needs no setup.
 */
export const cryptoWorkerOps = {
  identifyBlob(idKey: Uint8Array, type: BlobType, data: Uint8Array): string {
    return done(ops.identifyBlob(idKey, type, data), data);
  },
  sealBlob(keys: RepoKeys, type: BlobType, id: string, data: Uint8Array, policy: CompressionPolicy, out: Uint8Array | null) {
    return moved(done(ops.sealBlob(keys, type, id, data, policy, out), data), out);
  },
  identifyAndSealBlob(keys: RepoKeys, type: BlobType, data: Uint8Array, policy: CompressionPolicy, out: Uint8Array) {
    return done(ops.identifyAndSealBlob(keys, type, data, policy, out), data);
  },
  /**
   * Reads a chunk of a file into `into` (shared memory) on this thread, then names it and, given `out`,
   * seals it there: a backup's read leaves libuv's pool (the host's I/O) for this low-priority thread,
   * and a chunk costs one round trip. `got` where the file ended first; `refused` where the filesystem
   * refused direct I/O (the caller reads it the ordinary way).
   */
  readAndIdentifyBlob(keys: RepoKeys, type: BlobType, read: ChunkRead, into: Uint8Array, policy: CompressionPolicy, out: Uint8Array | null): ReadIdentified {
    let got: number;
    try {
      got = readChunkSync(read, into);
    } catch (err) {
      if (read.direct && isDirectRefused(err)) return { refused: true };
      throw err;
    }
    if (got < read.length) return { got };
    const data = into.subarray(0, read.length);
    if (!out) return { id: ops.identifyBlob(keys.id, type, data), length: -1 };
    return ops.identifyAndSealBlob(keys, type, data, policy, out);
  },
  openBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number, out: Uint8Array | null) {
    return moved(done(ops.openBlob(keys, type, id, stored, maxLength, out), stored), out);
  },
  checkBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number): number {
    return done(ops.checkBlob(keys, type, id, stored, maxLength), stored);
  },
  sealObject(keys: RepoKeys, name: string, plaintext: Uint8Array) {
    return moved(done(ops.sealObject(keys, name, plaintext), plaintext), null);
  },
  openObject(keys: RepoKeys, name: string, stored: Uint8Array, maxLength: number) {
    return moved(done(ops.openObject(keys, name, stored, maxLength), stored), null);
  },
};

/**
 * `result`, once `input` (this call's copy of what the caller sent, unless it lives in shared memory)
 * is freed where the result does not view it: at once, not at the thread's next collection, which a
 * thread that allocates little JavaScript reaches only after tens of MiB of such copies. (With the
 * copies moved rather than cloned, worker-client.ts `crossing`, a verify of 1.1 GiB took ~0.4 s less
 * CPU, measured.)
 */
function done<R>(result: R, input: Uint8Array): R {
  if (!(result instanceof Uint8Array) || result.buffer !== input.buffer) releaseMemory(input);
  return result;
}

/** A result written into `out` answers with its length; any other is moved to the caller. */
function moved(result: Buffer, out: Uint8Array | null): number | Transferring<Uint8Array> {
  if (out) return result.length;
  // A small Buffer is a view of Node's pool, shared by every small Buffer of this thread: moving its
  // memory would take it from all of them (Node 20 lets it happen; Node 24 refuses). Move a copy of its
  // own then (a Uint8Array never comes from the pool).
  const own = result.byteOffset === 0 && result.byteLength === result.buffer.byteLength && !(result.buffer instanceof SharedArrayBuffer) ? result : new Uint8Array(result);
  return new Transferring<Uint8Array>(own, [own.buffer as ArrayBuffer]);
}

/** readAndIdentifyBlob's answer: the id (and the sealed length, -1 if not sealed), or why there is none. */
export type ReadIdentified = { id: string; length: number } | { got: number } | { refused: true };

export type CryptoWorkerOps = typeof cryptoWorkerOps;
