/**
 * What crosses to a worker thread (worker-client.ts viewAlone): a byte view inside a larger ordinary
 * buffer goes as a copy of its own bytes (structured cloning would copy the whole buffer behind it);
 * shared memory, moved buffers and whole-buffer views go as they are.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { crossing, SMALL_WORKER_LIMITS, viewAlone, WorkerClient } from '../dist/agent/worker/worker-client.js';
import { ArchiveWorker } from '../dist/agent/log-archive/archive-worker-client.js';
import type { ArchiveWorkerOps } from '../dist/agent/log-archive/archive-worker-ops.js';

describe('viewAlone', () => {
  const pack = Buffer.alloc(8 * 1024 * 1024, 7);
  const blob = pack.subarray(1024 * 1024, 2 * 1024 * 1024);
  const shared = Buffer.from(new SharedArrayBuffer(4096)).subarray(100, 200);
  const whole = new Uint8Array(64);
  const cases: [string, unknown, Set<unknown>, 'same' | 'own copy'][] = [
    ['a blob inside a pack buffer', blob, new Set(), 'own copy'],
    ['a small Buffer from the pool', Buffer.from('32 bytes of a key, from the pool'), new Set(), 'own copy'],
    ['a view of shared memory', shared, new Set(), 'same'],
    ['a view whose buffer is moved', blob, new Set([pack.buffer]), 'same'],
    ['a view that is its whole buffer', whole, new Set(), 'same'],
    ['not bytes', { a: 1 }, new Set(), 'same'],
  ];
  it.each(cases)('%s', (_name, arg, moved, expected) => {
    const out = viewAlone(arg, moved);
    if (expected === 'same') {
      expect(out).toBe(arg);
      return;
    }
    // Negative control of the check below: the input itself does carry a larger buffer.
    const view = arg as Uint8Array;
    expect(view.buffer.byteLength).toBeGreaterThan(view.byteLength);
    expect(out).not.toBe(arg);
    const copy = out as Uint8Array;
    expect(copy.buffer.byteLength).toBe(view.byteLength);
    expect(Buffer.from(copy).equals(Buffer.from(view))).toBe(true);
  });
});

describe('crossing', () => {
  it('a copy viewAlone made is moved, not copied again; what the caller moves stays moved; the rest is sent as it is', () => {
    const pack = Buffer.alloc(8 * 1024 * 1024, 7);
    const blob = pack.subarray(1024 * 1024, 2 * 1024 * 1024);
    const own = new Uint8Array(64);
    const moving = new ArrayBuffer(16);
    const sent = crossing([blob, own, 'data', new Uint8Array(moving)], [moving]);
    const copy = sent.args[0] as Uint8Array;
    expect(copy).not.toBe(blob);
    expect(sent.args.slice(1, 3)).toEqual([own, 'data']);
    expect(sent.transfer).toEqual([moving, copy.buffer]);
    // Negative control: the pack itself is never in the list (moving it would take it from its other blobs).
    expect(sent.transfer).not.toContain(pack.buffer);
  });

  it('through a real thread: the view arrives whole, and the buffer it came from is untouched', async () => {
    const archive = new ArchiveWorker();
    try {
      const pack = Buffer.alloc(4 * 1024 * 1024, 5);
      const blob = pack.subarray(1024 * 1024, 2 * 1024 * 1024);
      const digest = await archive.sha256(blob);
      expect(digest.toString('hex')).toBe(createHash('sha256').update(blob).digest('hex'));
      expect([pack.byteLength, blob.byteLength, pack.every((b) => b === 5)]).toEqual([4 * 1024 * 1024, 1024 * 1024, true]);
    } finally {
      await archive.close();
    }
  });
});

describe('heap limits of the agent\'s own threads', () => {
  it('the log archive worker runs with SMALL_WORKER_LIMITS; a client given none runs with V8\'s defaults', async () => {
    const archive = new ArchiveWorker();
    const plain = new WorkerClient<ArchiveWorkerOps>(new URL('../dist/agent/log-archive/archive-worker.js', import.meta.url), 'plain');
    try {
      expect(archive.resourceLimits).toBeNull(); // no thread before the first call
      const digest = await archive.sha256(Buffer.from('abc'));
      expect(digest.toString('hex')).toBe(createHash('sha256').update('abc').digest('hex'));
      expect(archive.resourceLimits).toMatchObject(SMALL_WORKER_LIMITS);
      await plain.call('sha256', Buffer.from('abc'));
      // Negative control: without limits the young generation is V8's own, larger one.
      expect(plain.resourceLimits!.maxYoungGenerationSizeMb).toBeGreaterThan(SMALL_WORKER_LIMITS.maxYoungGenerationSizeMb!);
    } finally {
      await archive.close();
      await plain.close();
    }
  });
});
