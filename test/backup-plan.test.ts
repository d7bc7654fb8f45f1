import fs from 'node:fs';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupPlan, listCheckpoint, type ChunkJob, type CheckpointListing } from '../dist/agent/backup/backup-plan.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { CHUNK_SIZE } from '../dist/agent/repository/format.js';
import { tempDir } from './support/processes.js';

/**
 * The backup plan alone (backup-plan.ts): what a backup reads, decided file by file from the hash cache,
 * and the tree it collects. Files are opened through a fake that counts opens and closes: the plan
 * never reads a byte, so no real handle is needed.
 */

const SIZES: Record<string, number> = {
  'a.ldb': 2 * CHUNK_SIZE + 5, // three chunks, the last one short
  'b.log': 0,
  'c.ldb': CHUNK_SIZE,
  MANIFEST: 100,
};

describe('backup plan', () => {
  const dir = tempDir('backup-plan');
  let listing: CheckpointListing;

  beforeAll(async () => {
    for (const [name, size] of Object.entries(SIZES)) fs.writeFileSync(path.join(dir, name), Buffer.alloc(size, 1));
    for (const name of ['LOCK', 'LOG', 'LOG.old']) fs.writeFileSync(path.join(dir, name), 'x');
    listing = await listCheckpoint(dir);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A plan over `dir` whose opens and closes are counted, per file name. */
  const planWith = (cache: HashCache, isStored: (id: string) => boolean) => {
    const opens = new Map<string, number>();
    const closes = new Map<string, number>();
    const done: number[] = [];
    const plan = new BackupPlan({
      dir,
      listing,
      cache,
      isStored,
      open: async (file) => {
        const name = path.basename(file);
        opens.set(name, (opens.get(name) ?? 0) + 1);
        return { close: async () => void closes.set(name, (closes.get(name) ?? 0) + 1) } as unknown as FileHandle;
      },
      onFileDone: (bytesSkipped) => done.push(bytesSkipped),
    });
    return { plan, opens, closes, done };
  };
  const drain = (plan: BackupPlan): ChunkJob[] => {
    const jobs: ChunkJob[] = [];
    for (let job = plan.next(); job; job = plan.next()) jobs.push(job);
    return jobs;
  };
  const idOf = (job: ChunkJob) => `${job.file.name}#${job.chunk}`;

  it('lists the data files in name order, without LOCK and the info logs, with what the hash cache needs', () => {
    expect(listing.names).toEqual(['MANIFEST', 'a.ldb', 'b.log', 'c.ldb']);
    const st = fs.statSync(path.join(dir, 'a.ldb'), { bigint: true });
    expect(listing.stats[1]).toEqual({ dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs });
  });

  it('hands out every chunk once, file by file in name order, never opens an empty file, and collects the tree', async () => {
    const cache = HashCache.load(null);
    const { plan, opens, closes, done } = planWith(cache, () => false);
    const jobs = drain(plan);
    expect(jobs.map((j) => [j.file.name, j.chunk, j.offset, j.length])).toEqual([
      ['MANIFEST', 0, 0, 100],
      ['a.ldb', 0, 0, CHUNK_SIZE],
      ['a.ldb', 1, CHUNK_SIZE, CHUNK_SIZE],
      ['a.ldb', 2, 2 * CHUNK_SIZE, 5],
      ['c.ldb', 0, 0, CHUNK_SIZE],
    ]);
    expect(jobs[1]!.file.path).toBe(path.join(dir, 'a.ldb'));
    expect(Object.fromEntries(opens)).toEqual({ MANIFEST: 1, 'a.ldb': 1, 'c.ldb': 1 });
    // Settled out of order, as concurrent readers do: a file closes on its last settle, not before.
    for (const job of [...jobs].reverse()) await plan.settle(job, idOf(job));
    expect(Object.fromEntries(closes)).toEqual({ MANIFEST: 1, 'a.ldb': 1, 'c.ldb': 1 });
    expect(done).toEqual([0, 0, 0, 0]);
    expect(plan.tree()).toEqual({
      version: 1,
      files: [
        { name: 'MANIFEST', size: 100, chunks: ['MANIFEST#0'] },
        { name: 'a.ldb', size: SIZES['a.ldb'], chunks: ['a.ldb#0', 'a.ldb#1', 'a.ldb#2'] },
        { name: 'b.log', size: 0, chunks: [] },
        { name: 'c.ldb', size: CHUNK_SIZE, chunks: ['c.ldb#0'] },
      ],
    });
    expect(cache.get(listing.stats[1]!)).toEqual(['a.ldb#0', 'a.ldb#1', 'a.ldb#2']);
  });

  it('skips a file the hash cache knows only while the repository holds every chunk of it', async () => {
    const cache = HashCache.load(null);
    cache.set(listing.stats[1]!, ['x0', 'x1', 'x2']); // a.ldb: all stored
    cache.set(listing.stats[3]!, ['y0']); // c.ldb: its chunk is not stored
    const { plan, opens, done } = planWith(cache, (id) => id.startsWith('x'));
    const jobs = drain(plan);
    expect([...new Set(jobs.map((j) => j.file.name))]).toEqual(['MANIFEST', 'c.ldb']);
    expect(opens.has('a.ldb')).toBe(false);
    // a.ldb and b.log were accounted for as they came up: a.ldb's bytes without reading them.
    expect(done).toEqual([SIZES['a.ldb'], 0]);
    for (const job of jobs) await plan.settle(job, idOf(job));
    expect(plan.tree().files.map((f) => f.chunks)).toEqual([['MANIFEST#0'], ['x0', 'x1', 'x2'], [], ['c.ldb#0']]);
    expect(cache.get(listing.stats[3]!)).toEqual(['c.ldb#0']);
  });

  it('closes a file whose chunk failed, and keeps it out of the tree and the hash cache', async () => {
    const cache = HashCache.load(null);
    const { plan, closes, done } = planWith(cache, () => false);
    const jobs = drain(plan);
    for (const job of jobs) await plan.settle(job, job.file.name === 'a.ldb' && job.chunk === 1 ? null : idOf(job));
    expect(closes.get('a.ldb')).toBe(1);
    expect(cache.get(listing.stats[1]!)).toBeUndefined();
    expect(plan.tree().files[1]).toBeUndefined();
    expect(done).toHaveLength(3); // MANIFEST, b.log, c.ldb
  });

  it('abandon closes the file a stop left open with chunks never handed out', async () => {
    const { plan, opens, closes } = planWith(HashCache.load(null), () => false);
    await plan.settle(plan.next()!, 'm'); // MANIFEST, whole
    const first = plan.next()!; // a.ldb, chunk 0 of 3
    await plan.settle(first, null);
    expect(closes.has('a.ldb')).toBe(false);
    await plan.abandon();
    expect(opens.get('a.ldb')).toBe(1);
    expect(closes.get('a.ldb')).toBe(1);
  });
});
