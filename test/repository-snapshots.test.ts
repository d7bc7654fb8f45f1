/**
 * Repository.listSnapshots: every snapshot listed and read, several reads at once (one after the other,
 * a hundred backups on S3 were a hundred round trips), in id order; a snapshot pruned between the
 * listing and its read is left out, not an error (`backup list` beside a prune).
 */
import { describe, expect, it } from 'vitest';
import { Repository } from '../dist/agent/repository/repository.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import type { Snapshot } from '../dist/agent/repository/format.js';
import { TEST_KDF, TEST_PASSWORD } from './support/test-password.js';

/** Counts the snapshot reads in flight; deletes `vanish` just before it is read (a prune meanwhile). */
class WatchedStorage extends MemoryStorage {
  inFlight = 0;
  mostInFlight = 0;
  vanish: string | null = null;

  override async get(name: string): Promise<Buffer> {
    if (!name.startsWith('snapshots/')) return super.get(name);
    if (name === this.vanish) await this.delete(name);
    this.inFlight++;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    try {
      // A turn of the event loop, as a store's answer takes: the other reads may start meanwhile.
      await new Promise((resolve) => setImmediate(resolve));
      return await super.get(name);
    } finally {
      this.inFlight--;
    }
  }
}

function snapshot(i: number, tree: string): Snapshot {
  const at = new Date(Date.UTC(2026, 11, 6, 10, 0, i)).toISOString();
  const id = `20261206t1000${String(i).padStart(2, '0')}000z-${(0x1000 + i).toString(16)}`;
  return { version: 1, id, createdAt: at, hostname: 'h', pinned: false, checkpoint: { id: `c${i}`, label: null, createdAt: at, trigger: 'manual' }, tree, files: 1, bytes: 1 };
}

describe('Repository.listSnapshots', () => {
  it('reads the snapshots several at once, in id order, and leaves out one pruned meanwhile', async () => {
    const storage = new WatchedStorage();
    const repo = await Repository.open(storage, { create: true, cryptoThreads: 0, password: async () => Buffer.from(TEST_PASSWORD), kdfCost: TEST_KDF });
    const tree = await repo.codec.blobId('tree', Buffer.from('{}'));
    // Written in reverse: the order comes from the ids, not from the writes.
    const written = Array.from({ length: 40 }, (_, i) => snapshot(i, tree));
    for (const s of [...written].reverse()) await repo.writeSnapshot(s);

    const all = await repo.listSnapshots();
    expect(all.map((s) => s.id)).toEqual(written.map((s) => s.id));
    expect(all[7]).toEqual(written[7]);
    expect(storage.mostInFlight).toBeGreaterThan(1);
    expect(storage.mostInFlight).toBeLessThanOrEqual(16);

    storage.vanish = `snapshots/${written[13]!.id}`;
    const after = await repo.listSnapshots();
    expect(after.map((s) => s.id)).toEqual(written.filter((_, i) => i !== 13).map((s) => s.id));
    // The control: read by its id, the pruned one is NOT_FOUND (what the listing must not throw).
    await expect(repo.readSnapshot(written[13]!.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await repo.codec.close();
  });
});
