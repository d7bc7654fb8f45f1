/**
 * releaseMemory (agent/worker/release-memory.ts) frees a buffer's memory within the call, on every
 * supported Node without a V8 flag: the crypto threads free node:crypto's outputs with it (on Node 20
 * they piled up to 30-40 MiB a thread before). What must never be freed is left alone: shared memory,
 * a view of part of a buffer, a pooled small Buffer that shares its memory with others.
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { releaseMemory } from '../dist/agent/worker/release-memory.js';

// A WebAssembly memory, not shared: its buffer cannot be detached (lib "es2023" has no WebAssembly types).
declare const WebAssembly: { Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer } };

const MiB = 1024 * 1024;
const arrayBuffers = () => process.memoryUsage().arrayBuffers;

describe('releaseMemory', () => {
  it('a whole buffer of its own: detached, and its memory is gone from the process at once', () => {
    const views = Array.from({ length: 16 }, () => new Uint8Array(MiB));
    const held = arrayBuffers();
    for (const v of views) releaseMemory(v);
    expect(views.every((v) => v.byteLength === 0 && v.buffer.byteLength === 0)).toBe(true);
    // Negative control in the same numbers: before the release the 16 MiB were counted.
    expect(held - arrayBuffers()).toBeGreaterThanOrEqual(16 * MiB);
  });

  it("node:crypto's output, as the crypto threads free it after copying out", () => {
    const cipher = crypto.createCipheriv('aes-256-gcm', crypto.randomBytes(32), crypto.randomBytes(12));
    const out = cipher.update(crypto.randomBytes(64 * 1024));
    expect(out.byteLength).toBe(64 * 1024);
    releaseMemory(out);
    expect(out.byteLength).toBe(0);
  });

  it.each([
    ['shared memory', () => new Uint8Array(new SharedArrayBuffer(4096)).fill(7)],
    ['a view of part of a buffer', () => new Uint8Array(8192).fill(7).subarray(0, 4096)],
    ['a view that starts inside its buffer', () => new Uint8Array(8192).fill(7).subarray(4096)],
    ['a pooled small Buffer', () => Buffer.from('\u0007'.repeat(64))],
    ["memory that cannot be detached (a WebAssembly memory's)", () => new Uint8Array(new WebAssembly.Memory({ initial: 1 }).buffer).fill(7)],
  ])('%s: left alone, its bytes intact', (_what, make) => {
    const view = make();
    const length = view.byteLength;
    releaseMemory(view);
    expect(view.byteLength).toBe(length);
    expect(view.every((b) => b === 7)).toBe(true);
  });
});
