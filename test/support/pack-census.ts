import { Repository } from '../../dist/agent/repository/repository.js';
import type { Storage } from '../../dist/agent/storage/storage.js';
import { TEST_REPO } from './test-password.js';

/** What the packs of a repository hold, read from the packs themselves (their headers), not the index. */
export interface PackCensus {
  packs: Map<string, number>;
  bytes: number;
  /** Blob entries over all packs, and distinct blob ids: equal when no blob was stored twice. */
  entries: number;
  blobs: Set<string>;
}

/** Reads every pack's header (opened with the repository's own codec: sealed headers need its keys). */
export async function packCensus(storage: Storage): Promise<PackCensus> {
  const repo = await Repository.open(storage, { ...TEST_REPO, cryptoThreads: 0 });
  const census: PackCensus = { packs: new Map(), bytes: 0, entries: 0, blobs: new Set() };
  for await (const obj of storage.list('data/')) {
    const id = obj.name.slice(obj.name.lastIndexOf('/') + 1);
    census.packs.set(id, obj.size);
    census.bytes += obj.size;
    for (const [blob] of repo.codec.readPackTail(id, await storage.get(obj.name))) {
      census.entries++;
      census.blobs.add(blob);
    }
  }
  return census;
}
