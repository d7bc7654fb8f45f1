import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { INDEX_DELAY_MS, PackPlacer } from '../dist/agent/backup/pack-placer.js';
import { RateLimiter } from '../dist/agent/backup/rate-limiter.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { readPackHeader } from '../dist/agent/repository/pack.js';
import { CHUNK_SIZE, PACK_TARGET_SIZE, packName, sha256, type IndexFile } from '../dist/agent/repository/format.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { StorageError, type Storage } from '../dist/agent/storage/storage.js';
import { tempDir } from './support/processes.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * Placing blobs into packs alone (pack-placer.ts), on a memory storage (and a directory where a temp
 * file is what is checked): dedup, where packs are cut, index files shared by the packs stored close
 * together, the same packs streamed or buffered, backpressure, failures and cancels.
 */

const BLOBS_PER_PACK = PACK_TARGET_SIZE / CHUNK_SIZE; // whole chunks fill a pack exactly

/** A memory storage that stores objects whole only (as S3 does): packs are buffered. */
class WholeObjects extends MemoryStorage {
  constructor() {
    super('memory:whole');
    Object.defineProperty(this, 'openWriter', { value: undefined });
  }
}

/** Pack puts wait at a gate the test opens, one at a time or all. */
class GatedPuts extends WholeObjects {
  readonly gates: (() => void)[] = [];
  started = 0;
  active = 0;
  maxActive = 0;
  override async put(name: string, data: Buffer): Promise<void> {
    if (!name.startsWith('data/')) return super.put(name, data);
    this.started++;
    this.maxActive = Math.max(this.maxActive, ++this.active);
    await new Promise<void>((open) => this.gates.push(open));
    this.active--;
    return super.put(name, data);
  }
}

/** Pack puts fail permanently, after the first `succeed` of them. */
class FailingPuts extends WholeObjects {
  constructor(private succeed = 0) {
    super();
  }
  override async put(name: string, data: Buffer): Promise<void> {
    if (name.startsWith('data/') && this.succeed-- <= 0) throw new StorageError('permanent', this.description, 'disk on fire', { op: 'put', name });
    return super.put(name, data);
  }
}

/** The packs the index files name. */
async function indexedPacks(storage: Storage): Promise<string[]> {
  const ids: string[] = [];
  for await (const { name } of storage.list('index/')) {
    for (const pack of (JSON.parse((await storage.get(name)).toString('utf8')) as IndexFile).packs) ids.push(pack.id);
  }
  return ids.sort();
}

/** Every microtask queued so far, and those they queue, have run (the memory storage only uses those). */
const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

const chunks = (n: number) => Array.from({ length: n }, () => randomBytes(CHUNK_SIZE));

async function placerOn(storage: Storage, options: { concurrency?: number; signal?: AbortSignal } = {}) {
  // The placer's mechanics, on the plain format: it stores blobs as it is given them (sealing is the
  // backup's, before placing: format 3 is tested through whole backups).
  const repo = await Repository.open(storage, { create: true, insecureNoEncryption: true });
  const stored: number[] = [];
  const placer = new PackPlacer({
    repo,
    concurrency: options.concurrency ?? 2,
    limiter: new RateLimiter(null),
    ...(options.signal ? { signal: options.signal } : {}),
    cancelled: () => new Error('cancelled'),
    onPackStored: (bytes) => stored.push(bytes),
  });
  return { repo, placer, stored };
}

async function objects(storage: Storage, prefix: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const { name } of storage.list(prefix)) out.set(name, await storage.get(name));
  return out;
}

