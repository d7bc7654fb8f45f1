import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointRecord } from '../dist/shared/api.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { packName } from '../dist/agent/repository/format.js';
import { RetryStorage } from '../dist/agent/storage/retry-storage.js';
import { FaultStorage } from '../dist/agent/storage/fault-storage.js';
import type { S3Storage } from '../dist/agent/storage/s3-storage.js';
import { tempDir } from './support/processes.js';
import { emptyAndClose, s3TestStorage } from './support/s3-server.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * Restore from S3 (Swift's s3api) reads a pack it needs whole with one GET, streamed (never a buffer of
 * its size), and only the needed range of a pack it needs little of. Requests are counted on the wire:
 * an SDK middleware on the storage's own client records every HTTP request it sends.
 */

interface Sent {
  method: string;
  key: string;
  range: string | undefined;
}

/** Records every HTTP request the storage's S3 client sends (after signing: what goes on the wire). */
function countRequests(storage: S3Storage): Sent[] {
  const sent: Sent[] = [];
  storage['client'].middlewareStack.add(
    (next: (args: unknown) => Promise<unknown>) => async (args: { request: unknown }) => {
      const req = args.request as { method: string; path: string; headers: Record<string, string> };
      sent.push({ method: req.method, key: decodeURIComponent(req.path), range: req.headers.range ?? req.headers.Range });
      return next(args);
    },
    { step: 'finalizeRequest', name: 'countRequests' },
  );
  return sent;
}

function checkpointOf(dir: string, id: string): CheckpointRecord {
  return { id, path: dir, label: null, createdAt: new Date().toISOString(), trigger: 'manual' } as unknown as CheckpointRecord;
}

function expectSameFiles(a: string, b: string): void {
  const names = fs.readdirSync(a).sort();
  expect(fs.readdirSync(b).sort()).toEqual(names);
  for (const n of names) expect(fs.readFileSync(path.join(b, n)).equals(fs.readFileSync(path.join(a, n))), n).toBe(true);
}

describe('restore from S3', () => {
  const dir = tempDir('restore-s3');
  let s3: S3Storage;
  let sent: Sent[];
  let repo: Repository;
  const source = path.join(dir, 'source');
  let fullPacks = 0;

  beforeAll(async () => {
    // ~30 MB in files of table-like sizes (some not a whole number of chunks): four packs or more.
    fs.mkdirSync(source);
    for (let i = 0; i < 14; i++) fs.writeFileSync(path.join(source, `${String(i).padStart(6, '0')}.ldb`), randomBytes(2_117_734 + i * 1000));
    fs.writeFileSync(path.join(source, 'CURRENT'), 'MANIFEST-000002\n');
    s3 = s3TestStorage();
    sent = countRequests(s3);
    repo = await Repository.open(new RetryStorage(s3, { baseDelayMs: 1 }), { create: true, ...TEST_REPO });
  }, 120_000);

  afterAll(async () => {
    await emptyAndClose(s3);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads each fully needed pack with one GET and restores exactly', async () => {
    const record = await backupCheckpoint({ repo, checkpoint: checkpointOf(source, '20261123T000000000Z-aaaa'), cache: HashCache.load(null) });
    await repo.loadIndex();
    const packs = [...repo.packs.keys()];
    expect(packs.length).toBeGreaterThanOrEqual(4);

    sent.length = 0;
    const to = path.join(dir, 'restored');
    await restoreBackup({ repo, id: record.id, to });
    expectSameFiles(source, to);
    // The tree is read first, on its own (a ranged read of its blob); then each pack once.
    const treeAt = repo.blobs.get((await repo.readSnapshot(record.id)).tree)!;
    const treeRange = `bytes=${treeAt.offset}-${treeAt.offset + treeAt.length - 1}`;
    for (const pack of packs) {
      const gets = sent.filter((s) => s.method === 'GET' && s.key.endsWith(`/${packName(pack)}`) && !(pack === treeAt.pack && s.range === treeRange));
      expect(gets.length, `GETs of ${pack}`).toBe(1);
    }
    const dataGets = sent.filter((s) => s.method === 'GET' && s.key.includes('/data/'));
    expect(dataGets.length).toBe(packs.length + 1);
    fullPacks = packs.length;
  });

  it('reads only the needed range of a pack it needs one blob of', async () => {
    // A file that is the first chunk of a table already stored: its backup adds no data pack.
    const sparse = path.join(dir, 'sparse');
    fs.mkdirSync(sparse);
    const table = fs.readFileSync(path.join(source, '000003.ldb'));
    fs.writeFileSync(path.join(sparse, 'part'), table.subarray(0, 1024 * 1024));
    const record = await backupCheckpoint({ repo, checkpoint: checkpointOf(sparse, '20261123T000000001Z-aaaa'), cache: HashCache.load(null) });
    await repo.loadIndex();
    const tree = JSON.parse((await repo.readBlob((await repo.readSnapshot(record.id)).tree, 'tree')).toString('utf8')) as { files: { chunks: string[] }[] };
    const loc = repo.blobs.get(tree.files[0]!.chunks[0]!)!;

    sent.length = 0;
    const to = path.join(dir, 'restored-sparse');
    await restoreBackup({ repo, id: record.id, to });
    expectSameFiles(sparse, to);
    const gets = sent.filter((s) => s.method === 'GET' && s.key.endsWith(`/${packName(loc.pack)}`));
    expect(gets.map((g) => g.range)).toEqual([`bytes=${loc.offset}-${loc.offset + loc.length - 1}`]);
  });

  it('restores a file that compressed (a log) exactly: its chunk opens longer than it is stored', async () => {
    const logs = path.join(dir, 'logs');
    fs.mkdirSync(logs);
    fs.writeFileSync(path.join(logs, '000005.log'), Buffer.from('put key-0001 value-0001; '.repeat(12_000)));
    const record = await backupCheckpoint({ repo, checkpoint: checkpointOf(logs, '20261123T000000002Z-aaaa'), cache: HashCache.load(null) });
    await repo.loadIndex();
    const tree = JSON.parse((await repo.readBlob((await repo.readSnapshot(record.id)).tree, 'tree')).toString('utf8')) as { files: { chunks: string[] }[] };
    // The premise: stored far shorter than its 300,000 bytes.
    expect(repo.blobs.get(tree.files[0]!.chunks[0]!)!.length).toBeLessThan(30_000);
    const to = path.join(dir, 'restored-logs');
    await restoreBackup({ repo, id: record.id, to });
    expectSameFiles(logs, to);
  });

  it('goes on from where a download was cut, and restores exactly', async () => {
    const faulty = new FaultStorage(s3, [{ kind: 'reset', ops: ['getRange'], first: 3, afterBytes: 3 * 1024 * 1024 + 123 }]);
    const cutRepo = await Repository.open(new RetryStorage(faulty, { baseDelayMs: 1 }), TEST_REPO);
    const [snapshot] = (await cutRepo.listSnapshots()).filter((s) => s.checkpoint.id === '20261123T000000000Z-aaaa');
    sent.length = 0;
    const to = path.join(dir, 'restored-cut');
    await restoreBackup({ repo: cutRepo, id: snapshot!.id, to });
    expectSameFiles(source, to);
    expect(faulty.injected.getRange).toBe(3);
    // Each cut read went on with one GET of the rest, from the first byte not handed over.
    const dataGets = sent.filter((s) => s.method === 'GET' && s.key.includes('/data/'));
    expect(dataGets.length).toBe(fullPacks + 1 + 3);
  });
});
