/**
 * Making a repository never stores a config over one that is there. A creator looks for a config and
 * the repository's objects, finds none, then derives its key (scrypt: ~0.5 s at the default cost); a
 * repository that appears meanwhile — another creator's, or the old one at a location that was
 * unreachable when it looked empty (a replica's directory swapped away, a mount coming back) — is
 * opened, and the creator's own key is deleted. Stored over, its config would seal under a new master
 * key that opens none of the objects already there: every one of them unreadable from then on.
 */
import { describe, expect, it } from 'vitest';
import { Repository } from '../dist/agent/repository/repository.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { StorageError, type ObjectInfo, type Storage } from '../dist/agent/storage/storage.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * `storage` as a creator sees it while the location is unreachable-but-empty-looking: no config, nothing
 * listed — until the creator stores its key (the location is back). `statToo`: the config stays hidden
 * from stat as well (the negative control: then nothing tells the creator, and it stores over).
 */
function emptyUntilKey(storage: Storage, statToo = false): Storage {
  let back = false;
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop === 'put') {
        return async (name: string, data: Buffer) => {
          await target.put(name, data);
          if (name.startsWith('keys/')) back = true;
        };
      }
      if (prop === 'get') {
        return async (name: string) => {
          if (!back && name === 'config') throw new StorageError('not-found', target.description, 'no such object', { op: 'get', name });
          return target.get(name);
        };
      }
      if (prop === 'stat') {
        return async (name: string): Promise<ObjectInfo | null> => (statToo && name === 'config' ? null : target.stat(name));
      }
      if (prop === 'list') {
        return (prefix: string): AsyncIterable<ObjectInfo> => (back ? target.list(prefix) : (async function* () {})());
      }
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

async function existingRepository(): Promise<{ storage: MemoryStorage; first: Repository; keys: string[] }> {
  const storage = new MemoryStorage();
  const first = await Repository.open(storage, { create: true, cryptoThreads: 0, ...TEST_REPO });
  await first.putObject('wal/t/mark/one', Buffer.from('an object sealed under the first master key'));
  const keys: string[] = [];
  for await (const o of storage.list('keys/')) keys.push(o.name);
  return { storage, first, keys };
}

describe('creating a repository', () => {
  it('opens a repository that appeared while its key was derived, and deletes its own key', async () => {
    const { storage, first, keys } = await existingRepository();
    const config = await storage.get('config');
    const second = await Repository.open(emptyUntilKey(storage), { create: true, cryptoThreads: 0, ...TEST_REPO });
    expect(second.config.id).toBe(first.config.id);
    expect((await storage.get('config')).equals(config)).toBe(true);
    const after: string[] = [];
    for await (const o of storage.list('keys/')) after.push(o.name);
    expect(after).toEqual(keys);
    expect((await second.getObject('wal/t/mark/one')).toString()).toBe('an object sealed under the first master key');
    await first.codec.close();
    await second.codec.close();
  });

  it('negative control: a creator that cannot see the config stores over it, and the old objects no longer open', async () => {
    const { storage, first } = await existingRepository();
    const second = await Repository.open(emptyUntilKey(storage, true), { create: true, cryptoThreads: 0, ...TEST_REPO });
    expect(second.config.id).not.toBe(first.config.id);
    await expect(second.getObject('wal/t/mark/one')).rejects.toThrow(/does not authenticate/);
    await first.codec.close();
    await second.codec.close();
  });
});
