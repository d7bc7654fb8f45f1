import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * Index compaction (Repository.compactIndex): many index files become one, and a reader loading the
 * index while that happens still learns every pack. A storage whose reads take a random few ms makes the
 * reader's list-then-read and the compactor's write-then-delete interleave in every possible way.
 */

class SlowReads extends MemoryStorage {
  /** Reads of an object deleted after it was listed: the race the reader must survive. */
  static vanished = 0;
  override async get(name: string): Promise<Buffer> {
    await sleep(Math.floor(Math.random() * 4));
    try {
      return await super.get(name);
    } catch (err) {
      SlowReads.vanished++;
      throw err;
    }
  }
}

const hex = () => randomBytes(32).toString('hex');

async function repoWithIndexFiles(storage: MemoryStorage, files: number): Promise<Map<string, string>> {
  const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
  const where = new Map<string, string>(); // blob -> pack
  for (let f = 0; f < files; f++) {
    const packs = Array.from({ length: 1 + (f % 3) }, () => {
      const id = hex();
      const blobs = Array.from({ length: 3 }, (_, i) => [hex(), i * 100, 100] as [string, number, number]);
      for (const [b] of blobs) where.set(b, id);
      return { id, size: 300, blobs };
    });
    await repo.writeIndex(packs);
  }
  return where;
}

async function indexFiles(storage: MemoryStorage): Promise<string[]> {
  const names: string[] = [];
  for await (const o of storage.list('index/')) names.push(o.name);
  return names;
}

describe('index compaction', () => {
  it('leaves as many files as it finds up to the threshold, and one past it, listing every pack', async () => {
    const storage = new MemoryStorage();
    const where = await repoWithIndexFiles(storage, 40);
    const repo = await Repository.open(storage, TEST_REPO);
    expect(await repo.compactIndex(40)).toBe(0);
    expect(await indexFiles(storage)).toHaveLength(40);
    expect(await repo.compactIndex(32)).toBe(40);
    expect(await indexFiles(storage)).toHaveLength(1);
    const fresh = await Repository.open(storage, TEST_REPO);
    await fresh.loadIndex();
    expect(fresh.blobs.size).toBe(where.size);
    for (const [blob, pack] of where) expect(fresh.blobs.get(blob)?.pack).toBe(pack);
  });

  it('a reader loading the index while it is compacted learns every pack, every time', async () => {
    for (let round = 0; round < 20; round++) {
      const storage = new SlowReads();
      const where = await repoWithIndexFiles(storage, 36);
      const compactor = await Repository.open(storage, TEST_REPO);
      const reader = await Repository.open(storage, TEST_REPO);
      // Start both together, or the reader a little after the compactor.
      const [, replaced] = await Promise.all([
        (async () => {
          await sleep(round % 4);
          await reader.loadIndex();
        })(),
        compactor.compactIndex(32),
      ]);
      expect(replaced).toBe(36);
      expect(reader.blobs.size).toBe(where.size);
      for (const [blob, pack] of where) expect(reader.blobs.get(blob)?.pack).toBe(pack);
    }
    // The race really happened: some reads found their file gone and the reader listed again.
    expect(SlowReads.vanished).toBeGreaterThan(0);
  });

  it('two backups compacting at once lose nothing', async () => {
    const storage = new SlowReads();
    const where = await repoWithIndexFiles(storage, 40);
    const a = await Repository.open(storage, TEST_REPO);
    const b = await Repository.open(storage, TEST_REPO);
    const [byA, byB] = await Promise.all([a.compactIndex(32), b.compactIndex(32)]);
    // The race happened: each listed the files before the other had merged them, and merged them too.
    expect(byA).toBeGreaterThan(0);
    expect(byB).toBeGreaterThan(0);
    expect((await indexFiles(storage)).length).toBeLessThanOrEqual(2);
    const fresh = await Repository.open(storage, TEST_REPO);
    await fresh.loadIndex();
    expect(fresh.blobs.size).toBe(where.size);
  });
});
