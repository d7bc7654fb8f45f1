import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LaneSealer } from '../dist/agent/backup/lane-sealer.js';
import { alignedBuffers, openDirect, roundUpToAlign } from '../dist/agent/fs/direct-io.js';
import { CryptoPool } from '../dist/agent/repository/crypto-pool.js';
import { deriveKeys, newMasterKey } from '../dist/agent/repository/crypto/index.js';
import { SealedCodec } from '../dist/agent/repository/sealed-codec.js';
import { tempDir } from './support/processes.js';

/**
 * The backup's naming and sealing of chunks, lane by lane (lane-sealer.ts), with the real sealed codec
 * and its crypto threads: what the one-round-trip path stores opens to the chunk under the id it gave,
 * exactly as what the two-call path stores (the differential); and a lane names alone (no seal) after
 * a chunk the repository already held.
 */

const codec = new SealedCodec(deriveKeys(newMasterKey()), new CryptoPool(2));
afterAll(() => codec.close());

/** The codec, counting which path each chunk took. */
function counting() {
  const calls = { both: 0, blobId: 0, sealBlob: 0 };
  const spy = Object.create(codec) as SealedCodec;
  spy.identifyAndSealBlob = (...a) => (calls.both++, codec.identifyAndSealBlob(...a));
  spy.blobId = (...a) => (calls.blobId++, codec.blobId(...a));
  spy.sealBlob = (...a) => (calls.sealBlob++, codec.sealBlob(...a));
  return { spy, calls };
}

describe('LaneSealer', () => {
  it('stores, in one round trip, bytes that open to the chunk under its id, as the two-call path does', async () => {
    const lanes = 2;
    const buffers = alignedBuffers(lanes, roundUpToAlign(codec.storedLength(1024 * 1024)));
    const { spy, calls } = counting();
    const sealer = new LaneSealer(spy, buffers, lanes);
    const chunks = [crypto.randomBytes(1024 * 1024), Buffer.alloc(200000, 'compressible '), crypto.randomBytes(5)];
    for (const [k, chunk] of chunks.entries()) {
      const lane = k % lanes;
      const policy = k === 1 ? 'try' : 'never';
      const id = await sealer.identify(chunk, policy, lane, () => false);
      expect(id).toBe(await codec.blobId('data', chunk));
      const stored = Buffer.from(await sealer.sealed(id, chunk, policy, lane));
      expect(stored.length).toBeLessThanOrEqual(codec.storedLength(chunk.length));
      expect((await codec.openBlob('data', id, stored, 2 * 1024 * 1024)).equals(chunk)).toBe(true);
      // The two-call path's bytes open to the same chunk (salts differ: the bytes themselves may not).
      const twoCalls = await codec.sealBlob('data', id, chunk, policy);
      expect((await codec.openBlob('data', id, twoCalls, 2 * 1024 * 1024)).equals(chunk)).toBe(true);
      expect(stored.length).toBe(twoCalls.length);
    }
    expect(calls).toEqual({ both: 3, blobId: 0, sealBlob: 0 });
  });

  it('after a chunk the repository held, names the next alone and seals it only if it is new', async () => {
    const buffers = alignedBuffers(1, roundUpToAlign(codec.storedLength(1024 * 1024)));
    const { spy, calls } = counting();
    const sealer = new LaneSealer(spy, buffers, 1);
    const held = new Set<string>();
    const a = crypto.randomBytes(1000);
    const b = crypto.randomBytes(1000);
    held.add(await codec.blobId('data', a));
    await sealer.identify(a, 'never', 0, (id) => held.has(id)); // sealed for nothing: it was held
    expect(calls).toEqual({ both: 1, blobId: 0, sealBlob: 0 });
    const idB = await sealer.identify(b, 'never', 0, (id) => held.has(id)); // named alone
    expect(calls).toEqual({ both: 1, blobId: 1, sealBlob: 0 });
    const stored = Buffer.from(await sealer.sealed(idB, b, 'never', 0));
    expect(calls).toEqual({ both: 1, blobId: 1, sealBlob: 1 });
    expect((await codec.openBlob('data', idB, stored, 2 * 1024 * 1024)).equals(b)).toBe(true);
    await sealer.identify(crypto.randomBytes(10), 'never', 0, () => false); // b was new: one round trip again
    expect(calls.both).toBe(2);
  });
});

