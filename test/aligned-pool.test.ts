import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, describe, expect, it } from 'vitest';
import { AlignedPool, alignedPool } from '../dist/agent/fs/aligned-pool.js';
import { DIRECT_ALIGN } from '../dist/agent/fs/direct-io.js';
import { createOfflineCheckpoint } from '../dist/agent/index.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { CHUNK_SIZE, PACK_TARGET_SIZE } from '../dist/agent/repository/format.js';
import { tempDir } from './support/processes.js';
import { emptyAndClose, s3TestStorage } from './support/s3-server.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * The process's pool of page-aligned buffers (aligned-pool.ts): what is given back is handed out again,
 * never to two users; and backups one after another in one process (an agent's promotions) reuse one
 * set of buffers rather than leave a set each for V8 to free, with every byte they store still right.
 */

describe('AlignedPool', () => {
  const SIZE = 4 * DIRECT_ALIGN;

  it('hands back what was given, by size, page-aligned, and never one buffer to two users', () => {
    const pool = new AlignedPool();
    const first = pool.take(3, SIZE);
    expect(first).toHaveLength(3);
    for (const b of first) {
      expect(b.length).toBe(SIZE);
      expect(b.byteOffset % DIRECT_ALIGN).toBe(0);
    }
    expect(pool.freeBytes).toBe(0);
    expect(pool.inUseBytes).toBe(3 * SIZE);
    pool.give(first);
    pool.give([first[0]!]); // given twice: counts once
    expect(pool.freeBytes).toBe(3 * SIZE);
    expect(pool.inUseBytes).toBe(0);
    const other = pool.take(1, 2 * SIZE);
    expect(pool.inUseBytes).toBe(2 * SIZE);
    expect(first).not.toContain(other[0]);
    expect(pool.freeBytes).toBe(3 * SIZE);
    const again = pool.take(4, SIZE);
    expect(new Set(again).size).toBe(4);
    // The three given back are reused; one more is made.
    expect(again.filter((b) => first.includes(b))).toHaveLength(3);
    expect(pool.freeBytes).toBe(0);
    // Negative control: the same checks tell a fresh set from a reused one.
    expect(pool.take(3, SIZE).filter((b) => first.includes(b))).toHaveLength(0);
  });
});

describe('backups one after another in one process', () => {
  const dir = tempDir('aligned-pool');
  const dbPath = path.join(dir, 'db');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reuse the buffers of the one before (S3: pack buffers too); each restores byte for byte', async () => {
    const storage = s3TestStorage();
    try {
      const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
      const held: number[] = [];
      for (let round = 0; round < 3; round++) {
        const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
        await db.open();
        for (let i = 0; i < 400; i++) await db.put(`round-${round}/${i}`, randomBytes(8000));
        await db.close();
        const checkpoint = await createOfflineCheckpoint({ dbPath, checkpointDir: path.join(dir, 'checkpoints') });
        const record = await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(null) });
        held.push(alignedPool.freeBytes);
        const to = path.join(dir, `restored-${round}`);
        await restoreBackup({ repo, id: record.id, to });
        for (const name of fs.readdirSync(checkpoint.path)) {
          expect(fs.readFileSync(path.join(to, name)).equals(fs.readFileSync(path.join(checkpoint.path, name))), `${name} of round ${round}`).toBe(true);
        }
      }
      // The first backup's sets came back: its pack buffers (more than a pack each) and its readers' chunk buffers.
      expect(held[0]).toBeGreaterThan(2 * PACK_TARGET_SIZE + 2 * CHUNK_SIZE);
      // The next ones took them and gave them back: nothing more was made.
      expect(held).toEqual([held[0], held[0], held[0]]);
      await repo.codec.close();
    } finally {
      await emptyAndClose(storage);
    }
  });
});
