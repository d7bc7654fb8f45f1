import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../dist/shared/errors.js';
import { FaultStorage, type FaultRule } from '../dist/agent/storage/fault-storage.js';
import { LoggingStorage } from '../dist/agent/storage/logging-storage.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { RetryStorage, type RetryOptions } from '../dist/agent/storage/retry-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import type { S3StorageOptions } from '../dist/agent/storage/s3-storage.js';
import { FaultProxy, s3Server, s3TestStorage, type ProxyFault } from './support/s3-server.js';
import { collect, expectKind, failure, names } from './support/storage-conformance.js';

/** Quick retries for tests: the waits are real (no fake timers), just short. */
const FAST: RetryOptions = { maxAttempts: 4, baseDelayMs: 5, maxDelayMs: 20 };

/** Retry and fault injection over any storage: the same checks run over memory and over real S3. */
function retryChecks(label: string, makeInner: () => Promise<{ storage: Storage; close: () => Promise<void> }>): void {
  describe(`retry over fault injection: ${label}`, () => {
    let inner: { storage: Storage; close: () => Promise<void> };
    let faults: FaultStorage;
    let s: RetryStorage;
    const withRules = (rules: FaultRule[], options: RetryOptions = FAST) => {
      faults = new FaultStorage(inner.storage, rules);
      s = new RetryStorage(faults, options);
      return s;
    };

    beforeEach(async () => {
      inner = await makeInner();
    });
    afterEach(async () => {
      await inner.close();
    });

    it.each(['transient', 'reset', 'hang'] as const)('survives %s faults on the first attempts of every method', async (kind) => {
      withRules([{ kind, first: 2, hangMs: 30 }]);
      const data = randomBytes(5000);
      await s.put('f/obj', data);
      expect(faults.calls.put).toBe(3);
      expect((await s.get('f/obj')).equals(data)).toBe(true);
      expect(faults.calls.get).toBe(1); // the rule's first 2 calls are spent
      faults.setRules([{ kind, first: 2, hangMs: 30 }]);
      expect((await s.getRange('f/obj', 10, 20)).equals(data.subarray(10, 30))).toBe(true);
      expect(faults.calls.getRange).toBe(3);
      faults.setRules([{ kind, first: 2, hangMs: 30 }]);
      expect(await s.stat('f/obj')).toEqual({ name: 'f/obj', size: 5000 });
      faults.setRules([{ kind, first: 2, hangMs: 30 }]);
      expect(await names(s, 'f/')).toEqual(['f/obj']);
      faults.setRules([{ kind, first: 2, hangMs: 30 }]);
      await s.delete('f/obj');
      expect(faults.calls.delete).toBe(3);
      expect(await inner.storage.stat('f/obj')).toBeNull();
    });

    it('gives up after maxAttempts on a persistent transient fault, saying how many attempts it made', async () => {
      withRules([{ kind: 'transient', ops: ['get'] }]);
      await inner.storage.put('p/obj', Buffer.from('x'));
      const err = await failure(s.get('p/obj'));
      expectKind(err, 'transient');
      expect(err.code).toBe(ErrorCodes.STORAGE_UNAVAILABLE);
      expect(err.attempts).toBe(4);
      expect(err.message).toMatch(/gave up after 4 attempts/);
      expect(err.message).toContain('get p/obj');
      expect(err.message).toContain(inner.storage.description);
      expect(faults.calls.get).toBe(4);
    });

    it.each(['not-found', 'permanent'] as const)('never retries %s errors: exactly one call', async (kind) => {
      withRules([{ kind }]);
      for (const call of [() => s.get('n/x'), () => s.put('n/x', Buffer.from('x')), () => s.getRange('n/x', 0, 1), () => s.delete('n/x')]) {
        expectKind(await failure(call()), kind);
      }
      expect(faults.totalCalls()).toBe(4);
    });

    it('never retries a real not-found or an invalid name', async () => {
      withRules([]);
      expectKind(await failure(s.get('missing/obj')), 'not-found');
      expect(faults.calls.get).toBe(1);
      expectKind(await failure(s.put('Bad Name', Buffer.from('x'))), 'permanent');
      expect(faults.calls.put).toBe(1);
    });

    it('retries a put whose answer was lost after it was stored (an idempotent overwrite)', async () => {
      withRules([{ kind: 'reset', ops: ['put'], first: 1, after: true }]);
      const data = randomBytes(1000);
      await s.put('lost/obj', data);
      expect(faults.calls.put).toBe(2);
      expect((await inner.storage.get('lost/obj')).equals(data)).toBe(true);
    });

    it('reopens the stream for each putStream attempt', async () => {
      withRules([{ kind: 'transient', ops: ['putStream'], first: 2 }]);
      const data = randomBytes(3000);
      let opens = 0;
      await s.putStream('ps/obj', () => (opens++, Readable.from([data])), data.length);
      expect(faults.calls.putStream).toBe(3);
      expect(opens).toBe(1); // the faults fire before the inner storage opens it: only the successful attempt does
      faults.setRules([{ kind: 'reset', ops: ['putStream'], first: 2, after: true }]);
      await s.putStream('ps/obj2', () => (opens++, Readable.from([data])), data.length);
      expect(opens).toBe(4); // stored three times, the first two answers lost
      expect((await inner.storage.get('ps/obj2')).equals(data)).toBe(true);
    });

    it('resumes a listing that fails part way: every name exactly once, in order', async () => {
      const all = Array.from({ length: 30 }, (_, i) => `l/${String(i).padStart(2, '0')}`);
      for (const n of all) await inner.storage.put(n, Buffer.from(n));
      // Listings 1, 2 and 3 fail after 7, 15 and 25 names; the 4th completes.
      withRules(
        [7, 15, 25].map((afterItems): FaultRule => ({ kind: 'reset', ops: ['list'], first: 1, afterItems })),
        { ...FAST, maxAttempts: 2 },
      );
      // Each failure comes after progress, so even 2 attempts suffice: the count restarts on progress.
      expect(await names(s, 'l/')).toEqual(all);
      expect(faults.calls.list).toBe(4);
    });

    it('gives up a listing that makes no progress', async () => {
      await inner.storage.put('l/a', Buffer.from('a'));
      withRules([{ kind: 'transient', ops: ['list'] }]);
      const err = await failure(collect(s.list('l/')));
      expect(err.message).toMatch(/gave up after 4 attempts/);
      expect(faults.calls.list).toBe(4);
    });
  });
}

