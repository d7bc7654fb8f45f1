import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointRecord } from '../dist/shared/api.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { pruneRepository } from '../dist/agent/backup/prune-repository.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { FaultStorage } from '../dist/agent/storage/fault-storage.js';
import { RetryStorage } from '../dist/agent/storage/retry-storage.js';
import type { ObjectWriter, Storage } from '../dist/agent/storage/storage.js';
import { tempDir } from './support/processes.js';
import { emptyAndClose, s3TestStorage } from './support/s3-server.js';
import { packCensus, type PackCensus } from './support/pack-census.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * A backup that stops part way keeps what it stored: the next backup sends only what the first did not
 * store, and no pack is left that no index names (prune finds nothing to delete). The ways a backup
 * stops here: the repository's filesystem fills up (a real, small tmpfs), the filesystem fills up right
 * after a pack is stored (so that the pack's index object cannot be written), the store keeps failing
 * until retries run out (S3, index writes only), and a cancel. kill -9: backup-engine.test.ts.
 */

const MiB = 1024 * 1024;

function checkpointOf(dir: string): CheckpointRecord {
  return { id: '20261123T000000000Z-abcd', path: dir, label: null, createdAt: new Date().toISOString(), trigger: 'manual' } as unknown as CheckpointRecord;
}

/** ~58 MB of incompressible "tables" and a log, like the database of the report. */
function makeSource(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  for (let i = 0; i < 27; i++) fs.writeFileSync(path.join(dir, `${String(i + 5).padStart(6, '0')}.ldb`), randomBytes(2_117_734));
  fs.writeFileSync(path.join(dir, '000040.log'), randomBytes(1_500_000));
  fs.writeFileSync(path.join(dir, 'CURRENT'), 'MANIFEST-000002\n');
}

function expectSameFiles(a: string, b: string): void {
  const names = fs.readdirSync(a).sort();
  expect(fs.readdirSync(b).sort()).toEqual(names);
  for (const n of names) expect(fs.readFileSync(path.join(b, n)).equals(fs.readFileSync(path.join(a, n))), n).toBe(true);
}

/**
 * After a failed first backup (census `before`): backs up again and checks that only what the first did
 * not store went up, that every stored pack is indexed, that prune would delete nothing, and that the
 * restore is exact.
 */
async function backUpAgainAndCheck(storage: Storage, source: string, before: PackCensus, scratch: string): Promise<void> {
  const repo = await Repository.open(storage, TEST_REPO);
  const second = await backupCheckpoint({ repo, checkpoint: checkpointOf(source), cache: HashCache.load(null) });
  const after = await packCensus(storage);
  // Nothing stored twice, and the second backup's uploads are exactly the packs that are new.
  expect(after.entries).toBe(after.blobs.size);
  for (const [pack, size] of before.packs) expect(after.packs.get(pack)).toBe(size);
  expect(second.bytesUploaded).toBe(after.bytes - before.bytes);
  // Every pack is indexed: prune has nothing to delete.
  await repo.loadIndex();
  expect([...after.packs.keys()].filter((p) => !repo.packs.has(p))).toEqual([]);
  const prune = await pruneRepository(repo, { keepLast: 100 }, { dryRun: true });
  expect(prune).toMatchObject({ packsDeleted: 0, packsRewritten: 0, bytesFreed: 0 });
  const noMarkers: string[] = [];
  for await (const o of storage.list('pending/')) noMarkers.push(o.name);
  expect(noMarkers).toEqual([]);
  const to = path.join(scratch, `restored-${randomBytes(3).toString('hex')}`);
  await restoreBackup({ repo, id: second.id, to });
  expectSameFiles(source, to);
  fs.rmSync(to, { recursive: true, force: true });
}

async function indexedPacks(storage: Storage): Promise<Set<string>> {
  const repo = await Repository.open(storage, TEST_REPO);
  await repo.loadIndex();
  return new Set(repo.packs.keys());
}

/** Whether this machine lets the test mount a tmpfs (root, and a kernel that allows it). */
function tryMount(): { ok: true } | { ok: false; reason: string } {
  const probe = tempDir('mount-probe');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe], { stdio: 'pipe' });
    execFileSync('umount', [probe], { stdio: 'pipe' });
    return { ok: true };
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    return { ok: false, reason: (e.stderr?.toString().trim() || e.message).split('\n')[0]! };
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
}

const mountable = tryMount();
const onSmallFs = mountable.ok ? it : it.skip;
const skipNote = mountable.ok ? '' : ` (SKIPPED: cannot mount a tmpfs here: ${mountable.reason})`;
if (!mountable.ok) console.warn(`backup-interrupted: the full-filesystem tests are skipped: cannot mount a tmpfs (${mountable.reason})`);

