import { createHash } from 'node:crypto';
import { LogCorruptionError } from '../leveldb/log-reader.js';
import { releaseMemory } from '../worker/release-memory.js';
import { Transferring } from '../worker/serve-worker-ops.js';
import { LogTail } from './log-tail.js';

/** Each followed log's record assembly, by the follower's id for it (kept here between calls). */
const tails = new Map<number, LogTail>();

/** What one push of a log's bytes gave: the records it completed, packed in one buffer (moved, not copied). */
export interface TailPushed {
  /** The records' bytes, one after another; record i ends at ends[i]. */
  records: Uint8Array;
  ends: number[];
  /** Bytes pushed that belong to no complete record yet. */
  incompleteBytes: number;
  /** Why the log cannot be read on (its bytes are damaged, or this thread lost its place), or null. */
  damage: string | null;
}

/**
 * The log archive's operations in a worker thread (served by archive-worker.ts alone, or beside the
 * crypto operations by archive-crypto-worker.ts, an agent's shared thread): the CPU work of following
 * and shipping the log — every record's crc32c and framing (LogTail), every segment's SHA-256 — off
 * the host node's event loop and off libuv's pool. The reads and uploads themselves stay async I/O in
 * the host.
 */
export const archiveWorkerOps = {
  /**
   * Takes `bytes`, read from a log at file offset `offset`, into the log `tail`'s assembly. A tail is
   * created by its first push, at offset 0; a push anywhere but where the last one ended (this thread
   * was restarted and lost its state) is damage: continuity cannot be proven, and the log is dropped.
   */
  tailPush(tail: number, offset: number, bytes: Uint8Array): Transferring<TailPushed> | TailPushed {
    let t = tails.get(tail);
    if (!t && offset === 0) tails.set(tail, (t = new LogTail()));
    if (!t || t.offset !== offset) return damaged(tail, `the reader lost its place in the log (at offset ${offset})`);
    let got: Buffer[];
    try {
      got = t.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch (err) {
      if (!(err instanceof LogCorruptionError)) throw err;
      return damaged(tail, err.message);
    } finally {
      releaseMemory(bytes); // the tail copied what it keeps
    }
    // One buffer of its own (never a slice of Node's shared pool, which must not be moved).
    const records = Buffer.allocUnsafeSlow(got.reduce((n, r) => n + r.length, 0));
    const ends: number[] = [];
    let at = 0;
    for (const r of got) ends.push((at += r.copy(records, at)));
    return new Transferring({ records, ends, incompleteBytes: t.incompleteBytes, damage: null }, [records.buffer]);
  },
  /** Forgets a log's assembly (the follower closed it). */
  tailDrop(tail: number): void {
    tails.delete(tail);
  },
  /** SHA-256 of `data`: read in place where it is shared memory, else a copy of this call's, freed after. */
  sha256(data: Uint8Array): Uint8Array {
    const digest = createHash('sha256').update(data).digest();
    releaseMemory(data);
    return digest;
  },
} as const;

export type ArchiveWorkerOps = typeof archiveWorkerOps;

/** The log cannot be read on: its assembly is forgotten, and no record of this push is given. */
function damaged(tail: number, why: string): TailPushed {
  tails.delete(tail);
  return { records: new Uint8Array(0), ends: [], incompleteBytes: 0, damage: why };
}
