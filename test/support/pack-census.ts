import { readPackHeader } from '../../dist/agent/repository/pack.js';
import type { Storage } from '../../dist/agent/storage/storage.js';

/** What the packs of a repository hold, read from the packs themselves (their headers), not the index. */
export interface PackCensus {
  packs: Map<string, number>;
  bytes: number;
  /** Blob entries over all packs, and distinct blob ids: equal when no blob was stored twice. */
  entries: number;
  blobs: Set<string>;
}

export async function packCensus(storage: Storage): Promise<PackCensus> {
  const census: PackCensus = { packs: new Map(), bytes: 0, entries: 0, blobs: new Set() };
  for await (const obj of storage.list('data/')) {
    census.packs.set(obj.name.slice(obj.name.lastIndexOf('/') + 1), obj.size);
    census.bytes += obj.size;
    const header = readPackHeader(await storage.get(obj.name));
    for (const [id] of header.blobs) {
      census.entries++;
      census.blobs.add(id);
    }
  }
  return census;
}
