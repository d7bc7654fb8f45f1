/**
 * An open lists the repository's keys while it reads the config (one round trip of an S3 open, not
 * two), reads the key objects at once, and makes a listing again that was made before a repository's
 * keys were stored (the repository made meanwhile: keys first, then the config) rather than calling the
 * password wrong. An object in keys/ that its listing says is larger than any key file is listed, never read,
 * and a listing of more keys than an open tries is refused before any is read.
 */
import { describe, expect, it } from 'vitest';
import { Repository } from '../dist/agent/repository/repository.js';
import { MAX_KEYS_TRIED, addKey, copyKeys, listKeys, removeKey } from '../dist/agent/repository/repository-keys.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { TEST_KDF, TEST_PASSWORD } from './support/test-password.js';

const password = async () => Buffer.from(TEST_PASSWORD);

/** `storage` with its calls logged in order: "get config", "config read", "list keys/". */
function logged(storage: MemoryStorage, log: string[]): MemoryStorage {
  return Object.assign(Object.create(storage) as MemoryStorage, {
    get: async (name: string) => {
      log.push(`get ${name}`);
      // Answered a turn of the event loop later, as a store's answer comes: a listing begun before it
      // was awaited has been called by then.
      await new Promise((r) => setImmediate(r));
      const data = await storage.get(name);
      log.push(`${name} read`);
      return data;
    },
    list: (prefix: string) => {
      log.push(`list ${prefix}`);
      return storage.list(prefix);
    },
  });
}

/** Whether `keys/` was listed before the config's read was answered. */
const listedDuringConfigRead = (log: string[]) => {
  const listed = log.indexOf('list keys/');
  return listed >= 0 && listed < log.indexOf('config read');
};