retryChecks('memory', async () => {
  const storage = new MemoryStorage();
  return { storage, close: () => storage.close() };
});

retryChecks('s3 (Swift)', async () => {
  const storage = s3TestStorage();
  return { storage, close: () => storage.close() };
});

describe('retry policy', () => {
  it('waits with exponential backoff and full jitter, capped, and logs each retry', async () => {
    const waits: number[] = [];
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }));
    const faults = new FaultStorage(new MemoryStorage(), [{ kind: 'transient' }]);
    const s = new RetryStorage(faults, {
      maxAttempts: 6,
      baseDelayMs: 100,
      maxDelayMs: 1000,
      random: () => 0.5,
      sleep: async (ms) => void waits.push(ms),
      logger,
    });
    await failure(s.get('x'));
    expect(waits).toEqual([50, 100, 200, 400, 500]); // 0.5 × min(1000, 100·2^(n-1))
    expect(lines.length).toBe(5);
    expect(lines[0]).toMatch(/"op":"get".*"attempt":1.*"maxAttempts":6/);
  });

  it('draws each wait anywhere in [0, cap): full jitter', async () => {
    const waits: number[] = [];
    const rolls = [0, 0.999, 0.25];
    const s = new RetryStorage(new FaultStorage(new MemoryStorage(), [{ kind: 'reset' }]), {
      maxAttempts: 4,
      baseDelayMs: 1000,
      random: () => rolls.shift() ?? 0,
      sleep: async (ms) => void waits.push(ms),
    });
    await failure(s.put('x', Buffer.from('x')));
    expect(waits).toEqual([0, 1998, 1000]);
  });

  it('does not retry what is not a StorageError (a bug), and maxAttempts 1 means no retry', async () => {
    class Buggy extends MemoryStorage {
      calls = 0;
      override async get(): Promise<Buffer> {
        this.calls++;
        throw new TypeError('bug');
      }
    }
    const buggy = new Buggy();
    await expect(new RetryStorage(buggy, FAST).get('x')).rejects.toThrow(TypeError);
    expect(buggy.calls).toBe(1);
    const faults = new FaultStorage(new MemoryStorage(), [{ kind: 'transient' }]);
    const err = await failure(new RetryStorage(faults, { maxAttempts: 1 }).get('x'));
    expect(err.message).not.toMatch(/gave up/);
    expect(faults.calls.get).toBe(1);
  });

  it('survives random faults (p = 0.3) on hundreds of calls, deterministically', async () => {
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const faults = new FaultStorage(new MemoryStorage(), [{ kind: 'transient', probability: 0.3 }], rand);
    const s = new RetryStorage(faults, { maxAttempts: 12, baseDelayMs: 0 });
    for (let i = 0; i < 100; i++) await s.put(`r/${i}`, Buffer.from(String(i)));
    for (let i = 0; i < 100; i++) expect((await s.get(`r/${i}`)).toString()).toBe(String(i));
    expect((await names(s, 'r/')).length).toBe(100);
    expect(faults.injected.put + faults.injected.get).toBeGreaterThan(30);
  });

  it('logs every attempt below the retries (logging inside retry), with sizes and no data', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }));
    const faults = new FaultStorage(new MemoryStorage(), [{ kind: 'transient', first: 1 }]);
    const s = new RetryStorage(new LoggingStorage(faults, logger), { ...FAST, logger });
    await s.put('log/x', Buffer.from('secret-content'));
    const debug = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 20);
    expect(debug.map((l) => [l.op, l.name, l.bytes, l.kind])).toEqual([
      ['put', 'log/x', undefined, 'transient'],
      ['put', 'log/x', 14, undefined],
    ]);
    expect(debug.every((l) => typeof l.ms === 'number')).toBe(true);
    expect(lines.join('')).not.toContain('secret-content');
  });
});

