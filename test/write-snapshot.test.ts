import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { INDEX_FILES_BEFORE_COMPACTION, writeSnapshot, type TreeSink } from '../dist/agent/backup/write-snapshot.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { PackBuilder } from '../dist/agent/repository/pack.js';
import { sha256, type Tree } from '../dist/agent/repository/format.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { StorageError } from '../dist/agent/storage/storage.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * Writing a backup's tree and snapshot alone (write-snapshot.ts), on a memory storage, with a fake pack
 * sink that stores the tree's blob in a pack of its own when flushed, and logs what was asked of it.
 */

const checkpoint = {
  id: '20261123T000000000Z-0001',
  label: 'nightly',
  createdAt: '2026-11-23T00:00:00.000Z',
  trigger: 'manual' as const,
  pinned: false,
  path: '/nowhere',
  files: 2,
  bytes: 7,
  exclusiveBytes: 7,
};
const tree: Tree = {
  version: 1,
  files: [
    { name: 'CURRENT', size: 3, chunks: [sha256(Buffer.from('abc'))] },
    { name: 'MANIFEST-000001', size: 4, chunks: [sha256(Buffer.from('defg'))] },
  ],
};

/** A memory storage that logs every put and delete, in order. */
class Logged extends MemoryStorage {
  constructor(readonly log: string[]) {
    super();
  }
  override async put(name: string, data: Buffer): Promise<void> {
    this.log.push(`put ${name.split('/')[0]}`);
    return super.put(name, data);
  }
}

function sinkFor(repo: Repository, log: string[], failure: Error | null = null): TreeSink {
  const blobs: [string, Buffer][] = [];
  let storing: Promise<void> = Promise.resolve();
  return {
    place: async (id, data) => {
      log.push('place');
      blobs.push([id, Buffer.from(data)]);
    },
    flush: async () => {
      log.push('flush');
      const builder = new PackBuilder(Buffer.alloc(4096));
      for (const [id, data] of blobs.splice(0)) builder.add(id, data);
      const { id, data, blobs: entries } = builder.finish();
      storing = repo.uploadPack(id, data).then(async () => void (await repo.writeIndex([{ id, size: data.length, blobs: entries }])));
    },
    drain: async () => {
      await storing;
      log.push('drained');
    },
    check: () => {
      log.push('check');
      if (failure) throw failure;
    },
  };
}

describe('write snapshot', () => {
  it('stores the tree, waits for every pack, checks, and only then writes the snapshot that names the tree', async () => {
    const log: string[] = [];
    const storage = new Logged(log);
    // On the plain format: the tree's blob can be checked against its SHA-256 here (format 3 is tested through whole backups).
    const repo = await Repository.open(storage, { create: true, insecureNoEncryption: true });
    log.length = 0;
    const snapshot = await writeSnapshot({ repo, packs: sinkFor(repo, log), tree, checkpoint, pinned: true, bytes: 7 });
    expect(log).toEqual(['place', 'flush', 'put data', 'put index', 'drained', 'check', 'put snapshots']);

    const reader = await Repository.open(storage, TEST_REPO);
    await reader.loadIndex();
    const read = await reader.readSnapshot(snapshot.id);
    expect(read).toEqual(snapshot);
    expect(read).toMatchObject({ pinned: true, files: 2, bytes: 7, checkpoint: { id: checkpoint.id, label: 'nightly', createdAt: checkpoint.createdAt, trigger: 'manual' } });
    expect(JSON.parse((await reader.readBlob(read.tree, 'tree')).toString('utf8'))).toEqual(tree);
  });

  it('writes no snapshot when a pack failed to store or the backup was cancelled', async () => {
    const log: string[] = [];
    const storage = new Logged(log);
    const repo = await Repository.open(storage, { create: true, insecureNoEncryption: true });
    await expect(writeSnapshot({ repo, packs: sinkFor(repo, log, new Error('cancelled')), tree, checkpoint, pinned: false, bytes: 7 })).rejects.toThrow('cancelled');
    expect(log).not.toContain('put snapshots');
    expect(await repo.listSnapshots()).toEqual([]);
  });

  it('merges the index files past the threshold after the snapshot; a failed merge does not fail the backup', async () => {
    for (const deletes of ['work', 'fail']) {
      const log: string[] = [];
      const storage = new Logged(log);
      if (deletes === 'fail') {
        storage.delete = async (name) => {
          throw new StorageError('permanent', 'memory:', 'no deletes today', { op: 'delete', name });
        };
      }
      const repo = await Repository.open(storage, { create: true, insecureNoEncryption: true });
      const hex = () => randomBytes(32).toString('hex');
      for (let i = 0; i < INDEX_FILES_BEFORE_COMPACTION; i++) await repo.writeIndex([{ id: hex(), size: 10, blobs: [[hex(), 0, 10]] }]);
      log.length = 0;
      const snapshot = await writeSnapshot({ repo, packs: sinkFor(repo, log), tree, checkpoint, pinned: false, bytes: 7 });
      expect(log.indexOf('put snapshots')).toBeLessThan(log.lastIndexOf('put index'));
      let indexFiles = 0;
      for await (const _ of storage.list('index/')) indexFiles++;
      expect(indexFiles, deletes).toBe(deletes === 'work' ? 1 : INDEX_FILES_BEFORE_COMPACTION + 2);
      expect((await repo.readSnapshot(snapshot.id)).id).toBe(snapshot.id);
    }
  });
});