describe('pack placer', () => {
  const dir = tempDir('pack-placer');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('stores each blob once, in packs cut at the target size, packs stored together sharing an index file', async () => {
    const storage = new MemoryStorage();
    const { placer, stored } = await placerOn(storage);
    const data = chunks(2 * BLOBS_PER_PACK + 3);
    // The first blob again, while its pack is being filled (not yet indexed), and at the end.
    for (const d of [data[0]!, ...data, data[0]!]) await placer.place(sha256(d), d);
    await placer.flush();
    await placer.drain();
    placer.check();
    expect(placer.blobsStored).toBe(data.length);
    expect(placer.packsStored).toBe(3);

    const packs = await objects(storage, 'data/');
    expect([...packs.values()].map((p) => readPackHeader(p).blobs.length).sort()).toEqual([3, BLOBS_PER_PACK, BLOBS_PER_PACK]);
    expect(stored.sort()).toEqual([...packs.values()].map((p) => p.length).sort());
    // Stored within INDEX_DELAY_MS of each other: one index file names all three (one request, not three).
    expect((await objects(storage, 'index/')).size).toBe(1);
    expect(await indexedPacks(storage)).toEqual([...packs.keys()].map((n) => n.split('/').at(-1)!).sort());

    // A later run knows them from the index, and places none of them again.
    const again = await placerOn(storage);
    await again.repo.loadIndex();
    for (const d of data) expect((await again.repo.readBlob(sha256(d), 'data')).equals(d)).toBe(true);
    for (const d of data) await again.placer.place(sha256(d), d);
    await again.placer.flush();
    await again.placer.drain();
    expect(again.placer.blobsStored).toBe(0);
    expect((await objects(storage, 'data/')).size).toBe(3);
    await placer.close();
    await again.placer.close();
  });

  it('gives the same packs streamed into a storage that writes in pieces as buffered and stored whole', async () => {
    // Blobs that end off the page grid, so that the packs have gaps.
    const data = [randomBytes(5), randomBytes(CHUNK_SIZE), randomBytes(4097), ...chunks(BLOBS_PER_PACK), randomBytes(100)];
    const packsOf = async (storage: Storage) => {
      const { placer } = await placerOn(storage);
      for (const d of data) await placer.place(sha256(d), d);
      await placer.flush();
      await placer.drain();
      await placer.close();
      return objects(storage, 'data/');
    };
    const streamed = new MemoryStorage();
    expect(typeof streamed.openWriter).toBe('function');
    const a = await packsOf(streamed);
    const b = await packsOf(new WholeObjects());
    expect([...a.keys()]).toEqual([...b.keys()]);
    expect(a.size).toBe(2);
    for (const [name, pack] of a) expect(pack.equals(b.get(name)!), name).toBe(true);
  });

  it('never stores more than `concurrency` packs at once: the next full pack waits for a slot', async () => {
    const storage = new GatedPuts();
    const { placer } = await placerOn(storage, { concurrency: 2 });
    const data = chunks(3 * BLOBS_PER_PACK + 1);
    let placed = 0;
    const placing = (async () => {
      for (const d of data) {
        await placer.place(sha256(d), d);
        placed++;
      }
    })();
    await settled();
    // Two packs are being stored; the third is full, and its last blob's place waits for a slot.
    expect(storage.started).toBe(2);
    expect(placed).toBe(3 * BLOBS_PER_PACK - 1);
    storage.gates.shift()!();
    await settled();
    expect(storage.started).toBe(3);
    expect(placed).toBe(data.length);
    expect(storage.active).toBe(2);
    while (storage.gates.length > 0 || storage.active > 0) {
      storage.gates.shift()?.();
      await settled();
    }
    await placing;
    await placer.flush();
    for (;;) {
      const drained = placer.drain();
      await settled();
      const open = storage.gates.shift();
      if (!open) {
        await drained;
        break;
      }
      open();
      await drained;
    }
    expect(placer.packsStored).toBe(4);
    expect(storage.maxActive).toBe(2);
    await placer.close();
  });

  it('a pack that fails to store fails the next flush and check, and nothing of it is indexed', async () => {
    const storage = new FailingPuts();
    const { placer } = await placerOn(storage);
    for (const d of chunks(BLOBS_PER_PACK)) await placer.place(sha256(d), d);
    await placer.drain();
    expect(() => placer.check()).toThrow('disk on fire');
    const d = randomBytes(10);
    await placer.place(sha256(d), d);
    await expect(placer.flush()).rejects.toThrow('disk on fire');
    await placer.close();
    expect((await objects(storage, 'index/')).size).toBe(0);
    expect(placer.packsStored).toBe(0);
  });

  it('indexes a stored pack within INDEX_DELAY_MS while the backup goes on, without a drain', async () => {
    const storage = new WholeObjects();
    const { placer } = await placerOn(storage);
    for (const d of chunks(BLOBS_PER_PACK + 1)) await placer.place(sha256(d), d); // one full pack, one more blob
    const deadline = Date.now() + 20 * INDEX_DELAY_MS;
    while ((await indexedPacks(storage)).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const [name] = (await objects(storage, 'data/')).keys();
    expect(await indexedPacks(storage)).toEqual([name!.split('/').at(-1)]);
    await placer.close();
  });

  it('a backup that fails indexes the packs it stored before the failure (close), so the next run reuses them', async () => {
    const storage = new FailingPuts(1);
    const { placer } = await placerOn(storage, { concurrency: 1 });
    // The second pack is handed over full (and fails); no drain: a backup that fails goes straight to close.
    for (const d of chunks(2 * BLOBS_PER_PACK)) await placer.place(sha256(d), d);
    await placer.close();
    expect(() => placer.check()).toThrow('disk on fire');
    const stored = [...(await objects(storage, 'data/')).keys()];
    expect(stored).toHaveLength(1);
    expect((await indexedPacks(storage)).map(packName)).toEqual(stored);
  });

  it('a cancel stops placing, and close leaves nothing of the pack being filled (no temp file)', async () => {
    const root = path.join(dir, 'repo');
    const abort = new AbortController();
    const { placer } = await placerOn(new DirStorage(root), { signal: abort.signal });
    const d = randomBytes(CHUNK_SIZE);
    await placer.place(sha256(d), d);
    expect(fs.readdirSync(root).filter((n) => n.endsWith('.tmp'))).toHaveLength(1); // streamed into a temp file
    abort.abort();
    const e = randomBytes(10);
    await expect(placer.place(sha256(e), e)).rejects.toThrow('cancelled');
    expect(() => placer.check()).toThrow('cancelled');
    await placer.close();
    expect(fs.readdirSync(root).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(fs.existsSync(path.join(root, 'data'))).toBe(false);
  });
});