/**
 * identifyRead: the chunk read by the crypto thread itself, from the file's descriptor (direct-io.ts
 * readChunkSync), then named and sealed there. Differential: the id and the stored bytes are those the
 * caller's own read and `identify` give, for a chunk of every shape (whole, a tail off the page grid),
 * read directly and not.
 */
describe('LaneSealer.identifyRead', () => {
  const dir = tempDir('lane-read');
  const file = path.join(dir, 'table');
  const data = crypto.randomBytes(2 * 1024 * 1024 + 12345);
  fs.writeFileSync(file, data);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const shrank = () => new Error('shrank');
  const pieces = [
    [0, 1024 * 1024],
    [1024 * 1024, 1024 * 1024],
    [2 * 1024 * 1024, 12345],
  ] as const;

  for (const direct of [true, false]) {
    it(`reads on a crypto thread, ${direct ? 'directly' : 'through the page cache'}, and names and seals the bytes the file holds`, async () => {
      const fh = direct ? await openDirect(file, fs.constants.O_RDONLY) : await fs.promises.open(file, 'r');
      if (!fh) throw new Error('this filesystem refuses O_DIRECT: the direct case cannot be tried here');
      try {
        const [into] = alignedBuffers(1, 1024 * 1024);
        const out = alignedBuffers(1, roundUpToAlign(codec.storedLength(1024 * 1024)));
        const sealer = new LaneSealer(codec, out, 1);
        for (const [offset, length] of pieces) {
          const expected = data.subarray(offset, offset + length);
          into!.fill(0);
          const id = await sealer.identifyRead({ fd: fh.fd, offset, length, direct }, into!, 'never', 0, () => false, shrank);
          expect(id).toBe(await codec.blobId('data', expected));
          expect(into!.subarray(0, length).equals(expected)).toBe(true);
          const stored = Buffer.from(await sealer.sealed(id!, into!.subarray(0, length), 'never', 0));
          expect((await codec.openBlob('data', id!, stored, 2 * 1024 * 1024)).equals(expected)).toBe(true);
        }
      } finally {
        await fh.close();
      }
    });
  }

  it('throws shrank() where the file ends first, and answers null (nothing read) where it cannot read itself', async () => {
    const direct = await openDirect(file, fs.constants.O_RDONLY);
    const plain = await fs.promises.open(file, 'r');
    try {
      const [into] = alignedBuffers(1, 1024 * 1024);
      const sealer = new LaneSealer(codec, alignedBuffers(1, roundUpToAlign(codec.storedLength(1024 * 1024))), 1);
      const last = pieces[2][0];
      await expect(sealer.identifyRead({ fd: plain.fd, offset: last, length: 20000, direct: false }, into!, 'never', 0, () => false, shrank)).rejects.toThrow('shrank');
      if (direct) {
        await expect(sealer.identifyRead({ fd: direct.fd, offset: last, length: 20000, direct: true }, into!, 'never', 0, () => false, shrank)).rejects.toThrow('shrank');
        // Refused: the kernel refuses a direct read at an offset off the page grid, as a filesystem
        // without O_DIRECT does: null, for the caller to read the ordinary way.
        expect(await sealer.identifyRead({ fd: direct.fd, offset: 100, length: 5000, direct: true }, into!, 'never', 0, () => false, shrank)).toBeNull();
      }
      // Memory the thread cannot write where it is (not shared): null, nothing read.
      const unshared = Buffer.alloc(1024 * 1024);
      expect(await sealer.identifyRead({ fd: plain.fd, offset: 0, length: 1000, direct: false }, unshared, 'never', 0, () => false, shrank)).toBeNull();
      expect(unshared.every((b) => b === 0)).toBe(true);
      // The negative control: the same call into shared memory reads and names it.
      expect(await sealer.identifyRead({ fd: plain.fd, offset: 0, length: 1000, direct: false }, into!, 'never', 0, () => false, shrank)).toBe(await codec.blobId('data', data.subarray(0, 1000)));
    } finally {
      await direct?.close();
      await plain.close();
    }
  });
});
