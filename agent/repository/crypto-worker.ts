import { lowerThreadPriority } from '../worker/lower-thread-priority.js';
import { releaseMemory } from '../worker/release-memory.js';
import { serveWorkerOps, Transferring } from '../worker/serve-worker-ops.js';
import type { CompressionPolicy } from './compression.js';
import type { BlobType, RepoKeys } from './crypto/index.js';
import * as ops from './sealed-ops.js';

/**
 * A worker thread of the sealed codec (crypto-pool.ts): the CPU work of format 3 — content ids, AES-GCM,
 * compression — off the host node's event loop. Inputs and outputs that live in shared memory
 * (alignedBuffers' shared ones) are read and written where they are; any other result is moved back,
 * not copied. The keys come with every call (128 bytes): a restarted thread needs no setup.
 */
const cryptoWorkerOps = {
  identifyBlob(idKey: Uint8Array, type: BlobType, data: Uint8Array): string {
    return ops.identifyBlob(idKey, type, data);
  },
  sealBlob(keys: RepoKeys, type: BlobType, id: string, data: Uint8Array, policy: CompressionPolicy, out: Uint8Array | null) {
    return moved(ops.sealBlob(keys, type, id, data, policy, out), out);
  },
  identifyAndSealBlob(keys: RepoKeys, type: BlobType, data: Uint8Array, policy: CompressionPolicy, out: Uint8Array) {
    return ops.identifyAndSealBlob(keys, type, data, policy, out);
  },
  openBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number, out: Uint8Array | null) {
    return moved(ops.openBlob(keys, type, id, stored, maxLength, out), out);
  },
  checkBlob(keys: RepoKeys, type: BlobType, id: string, stored: Uint8Array, maxLength: number): number {
    return ops.checkBlob(keys, type, id, stored, maxLength);
  },
  sealObject(keys: RepoKeys, name: string, plaintext: Uint8Array) {
    const sealed = ops.sealObject(keys, name, plaintext);
    releaseMemory(plaintext); // this call's copy (a segment of up to 16 MiB), not left to the thread's next collection
    return moved(sealed, null);
  },
  openObject(keys: RepoKeys, name: string, stored: Uint8Array, maxLength: number) {
    return moved(ops.openObject(keys, name, stored, maxLength), null);
  },
};

/** A result written into `out` answers with its length; any other is moved to the caller. */
function moved(result: Buffer, out: Uint8Array | null): number | Transferring<Uint8Array> {
  if (out) return result.length;
  // A small Buffer is a view of Node's pool, shared by every small Buffer of this thread: moving its
  // memory would take it from all of them (Node 20 lets it happen; Node 24 refuses). Move a copy of its
  // own then (a Uint8Array never comes from the pool).
  const own = result.byteOffset === 0 && result.byteLength === result.buffer.byteLength && !(result.buffer instanceof SharedArrayBuffer) ? result : new Uint8Array(result);
  return new Transferring<Uint8Array>(own, [own.buffer as ArrayBuffer]);
}

export type CryptoWorkerOps = typeof cryptoWorkerOps;

// Deferrable work: the host's own threads go first when the cores are busy (lower-thread-priority.ts).
lowerThreadPriority();
serveWorkerOps(cryptoWorkerOps);
