import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { verifyRepository } from '../dist/agent/backup/verify-repository.js';
import { BLOB_ALIGN, CHUNK_SIZE } from '../dist/agent/repository/format.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import type { CheckpointRecord } from '../dist/shared/index.js';
import { tempDir } from './support/processes.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * The pack layout (FORMAT.md): every blob starts on a BLOB_ALIGN boundary, zeros in the gaps, the header
 * right after the last blob. Packs are made two ways, streamed chunk by chunk into a storage that writes
 * in pieces (directory, memory) or copied into a buffer and stored whole (S3; here a memory storage
 * without openWriter): both must give packs of that layout that verify and restore the same files.
 */

const MiB = 1024 * 1024;
// Around the page and chunk boundaries, then many odd sizes: enough packs that a reused pack buffer
// has old bytes wherever a gap falls.
const SIZES = [0, 1, 4095, 4096, 4097, MiB - 1, MiB, MiB + 5, 3 * MiB + 4096 * 3 + 17, 9 * MiB + 3];
for (let i = 0; i < 60; i++) SIZES.push(300_000 + i * 40_999);

describe('pack layout', () => {
  const dir = tempDir('pack-layout');
  const files = new Map<string, Buffer>();
  const checkpoint: CheckpointRecord = {
    id: '20261123T000000000Z-0001',
    label: null,
    createdAt: '2026-11-23T00:00:00.000Z',
    trigger: 'manual',
    pinned: false,
    path: path.join(dir, 'checkpoint'),
    files: SIZES.length,
    bytes: 0,
    exclusiveBytes: 0,
  };

  beforeAll(() => {
    fs.mkdirSync(checkpoint.path);
    for (const [i, size] of SIZES.entries()) {
      const data = randomBytes(size);
      const name = `${String(i).padStart(6, '0')}.ldb`;
      fs.writeFileSync(path.join(checkpoint.path, name), data);
      files.set(name, data);
    }
    // The same content twice: stored once.
    fs.writeFileSync(path.join(checkpoint.path, 'copy.ldb'), files.get('000008.ldb')!);
    files.set('copy.ldb', files.get('000008.ldb')!);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const wholeObjectsOnly = (): Storage => {
    const s = new MemoryStorage('memory:whole');
    Object.defineProperty(s, 'openWriter', { value: undefined });
    return s;
  };
  const cases: [string, () => Storage, boolean][] = [
    ['streamed into a directory', () => new DirStorage(path.join(dir, 'repo-dir')), true],
    ['streamed into memory', () => new MemoryStorage(), true],
    ['buffered and stored whole', wholeObjectsOnly, false],
  ];

  it.each(cases)('%s: aligned blobs, zero gaps, verified and restored byte for byte', async (what, make, streamed) => {
    const storage = make();
    expect(typeof storage.openWriter === 'function').toBe(streamed);
    const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
    // Small packs (concurrency 1 and 2): many packs, each cut after a blob that ends off the grid.
    const record = await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(null), concurrency: streamed ? 2 : 1 });
    expect(record.packsUploaded).toBeGreaterThan(1);

    let blobs = 0;
    let gaps = 0;
    for await (const { name } of storage.list('data/')) {
      const pack = await storage.get(name);
      // The header (sealed: the repository's codec opens it) names the pack and lists every blob.
      const listed = repo.codec.readPackTail(name.split('/').pop()!, pack);
      let end = 0;
      for (const [id, offset, length] of listed) {
        expect(offset % BLOB_ALIGN, `${what}: blob at ${offset}`).toBe(0);
        expect(offset).toBe(Math.ceil(end / BLOB_ALIGN) * BLOB_ALIGN); // the next boundary: no wasted page
        expect(pack.subarray(end, offset).every((b) => b === 0), `${what}: gap before ${offset} is zeros`).toBe(true);
        if (offset > end) gaps++;
        const stored = pack.subarray(offset, offset + length);
        const opened = await repo.codec.openBlob('data', id, stored, CHUNK_SIZE).catch(() => repo.codec.openBlob('tree', id, stored, 1 << 20));
        expect(opened.length).toBeGreaterThan(0);
        end = offset + length;
        blobs++;
      }
      // The header follows the last blob at once.
      expect(pack.length - repo.codec.tailLength(pack)).toBe(end);
    }
    expect(blobs).toBe(record.blobsUploaded);
    expect(gaps).toBeGreaterThan(0); // the case the layout is about did occur

    const verified = await verifyRepository(repo, { readData: true });
    expect(verified.errors).toEqual([]);
    const to = path.join(dir, `restored-${what.replace(/ /g, '-')}`);
    await restoreBackup({ repo, id: record.id, to });
    expect(fs.readdirSync(to).sort()).toEqual([...files.keys()].sort());
    for (const [name, data] of files) expect(fs.readFileSync(path.join(to, name)).equals(data), name).toBe(true);
  });
});
