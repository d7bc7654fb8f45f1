/**
 * OpenOptions.startThreads: an encrypted repository's crypto threads start while its key is derived
 * (the CLI's restore, verify, `backup changes` and a copy's source open so, and the bench's restore),
 * and its codec works with that pool. Where the open
 * fails, the pool is stopped; nothing starts for a repository that is not encrypted, nor without the
 * option. The pool's own methods are wrapped to record what happened and in which order, on real
 * worker threads.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CryptoPool } from '../dist/agent/repository/crypto-pool.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { TEST_KDF, TEST_PASSWORD } from './support/test-password.js';

type Event = { what: 'start' | 'close' | 'call'; pool: CryptoPool } | { what: 'password' };
let events: Event[] = [];
const original = { start: CryptoPool.prototype.start, close: CryptoPool.prototype.close, call: CryptoPool.prototype.call };

beforeEach(() => {
  events = [];
  CryptoPool.prototype.start = function (this: CryptoPool) {
    events.push({ what: 'start', pool: this });
    original.start.call(this);
  };
  CryptoPool.prototype.close = function (this: CryptoPool) {
    events.push({ what: 'close', pool: this });
    return original.close.call(this);
  };
  CryptoPool.prototype.call = function (this: CryptoPool, ...args: Parameters<CryptoPool['call']>) {
    events.push({ what: 'call', pool: this });
    return original.call.apply(this, args);
  } as CryptoPool['call'];
});

afterEach(() => {
  Object.assign(CryptoPool.prototype, original);
});

/** A password source that records when it is asked. */
function password(value = TEST_PASSWORD): () => Promise<Buffer> {
  return async () => {
    events.push({ what: 'password' });
    return Buffer.from(value);
  };
}

const started = () => events.filter((e) => e.what === 'start').map((e) => (e as { pool: CryptoPool }).pool);
const closed = () => events.filter((e) => e.what === 'close').map((e) => (e as { pool: CryptoPool }).pool);

describe('crypto threads started while the key is derived (startThreads)', () => {
  it('a repository made with it: the pool starts before the password is read, and its codec seals and opens with that pool', async () => {
    const repo = await Repository.open(new MemoryStorage(), { create: true, startThreads: true, cryptoThreads: 2, password: password(), kdfCost: TEST_KDF });
    try {
      expect(events.map((e) => e.what).slice(0, 2)).toEqual(['start', 'password']);
      const [pool] = started();
      const data = Buffer.from('a blob sealed by the early pool');
      const id = await repo.codec.blobId('data', data);
      const sealed = await repo.codec.sealBlob('data', id, data, 'try');
      expect((await repo.codec.openBlob('data', id, sealed, data.length)).toString()).toBe(data.toString());
      const calls = events.filter((e) => e.what === 'call');
      expect(calls.length).toBeGreaterThanOrEqual(2);
      for (const c of calls) expect((c as { pool: CryptoPool }).pool).toBe(pool);
      expect(started()).toHaveLength(1);
      expect(closed()).toHaveLength(0);
    } finally {
      await repo.codec.close();
    }
  });

  it('an existing repository: started before the password is read, used after; a wrong password stops it', async () => {
    const storage = new MemoryStorage();
    const made = await Repository.open(storage, { create: true, cryptoThreads: 0, password: password(), kdfCost: TEST_KDF });
    const data = Buffer.from('a blob sealed without threads');
    const id = await made.codec.blobId('data', data);
    const sealed = await made.codec.sealBlob('data', id, data, 'try');
    events = [];
    const repo = await Repository.open(storage, { startThreads: true, cryptoThreads: 2, password: password() });
    try {
      expect(events.map((e) => e.what).slice(0, 2)).toEqual(['start', 'password']);
      expect((await repo.codec.openBlob('data', id, sealed, data.length)).toString()).toBe(data.toString());
      const calls = events.filter((e) => e.what === 'call');
      expect(calls).toHaveLength(1);
      expect((calls[0] as { pool: CryptoPool }).pool).toBe(started()[0]);
    } finally {
      await repo.codec.close();
    }
    events = [];
    await expect(Repository.open(storage, { startThreads: true, cryptoThreads: 2, password: password('not the password') })).rejects.toMatchObject({ code: 'WRONG_PASSWORD' });
    expect(started()).toHaveLength(1);
    expect(closed()).toEqual(started());
  });

  it('nothing starts without the option, with no threads, or for a repository that is not encrypted', async () => {
    const storage = new MemoryStorage();
    const made = await Repository.open(storage, { create: true, password: password(), kdfCost: TEST_KDF });
    await made.codec.close();
    events = [];
    const without = await Repository.open(storage, { password: password() });
    expect(started()).toHaveLength(0);
    await without.codec.close();
    const noThreads = await Repository.open(storage, { startThreads: true, cryptoThreads: 0, password: password() });
    expect(started()).toHaveLength(0);
    await noThreads.codec.close();
    const plain = await Repository.open(new MemoryStorage(), { create: true, startThreads: true, insecureNoEncryption: true });
    expect(plain.codec.encrypted).toBe(false);
    expect(started()).toHaveLength(0);
  });
});
