import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../dist/shared/errors.js';
import { alignedBuffers } from '../../dist/agent/fs/direct-io.js';
import { StorageError, type ObjectInfo, type Storage, type StorageErrorKind } from '../../dist/agent/storage/storage.js';

/**
 * The one test suite every storage backend runs (like restic's backend test suite and kopia's
 * VerifyStorage): it checks the contract written in agent/storage/storage.ts. Each test gets a
 * fresh, empty storage from `makeStorage` and calls `cleanup` after it.
 */
export interface StorageFixture {
  storage: Storage;
  cleanup: () => Promise<void>;
}

const MiB = 1024 * 1024;

export interface ConformanceOptions {
  /** Whether the backend writes objects in pieces (Storage.openWriter): its tests run, or its absence is checked. */
  writer: boolean;
}

export function runStorageConformance(name: string, makeStorage: () => Promise<StorageFixture>, options: ConformanceOptions): void {
  describe(`storage conformance: ${name}`, () => {
    let fixture: StorageFixture | undefined;
    let s: Storage;

    beforeEach(async () => {
      fixture = await makeStorage();
      s = fixture.storage;
    });

    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    describe('put and get', () => {
      it.each([
        ['an empty object', 0],
        ['a 1-byte object', 1],
        ['a 5 MiB object', 5 * MiB],
      ])('round-trips %s, with stat giving its size', async (_what, size) => {
        const data = randomBytes(size);
        await s.put('data/obj', data);
        expect(equal(await s.get('data/obj'), data)).toBe(true);
        expect(await s.stat('data/obj')).toEqual({ name: 'data/obj', size });
      });

      it('puts the same content again harmlessly, and a different content replaces the object', async () => {
        const a = randomBytes(1000);
        await s.put('keys/k1', a);
        await s.put('keys/k1', a);
        expect(equal(await s.get('keys/k1'), a)).toBe(true);
        const b = randomBytes(10);
        await s.put('keys/k1', b);
        expect(equal(await s.get('keys/k1'), b)).toBe(true);
        expect(await names(s, '')).toEqual(['keys/k1']);
      });

      it('does not alias the caller buffer: changing it after put changes nothing stored', async () => {
        const data = Buffer.from('original');
        await s.put('x', data);
        data.fill(0);
        expect((await s.get('x')).toString()).toBe('original');
      });

      it('accepts every name character and deep paths', async () => {
        const all = ['a', 'z9', '.hidden', 'a.b-c_d', 'data/00/0123456789abcdef', 'a-b/c.d/e_f/g-h/i'];
        for (const n of all) await s.put(n, Buffer.from(n));
        for (const n of all) expect((await s.get(n)).toString()).toBe(n);
        expect(await names(s, '')).toEqual([...all].sort());
      });
    });

    describe('missing objects', () => {
      it('get and getRange of a missing name fail not-found (NOT_FOUND), naming the backend and the object', async () => {
        const err = await failure(s.get('nothing/here'));
        expectKind(err, 'not-found');
        expect(err.code).toBe(ErrorCodes.NOT_FOUND);
        expect(err.message).toContain(s.description);
        expect(err.message).toContain('nothing/here');
        expectKind(await failure(s.getRange('nothing/here', 0, 1)), 'not-found');
        expectKind(await failure(s.getRange('nothing/here', 0, 0)), 'not-found');
      });

      it('stat of a missing name is null; so is stat of a "directory" of other names', async () => {
        expect(await s.stat('nothing')).toBeNull();
        await s.put('dir/child', Buffer.from('x'));
        expect(await s.stat('dir')).toBeNull();
        expectKind(await failure(s.get('dir')), 'not-found');
      });
    });

    describe('getRange', () => {
      const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
      beforeEach(async () => {
        await s.put('r/obj', data);
      });

      it.each([
        ['the start', 0, 10],
        ['the middle', 300, 400],
        ['the end', 990, 10],
        ['all of it', 0, 1000],
        ['one byte at the end', 999, 1],
      ])('reads exactly %s', async (_what, offset, length) => {
        const got = await s.getRange('r/obj', offset, length);
        expect(got.length).toBe(length);
        expect(equal(got, data.subarray(offset, offset + length))).toBe(true);
      });

      it('reads into a buffer of the caller: the bytes at its start, the result a view of it', async () => {
        const into = Buffer.alloc(600, 0xee);
        const got = await s.getRange('r/obj', 300, 400, into);
        expect(got.length).toBe(400);
        expect(got.buffer).toBe(into.buffer);
        expect(got.byteOffset).toBe(into.byteOffset);
        expect(equal(into.subarray(0, 400), data.subarray(300, 700))).toBe(true);
        expect(into.subarray(400).every((b) => b === 0xee)).toBe(true); // nothing past the range touched
        const small = Buffer.alloc(10);
        expectKind(await failure(s.getRange('r/obj', 0, 11, small)), 'permanent');
      });

      it('reads 0 bytes anywhere up to the end', async () => {
        expect((await s.getRange('r/obj', 0, 0)).length).toBe(0);
        expect((await s.getRange('r/obj', 1000, 0)).length).toBe(0);
      });

      it.each([
        ['past the end', 995, 10],
        ['starting at the end', 1000, 1],
        ['starting beyond the end', 5000, 10],
        ['empty beyond the end', 1001, 0],
      ])('fails permanent for a range %s, never a short read', async (_what, offset, length) => {
        const err = await failure(s.getRange('r/obj', offset, length));
        expectKind(err, 'permanent');
        expect(err.message).toMatch(/range/);
      });

      it('rejects negative or fractional offsets and lengths as INVALID_ARGUMENT', async () => {
        for (const [o, l] of [
          [-1, 1],
          [0, -1],
          [0.5, 1],
          [0, Number.NaN],
        ] as const) {
          const err = await failure(s.getRange('r/obj', o, l));
          expectKind(err, 'permanent');
          expect(err.code).toBe(ErrorCodes.INVALID_ARGUMENT);
        }
      });

      it('reads a range of a 5 MiB object', async () => {
        const big = randomBytes(5 * MiB);
        await s.put('r/big', big);
        const got = await s.getRange('r/big', 3 * MiB + 7, MiB);
        expect(equal(got, big.subarray(3 * MiB + 7, 4 * MiB + 7))).toBe(true);
      });

      it('streams a range (where it can) as consecutive pieces; a range past the end fails permanent, a missing object not-found', async () => {
        if (!s.streamRange) return; // optional: a directory reads ranges into the caller's buffer instead
        const big = randomBytes(5 * MiB);
        await s.put('r/stream', big);
        const pieces: Buffer[] = [];
        await s.streamRange('r/stream', MiB + 3, 3 * MiB, (p) => {
          pieces.push(Buffer.from(p)); // a piece is valid only during its call
        });
        expect(pieces.length).toBeGreaterThan(1);
        expect(equal(Buffer.concat(pieces), big.subarray(MiB + 3, 4 * MiB + 3))).toBe(true);
        expectKind(await failure(s.streamRange('r/stream', 5 * MiB - 1, 2, () => {})), 'permanent');
        expectKind(await failure(s.streamRange('r/nope', 0, 1, () => {})), 'not-found');
        // An error of the consumer ends the read and comes back as it is.
        const mine = new Error('consumer says stop');
        await expect(s.streamRange('r/stream', 0, 5 * MiB, () => Promise.reject(mine))).rejects.toBe(mine);
      });
    });

    describe('list', () => {
      it('lists by prefix, in byte order, with sizes; a missing prefix is empty', async () => {
        const objects: Record<string, number> = { 'a/1': 1, 'a/2': 22, 'a/b/3': 3, ab: 4, 'b/1': 5, 'x-1': 6, 'x/1': 7, 'x.1': 8, x0: 9 };
        await Promise.all(Object.entries(objects).map(([n, size]) => s.put(n, randomBytes(size))));

        const all = await collect(s.list(''));
        expect(all.map((o) => o.name)).toEqual(Object.keys(objects).sort());
        for (const o of all) expect(o.size).toBe(objects[o.name]);

        expect(await names(s, 'a/')).toEqual(['a/1', 'a/2', 'a/b/3']);
        expect(await names(s, 'a')).toEqual(['a/1', 'a/2', 'a/b/3', 'ab']);
        expect(await names(s, 'a/b')).toEqual(['a/b/3']);
        expect(await names(s, 'a/b/3')).toEqual(['a/b/3']);
        expect(await names(s, 'x')).toEqual(['x-1', 'x.1', 'x/1', 'x0']);
        expect(await names(s, 'zz/')).toEqual([]);
        expect(await names(s, 'zz')).toEqual([]);
        expect(await names(s, 'a/c/')).toEqual([]);
      });

      it('lists an empty storage as empty', async () => {
        expect(await names(s, '')).toEqual([]);
      });

      it('pages through more than 1000 objects (S3 pages hold 1000): each exactly once, in order', async () => {
        const count = 1010;
        const all = Array.from({ length: count }, (_, i) => `many/${i.toString(16).padStart(4, '0')}`);
        await pool(all, 32, (n) => s.put(n, Buffer.from(n)));
        await s.put('other/x', Buffer.from('x'));
        const listed = await collect(s.list('many/'));
        expect(listed.length).toBe(count);
        expect(listed.map((o) => o.name)).toEqual(all); // the hex names sort as they were made
        expect(listed.every((o) => o.size === 9)).toBe(true);
        expect((await names(s, 'many/02')).length).toBe(256);
        expect((await names(s, 'many/03')).length).toBe(count - 3 * 256);
      });

      it('rejects invalid prefixes as INVALID_ARGUMENT', async () => {
        for (const p of ['/a', '../', 'a/../', 'A', 'a b', 'a//']) {
          const err = await failure(collect(s.list(p)));
          expectKind(err, 'permanent');
          expect(err.code).toBe(ErrorCodes.INVALID_ARGUMENT);
        }
      });
    });

    describe('delete', () => {
      it('deletes: gone for get, stat and list; other objects stay', async () => {
        await s.put('d/1', Buffer.from('1'));
        await s.put('d/2', Buffer.from('2'));
        await s.delete('d/1');
        expect(await s.stat('d/1')).toBeNull();
        expectKind(await failure(s.get('d/1')), 'not-found');
        expect(await names(s, 'd/')).toEqual(['d/2']);
      });

      it('deleting a missing name succeeds, twice', async () => {
        await s.delete('never/was');
        await s.put('once', Buffer.from('x'));
        await s.delete('once');
        await s.delete('once');
        expect(await names(s, '')).toEqual([]);
      });
    });

    describe('putStream', () => {
      it('stores a 20 MiB stream (multipart on S3) and reads it back whole and by range', async () => {
        const size = 20 * MiB;
        const data = randomBytes(size);
        let opens = 0;
        await s.putStream('big/blob', () => {
          opens++;
          return chunked(data, 1 * MiB + 17);
        }, size);
        expect(opens).toBe(1);
        expect(await s.stat('big/blob')).toEqual({ name: 'big/blob', size });
        const back = await s.get('big/blob');
        expect(sha256(back)).toBe(sha256(data));
        const tail = await s.getRange('big/blob', size - 100, 100);
        expect(equal(tail, data.subarray(size - 100))).toBe(true);
      });

      it('stores small and empty streams', async () => {
        await s.putStream('small/empty', () => Readable.from([]), 0);
        await s.putStream('small/one', () => Readable.from([Buffer.from('a')]), 1);
        expect((await s.get('small/empty')).length).toBe(0);
        expect((await s.get('small/one')).toString()).toBe('a');
      });

      it.each([
        ['fewer', 100, 99],
        ['more', 100, 101],
        ['fewer (multipart size)', 12 * MiB, 12 * MiB - 1],
      ])('stores nothing when the stream yields %s bytes than announced, and keeps the old object', async (_w, announced, actual) => {
        await s.put('sz/obj', Buffer.from('old'));
        await s.put('sz/other', Buffer.from('y'));
        const data = randomBytes(actual);
        const err = await failure(s.putStream('sz/obj', () => chunked(data, MiB), announced));
        expectKind(err, 'permanent');
        expect(err.message).toMatch(/bytes/);
        expect((await s.get('sz/obj')).toString()).toBe('old');
        const err2 = await failure(s.putStream('sz/new', () => chunked(data, MiB), announced));
        expectKind(err2, 'permanent');
        expect(await s.stat('sz/new')).toBeNull();
        expect(await names(s, 'sz/')).toEqual(['sz/obj', 'sz/other']);
      });

      it('stores nothing when the stream itself fails, and says so (permanent)', async () => {
        const failing = () =>
          Readable.from(
            (async function* () {
              yield randomBytes(1000);
              throw new Error('disk read error');
            })(),
          );
        const err = await failure(s.putStream('sf/obj', failing, 5000));
        expectKind(err, 'permanent');
        expect(err.message).toContain('disk read error');
        expect(await s.stat('sf/obj')).toBeNull();
      });
    });

    if (!options.writer) {
      it('has no openWriter (callers store whole objects with put)', () => {
        expect(s.openWriter).toBeUndefined();
      });
    }

    // Defined only for a backend that writes in pieces (not skipped elsewhere: the test above runs instead).
    if (options.writer) describe('openWriter', () => {
      const writer = () => {
        expect(s.openWriter, 'this backend should write in pieces').toBeTypeOf('function');
        return s.openWriter!();
      };

      it('takes pieces in any order, at once, with gaps that read as zeros; nothing is listed before the commit', async () => {
        const a = randomBytes(5000);
        const b = randomBytes(MiB);
        const c = randomBytes(777);
        const w = writer();
        await Promise.all([w.write(c, 2 * MiB + 8192), w.write(b, 8192), w.write(a, 0)]);
        expect(await names(s, '')).toEqual([]);
        expect(await s.stat('w/obj')).toBeNull();
        const size = 2 * MiB + 8192 + c.length;
        await w.commit('w/obj', size);
        const want = Buffer.alloc(size);
        a.copy(want, 0);
        b.copy(want, 8192);
        c.copy(want, 2 * MiB + 8192);
        expect(sha256(await s.get('w/obj'))).toBe(sha256(want));
        expect(await names(s, '')).toEqual(['w/obj']);
        expect(equal(await s.getRange('w/obj', 8192, MiB), b)).toBe(true);
      });

      it('writes page-aligned pieces from page-aligned memory (a backup\'s chunks), partial last pages included', async () => {
        const mem = alignedBuffers(3, MiB);
        // Each piece at the next page after the last one ends, as a pack places blobs.
        const pieces: [Buffer, number][] = [];
        let at = 0;
        for (const len of [MiB, 12345, 4096, 1]) {
          pieces.push([randomBytes(len), at]);
          at = Math.ceil((at + len) / 4096) * 4096;
        }
        const w = writer();
        for (const [i, [want, pos]] of pieces.entries()) {
          const buf = mem[i % 3]!;
          want.copy(buf);
          await w.write(buf.subarray(0, want.length), pos);
        }
        const last = pieces[pieces.length - 1]!;
        const size = last[1] + last[0].length;
        await w.commit('aligned/obj', size);
        const back = await s.get('aligned/obj');
        expect(back.length).toBe(size);
        for (const [want, pos] of pieces) expect(equal(back.subarray(pos, pos + want.length), want)).toBe(true);
      });

      it('commits an empty object, and replaces an object of the same name', async () => {
        await s.put('r/obj', Buffer.from('old'));
        const w = writer();
        await w.write(Buffer.from('new!'), 0);
        await w.commit('r/obj', 4);
        expect((await s.get('r/obj')).toString()).toBe('new!');
        const e = writer();
        await e.commit('r/empty', 0);
        expect((await s.get('r/empty')).length).toBe(0);
      });

      it('stores nothing when the commit size is not where the pieces end (permanent), and keeps the old object', async () => {
        await s.put('sz/obj', Buffer.from('old'));
        for (const size of [99, 101]) {
          const w = writer();
          await w.write(randomBytes(100), 0);
          const err = await failure(w.commit('sz/obj', size));
          expectKind(err, 'permanent');
          expect(err.message).toMatch(/bytes/);
          await w.abort();
        }
        expect((await s.get('sz/obj')).toString()).toBe('old');
        expect(await names(s, '')).toEqual(['sz/obj']);
      });

      it('abort leaves nothing, may be repeated, and a writer aborted or committed takes no more', async () => {
        const w = writer();
        await w.write(randomBytes(10_000), 0);
        await w.abort();
        await w.abort();
        expect(await names(s, '')).toEqual([]);
        expectKind(await failure(w.write(Buffer.from('x'), 0)), 'permanent');
        expectKind(await failure(w.commit('ab/obj', 1)), 'permanent');
        expect(await s.stat('ab/obj')).toBeNull();
        const done = writer();
        await done.write(Buffer.from('x'), 0);
        await done.commit('ab/done', 1);
        await done.abort(); // after a commit: harmless
        expect((await s.get('ab/done')).toString()).toBe('x');
        expectKind(await failure(done.commit('ab/again', 1)), 'permanent');
      });

      it('rejects an invalid name on commit as INVALID_ARGUMENT, storing nothing', async () => {
        const w = writer();
        await w.write(Buffer.from('x'), 0);
        const err = await failure(w.commit('../escape', 1));
        expect(err.code).toBe(ErrorCodes.INVALID_ARGUMENT);
        await w.abort();
        expect(await names(s, '')).toEqual([]);
      });
    });

    describe('names', () => {
      const bad = ['', '/a', 'a/', 'a//b', '..', '../a', 'a/../b', './a', 'a/.', 'A', 'a b', 'a\\b', 'ä', 'a\0b', 'a:b', 'a%2fb', 'a?b'];

      it.each(bad.map((n) => [JSON.stringify(n), n]))('rejects %s in every method as INVALID_ARGUMENT, touching nothing', async (_label, n) => {
        const calls: Array<[string, () => Promise<unknown>]> = [
          ['put', () => s.put(n, Buffer.from('x'))],
          ['putStream', () => s.putStream(n, () => Readable.from([Buffer.from('x')]), 1)],
          ['get', () => s.get(n)],
          ['getRange', () => s.getRange(n, 0, 1)],
          ['stat', () => s.stat(n)],
          ['delete', () => s.delete(n)],
        ];
        for (const [op, call] of calls) {
          const err = await failure(call());
          expectKind(err, 'permanent');
          expect(err.code, op).toBe(ErrorCodes.INVALID_ARGUMENT);
          expect(err.message).toMatch(/invalid object name/);
        }
        expect(await names(s, '')).toEqual([]);
      });
    });

    describe('concurrency and consistency', () => {
      it('takes 64 concurrent puts of different names in the same new directory', async () => {
        const all = Array.from({ length: 64 }, (_, i) => `conc/new/${i}`);
        await Promise.all(all.map((n) => s.put(n, Buffer.from(n))));
        for (const n of all) expect((await s.get(n)).toString()).toBe(n);
        expect((await names(s, 'conc/')).length).toBe(64);
      });

      it('takes concurrent puts of the same name with the same content (content-addressed writers)', async () => {
        const data = randomBytes(100_000);
        await Promise.all(Array.from({ length: 8 }, () => s.put('same/name', data)));
        expect(equal(await s.get('same/name'), data)).toBe(true);
        expect(await names(s, 'same/')).toEqual(['same/name']);
      });

      it('reads its own writes and deletes at once (read-after-write)', async () => {
        for (let i = 0; i < 20; i++) {
          const data = randomBytes(i * 37);
          await s.put('raw/obj', data);
          expect(equal(await s.get('raw/obj'), data)).toBe(true);
          expect((await s.stat('raw/obj'))?.size).toBe(data.length);
          expect(await collect(s.list('raw/'))).toEqual([{ name: 'raw/obj', size: data.length }]);
          await s.delete('raw/obj');
          expect(await s.stat('raw/obj')).toBeNull();
          expect(await names(s, 'raw/')).toEqual([]);
        }
      });
    });
  });
}

// ---- helpers (exported for the backend-specific tests) ----

export async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of it) out.push(o);
  return out;
}

export async function names(s: Storage, prefix: string): Promise<string[]> {
  return (await collect(s.list(prefix))).map((o) => o.name);
}

/** The StorageError a promise rejects with (fails the test if it resolves or rejects with anything else). */
export async function failure(p: Promise<unknown>): Promise<StorageError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StorageError) return err;
    throw new Error(`expected a StorageError, got ${String(err)}`, { cause: err });
  }
  throw new Error('expected a StorageError, but the call succeeded');
}

export function expectKind(err: StorageError, kind: StorageErrorKind): void {
  expect(err, err.message).toBeInstanceOf(StorageError);
  expect(err.kind, err.message).toBe(kind);
}

/** `data` as a stream of `chunkSize` pieces. */
export function chunked(data: Buffer, chunkSize: number): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += chunkSize) yield data.subarray(i, i + chunkSize);
    })(),
  );
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && a.equals(b);
}

/** Runs `fn` over `items`, `width` at a time. */
export async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
}