describe("an open's keys, listed beside its config", () => {
  it('encrypted and plain: keys/ is listed before the config is answered; one read one after the other is told apart', async () => {
    for (const plain of [false, true]) {
      const storage = new MemoryStorage();
      await (await Repository.open(storage, { create: true, cryptoThreads: 0, password, kdfCost: TEST_KDF, insecureNoEncryption: plain })).codec.close();
      const log: string[] = [];
      const repo = await Repository.open(logged(storage, log), { cryptoThreads: 0, password, insecureNoEncryption: plain });
      expect(repo.codec.encrypted).toBe(!plain);
      expect(listedDuringConfigRead(log), `${plain ? 'plain' : 'encrypted'}: ${log.join(', ')}`).toBe(true);
      await repo.codec.close();

      // Negative control: the config read first, then the keys listed (as an open did before).
      const after: string[] = [];
      const one = logged(storage, after);
      await one.get('config');
      await listKeys(one);
      expect(listedDuringConfigRead(after)).toBe(false);
    }
  });

  it('a repository of several keys: the key objects are read at once, in id order', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.open(storage, { create: true, cryptoThreads: 0, password, kdfCost: TEST_KDF });
    const { master } = repo.keyAccess();
    for (let i = 0; i < 3; i++) await addKey(storage, master, Buffer.from(`another password ${i}`), TEST_KDF);
    await repo.codec.close();
    const log: string[] = [];
    const keys = await listKeys(logged(storage, log));
    expect(keys.map((k) => k.id)).toEqual([...keys.map((k) => k.id)].sort());
    expect(keys).toHaveLength(4);
    // Every read asked for before the first answer: at once, not one after the other.
    const firstAnswer = log.findIndex((l) => l.endsWith(' read'));
    expect(log.slice(0, firstAnswer).filter((l) => l.startsWith('get keys/'))).toHaveLength(4);
    // Negative control: read one after the other, the second read is asked for after the first answer.
    const serial: string[] = [];
    const one = logged(storage, serial);
    for (const k of keys.slice(0, 2)) await one.get(`keys/${k.id}`);
    expect(serial.slice(0, serial.findIndex((l) => l.endsWith(' read'))).filter((l) => l.startsWith('get keys/'))).toHaveLength(1);
  });

  it('keys listed before they were stored: listed again, and the password opens it', async () => {
    const storage = new MemoryStorage();
    await (await Repository.open(storage, { create: true, cryptoThreads: 0, password, kdfCost: TEST_KDF })).codec.close();
    let keyListings = 0;
    // The first listing of keys/ sees none, as one made just before a maker stored them would.
    const late = Object.assign(Object.create(storage) as MemoryStorage, {
      list: (prefix: string) => (prefix === 'keys/' && keyListings++ === 0 ? new MemoryStorage().list(prefix) : storage.list(prefix)),
    });
    const repo = await Repository.open(late, { cryptoThreads: 0, password });
    expect(keyListings).toBe(2);
    expect(repo.codec.encrypted).toBe(true);
    await repo.codec.close();
  });

  it('a plain config beside keys is still refused (a downgrade), whichever answer comes first', async () => {
    const storage = new MemoryStorage();
    await (await Repository.open(storage, { create: true, cryptoThreads: 0, password, kdfCost: TEST_KDF })).codec.close();
    const plain = new MemoryStorage();
    await (await Repository.open(plain, { create: true, cryptoThreads: 0, insecureNoEncryption: true })).codec.close();
    await storage.put('config', await plain.get('config'));
    await expect(Repository.open(storage, { cryptoThreads: 0, insecureNoEncryption: true })).rejects.toMatchObject({ code: 'CORRUPT' });
    await expect(Repository.open(logged(storage, []), { cryptoThreads: 0, insecureNoEncryption: true })).rejects.toMatchObject({ code: 'CORRUPT' });
  });

  it('an object in keys/ larger than any key file is listed, not read (dropped if the listing lied), never copied; the real key still opens; it can be removed', async () => {
    const KEY_FILE_MAX_BYTES = 64 * 1024;
    const storage = new MemoryStorage();
    await (await Repository.open(storage, { create: true, cryptoThreads: 0, password, kdfCost: TEST_KDF })).codec.close();
    const big = '0'.repeat(32);
    const atBound = '1'.repeat(32);
    await storage.put(`keys/${big}`, Buffer.alloc(KEY_FILE_MAX_BYTES + 1, 0x7b));
    await storage.put(`keys/${atBound}`, Buffer.alloc(KEY_FILE_MAX_BYTES, 0x7b)); // the negative control: at the bound, read
    const log: string[] = [];
    const repo = await Repository.open(logged(storage, log), { cryptoThreads: 0, password });
    expect(repo.codec.encrypted).toBe(true);
    await repo.codec.close();
    expect(log).not.toContain(`get keys/${big}`);
    expect(log).toContain(`get keys/${atBound}`);
    const listed = await listKeys(storage);
    expect(listed.map((k) => [k.id, k.stored === null, k.file === null])).toEqual(
      expect.arrayContaining([
        [big, true, true],
        [atBound, false, true],
      ]),
    );
    // A listing that says less than the object holds: read, then dropped all the same.
    const lying = Object.assign(Object.create(storage) as MemoryStorage, {
      list: async function* (prefix: string) {
        for await (const o of storage.list(prefix)) yield { ...o, size: 1 };
      },
    });
    expect((await listKeys(lying)).find((k) => k.id === big)?.stored).toBeNull();
    const to = new MemoryStorage();
    expect(await copyKeys(storage, to)).toBe(listed.length - 1);
    expect(await to.stat(`keys/${big}`)).toBeNull();
    expect(await to.stat(`keys/${atBound}`)).not.toBeNull();
    await removeKey(storage, big);
    expect(await storage.stat(`keys/${big}`)).toBeNull();
  });

  it('a store stuffed with more key objects than an open tries: refused from the listing, none read; key list still reads them', async () => {
    const storage = new MemoryStorage();
    await (await Repository.open(storage, { create: true, cryptoThreads: 0, password, kdfCost: TEST_KDF })).codec.close();
    const planted = Array.from({ length: MAX_KEYS_TRIED }, (_, i) => `keys/${i.toString(16).padStart(32, '0')}`);
    for (const name of planted) await storage.put(name, Buffer.from('{"planted":true}'));
    const keyReads = (log: string[]) => log.filter((l) => l.startsWith('get keys/')).length;

    const log: string[] = [];
    const refused = Repository.open(logged(storage, log), { cryptoThreads: 0, password });
    await expect(refused).rejects.toMatchObject({ code: 'CORRUPT' });
    await expect(refused).rejects.toThrow(`${MAX_KEYS_TRIED + 1} key files`);
    expect(keyReads(log)).toBe(0);
    // key list reads every one, so that the operator sees what to remove.
    const listed: string[] = [];
    const all = await listKeys(logged(storage, listed));
    expect(all).toHaveLength(MAX_KEYS_TRIED + 1);
    expect(keyReads(listed)).toBe(MAX_KEYS_TRIED + 1);
    expect(all.filter((k) => k.file !== null)).toHaveLength(1);

    // The negative control: one planted object fewer, at the bound, every key is read and the password opens it.
    await storage.delete(planted[0]!);
    const opened: string[] = [];
    const repo = await Repository.open(logged(storage, opened), { cryptoThreads: 0, password });
    expect(repo.codec.encrypted).toBe(true);
    expect(keyReads(opened)).toBe(MAX_KEYS_TRIED);
    await repo.codec.close();
  });
});