describe('a backup that stops part way keeps what it stored', () => {
  const dir = tempDir('interrupted');
  const source = path.join(dir, 'source');
  const small = path.join(dir, 'small');
  let mounted = false;

  beforeAll(() => {
    makeSource(source);
    fs.mkdirSync(small);
  });

  afterAll(() => {
    if (mounted) execFileSync('umount', [small]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const mountSmall = (size: string) => {
    if (mounted) execFileSync('umount', [small]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', small]);
    mounted = true;
  };

  onSmallFs(`the repository's filesystem fills up: the next backup, with room, sends only the rest${skipNote}`, async () => {
    mountSmall('40m');
    const storage = new DirStorage(path.join(small, 'repo'));
    const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
    const first = backupCheckpoint({ repo, checkpoint: checkpointOf(source), cache: HashCache.load(null) });
    await expect(first).rejects.toMatchObject({ code: 'INSUFFICIENT_SPACE' });
    const before = await packCensus(storage);
    expect(before.bytes).toBeGreaterThan(8 * MiB); // it stored packs before the disk filled
    execFileSync('mount', ['-o', 'remount,size=200m', small]); // the operator grows the filesystem
    await backUpAgainAndCheck(storage, source, before, dir);
  });

  onSmallFs(`the filesystem fills up right after a pack is stored, so its index object cannot be written${skipNote}`, async () => {
    mountSmall('200m');
    const filler = path.join(small, 'filler');
    const inner = new DirStorage(path.join(small, 'repo'));
    // The second pack committed, the disk is filled to the last byte: its index object fails ENOSPC.
    // Packs are indexed up to a second later, and a failed pack's temp file frees space meanwhile: the
    // disk is filled again right before each index write, so that the write meets a full disk.
    let commits = 0;
    const fillAfterSecondPack: Storage = Object.assign(Object.create(inner) as Storage, {
      put: (name: string, data: Buffer): Promise<void> => {
        if (commits >= 2 && name.startsWith('index/')) fillDisk(filler);
        return inner.put(name, data);
      },
      openWriter: (): ObjectWriter => {
        const w = inner.openWriter();
        return {
          write: (d, p) => w.write(d, p),
          abort: () => w.abort(),
          commit: async (name, size) => {
            await w.commit(name, size);
            if (++commits === 2) fillDisk(filler);
          },
        };
      },
    });
    const repo = await Repository.open(fillAfterSecondPack, { create: true, ...TEST_REPO });
    const first = backupCheckpoint({ repo, checkpoint: checkpointOf(source), cache: HashCache.load(null), concurrency: 1 });
    await expect(first).rejects.toMatchObject({ code: 'INSUFFICIENT_SPACE' });
    const before = await packCensus(inner);
    // The case happened: a pack is stored that no index object names.
    const indexed = await indexedPacks(inner);
    expect([...before.packs.keys()].filter((p) => !indexed.has(p)).length).toBeGreaterThan(0);
    fs.rmSync(filler); // space freed
    await backUpAgainAndCheck(inner, source, before, dir);
  });

  it('the store keeps failing index writes until retries run out (S3): the next backup sends only the rest', async () => {
    const s3 = s3TestStorage();
    try {
      const failing = new RetryStorage(new FaultStorage(s3, [{ kind: 'transient', ops: ['put'], prefix: 'index/' }]), { maxAttempts: 3, baseDelayMs: 1 });
      const repo = await Repository.open(failing, { create: true, ...TEST_REPO });
      const first = backupCheckpoint({ repo, checkpoint: checkpointOf(source), cache: HashCache.load(null) });
      await expect(first).rejects.toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
      const before = await packCensus(s3);
      expect(before.packs.size).toBeGreaterThan(0);
      expect((await indexedPacks(s3)).size).toBe(0); // stored, none indexed
      await backUpAgainAndCheck(new RetryStorage(s3, { baseDelayMs: 1 }), source, before, dir);
    } finally {
      await emptyAndClose(s3);
    }
  });

  it('a cancelled backup: the next one sends only the rest', async () => {
    const storage = new DirStorage(path.join(dir, 'repo-cancel'));
    const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
    const abort = new AbortController();
    const first = backupCheckpoint({
      repo,
      checkpoint: checkpointOf(source),
      cache: HashCache.load(null),
      bandwidthLimit: 40 * MiB,
      signal: abort.signal,
      onProgress: (p) => {
        if (p.bytesUploaded > 0) abort.abort();
      },
    });
    // CANCELLED also when the cancel cut short a wait behind the bandwidth limiter (its AbortError is not what the caller sees).
    await expect(first).rejects.toMatchObject({ code: 'CANCELLED' });
    const before = await packCensus(storage);
    expect(before.packs.size).toBeGreaterThan(0);
    await backUpAgainAndCheck(storage, source, before, dir);
  });

  it('an idle repository pays no listing of its packs: only a failed backup leaves a marker', async () => {
    const inner = new DirStorage(path.join(dir, 'repo-idle'));
    const counted = new FaultStorage(inner, []);
    const repo = await Repository.open(counted, { create: true, ...TEST_REPO });
    await backupCheckpoint({ repo, checkpoint: checkpointOf(source), cache: HashCache.load(null) });
    const listings: string[] = [];
    const spy: Storage = Object.assign(Object.create(counted) as Storage, {
      list: (prefix: string) => {
        listings.push(prefix);
        return counted.list(prefix);
      },
    });
    await backupCheckpoint({ repo: await Repository.open(spy, TEST_REPO), checkpoint: checkpointOf(source), cache: HashCache.load(null) });
    expect(listings.filter((p) => p.startsWith('data'))).toEqual([]);
    expect(listings).toContain('pending/');
  });
});

/** Writes until the filesystem refuses (ENOSPC), leaving it full. */
function fillDisk(file: string): void {
  const fd = fs.openSync(file, 'w');
  const block = Buffer.alloc(MiB, 1);
  try {
    for (;;) fs.writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  try {
    for (;;) fs.writeSync(fd, block, 0, 4096); // the last pages
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    fs.closeSync(fd);
  }
}