/**
 * Real network faults between the real S3 client and Swift: a loopback TCP proxy that resets, closes,
 * hangs or cuts connections. The S3 backend (1 s inactivity timeout) under the retry wrapper must get
 * through transient trouble, and fail with a clear transient error, in bounded time, when it persists.
 */
describe('s3 through a faulty network (TCP proxy in front of Swift)', () => {
  let proxy: FaultProxy;
  let storages: Storage[] = [];

  /** A retrying S3 storage whose every connection goes through a new proxy: connection i gets plan[i]. */
  async function through(plan: ProxyFault[], then: ProxyFault, retry: RetryOptions, prefix?: string, options: Partial<S3StorageOptions> = {}): Promise<RetryStorage> {
    proxy = FaultProxy.forEndpoint(s3Server().endpoint, plan, then);
    const endpoint = await proxy.start();
    const backend = s3TestStorage({ endpoint, timeoutMs: 1000, connectTimeoutMs: 1000, ...(prefix ? { prefix } : {}), ...options });
    storages.push(backend);
    return new RetryStorage(backend, retry);
  }

  const prefixOf = (st: Storage) => st.description.split('/').slice(3).join('/');

  afterEach(async () => {
    for (const st of storages) await st.close();
    storages = [];
    await proxy?.stop();
  });

  it('gets through resets, hang-ups and a hung server on a put, and a cut download on a get', async () => {
    const started = Date.now();
    const retry: RetryOptions = { maxAttempts: 5, baseDelayMs: 20, maxDelayMs: 100 };
    const data = randomBytes(256 * 1024);
    // Each scenario gets a fresh client (no pooled connection) and a proxy with its own plan.
    const s = await through(['reset', 'close', 'hang'], 'pass', retry);
    await s.put('net/obj', data);
    expect(proxy.seen).toEqual(['reset', 'close', 'hang', 'pass']);
    await proxy.stop();

    const s2 = await through([{ truncate: 64 * 1024 }, 'reset'], 'pass', retry, prefixOf(s));
    const back = await s2.get('net/obj');
    expect(back.equals(data)).toBe(true);
    expect(proxy.seen).toEqual([{ truncate: 64 * 1024 }, 'reset', 'pass']);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('fails with a clear transient error after its attempts when every connection is reset', async () => {
    const s = await through([], 'reset', { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 });
    const started = Date.now();
    const err = await failure(s.put('net/x', Buffer.from('x')));
    expectKind(err, 'transient');
    expect(err.code).toBe(ErrorCodes.STORAGE_UNAVAILABLE);
    expect(err.message).toMatch(/gave up after 3 attempts/);
    expect(err.message).toMatch(/ECONNRESET|socket hang up/);
    expect(proxy.seen.length).toBe(3);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('fails with a timeout, never hangs, when the server accepts connections but never answers', async () => {
    const s = await through([], 'hang', { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 });
    const started = Date.now();
    const err = await failure(s.get('net/x'));
    const elapsed = Date.now() - started;
    expectKind(err, 'transient');
    expect(err.message).toMatch(/timed out: no data for 1000 ms/);
    expect(err.message).toMatch(/gave up after 3 attempts/);
    expect(proxy.seen).toEqual(['hang', 'hang', 'hang']);
    expect(elapsed).toBeLessThan(30_000); // it ends: 3 × 1 s timeouts, with a wide margin for a loaded machine
  });

  it('fails a multipart upload cleanly, leaving no object, when new connections keep being reset', async () => {
    // The first connection works (and is reused from the pool); every other one is reset. Parts go up in
    // parallel, so each attempt needs a second connection and fails. (12 MiB is one PutObject by default.)
    const s = await through(['pass'], 'reset', { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 20 }, undefined, { multipartThreshold: 8 * 1024 * 1024 });
    const data = randomBytes(12 * 1024 * 1024);
    const started = Date.now();
    const err = await failure(s.putStream('net/big', () => Readable.from([data]), data.length));
    expectKind(err, 'transient');
    expect(err.message).toMatch(/gave up after 2 attempts/);
    expect(Date.now() - started).toBeLessThan(30_000);
    const direct = s3TestStorage({ prefix: prefixOf(s) });
    storages.push(direct);
    expect(await direct.stat('net/big')).toBeNull();
  });
});
