import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveThreads } from '../dist/agent/log-archive/archive-threads.js';
import type { CryptoPool } from '../dist/agent/repository/crypto-pool.js';
import { ArchiveWorker } from '../dist/agent/log-archive/archive-worker-client.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { tempDir } from './support/processes.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * An agent's threads when it archives the log (archive-threads.ts): one crypto pool, lent to its
 * repositories (OpenOptions.threads), whose first thread also does the log archive's work, so the host
 * carries one V8 isolate fewer (about 8 MiB idle). What is checked, through real threads, a real
 * directory repository and the process's own thread list in /proc:
 * - the archive's ops and a repository's crypto run in one thread (a pool of one adds one thread;
 *   an archive worker of its own beside a pool adds two: the negative control);
 * - a lent pool outlives what borrows it: a codec's close(), a failed open (a wrong password), the
 *   ArchiveWorker's close(); its owner's close() stops it.
 */

const dir = tempDir('archive-threads');
const storages: Storage[] = [];
// libuv's pool starts all its threads at its first use: before any count here, so that they are not counted.
beforeAll(async () => {
  await fs.promises.stat(dir);
});
afterAll(async () => {
  for (const s of storages) await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function storageAt(name: string): Promise<Storage> {
  const s = await openStorage(pathToFileURL(path.join(dir, name)).href, {});
  storages.push(s);
  return s;
}

const threadIds = () => new Set(fs.readdirSync('/proc/self/task'));
const added = (before: Set<string>) => [...threadIds()].filter((t) => !before.has(t)).length;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The archive's ops on `worker`, and an encrypted repository's crypto through `threads`: what each answered. */
async function useBoth(worker: ArchiveWorker, repo: Repository): Promise<void> {
  const data = Buffer.from('a segment to hash');
  expect((await worker.sha256(data)).toString('hex')).toBe(sha(data));
  const blob = Buffer.alloc(1 << 20, 3);
  const id = await repo.codec.blobId('data', blob);
  expect(id).toMatch(/^[0-9a-f]{64}$/);
}

/**
 * The OS threads this process gains while an archive worker (`worker()`) and a new encrypted repository
 * opened with `options` both do their work; both closed after (a lent pool stays its owner's).
 */
async function threadsAddedBy(name: string, worker: () => ArchiveWorker, options: { threads?: CryptoPool; cryptoThreads?: number }): Promise<number> {
  const before = threadIds();
  const archive = worker();
  const repo = await Repository.open(await storageAt(name), { ...TEST_REPO, create: true, ...options });
  try {
    await useBoth(archive, repo);
    return added(before);
  } finally {
    await repo.codec.close();
    await archive.close();
  }
}

describe.runIf(fs.existsSync('/proc/self/task'))("an agent's threads: the log archive's work in the first crypto thread", () => {
  it('one pool of one thread serves the archive and the repository; a worker of its own beside a pool is a second thread', async () => {
    const { pool, archive } = archiveThreads(1);
    try {
      expect(await threadsAddedBy('shared', () => new ArchiveWorker(archive), { threads: pool })).toBe(1);
    } finally {
      await pool.close();
    }
    // Negative control: the archive's own thread and a pool's thread are two.
    expect(await threadsAddedBy('separate', () => new ArchiveWorker(), { cryptoThreads: 1 })).toBe(2);
  });

  it('a lent pool outlives its borrowers (a codec closed, an open refused, the archive worker closed); its owner stops it', async () => {
    const { pool, archive } = archiveThreads(2);
    const worker = new ArchiveWorker(archive);
    const storage = await storageAt('lent');
    const repo = await Repository.open(storage, { ...TEST_REPO, create: true, threads: pool });
    await useBoth(worker, repo);
    await repo.codec.close();
    const wrong = Repository.open(storage, { password: async () => Buffer.from('not the password'), threads: pool });
    await expect(wrong).rejects.toMatchObject({ code: 'WRONG_PASSWORD' });
    await worker.close();
    // Still running for its owner: the archive's ops and the crypto both answer.
    const again = await Repository.open(storage, { ...TEST_REPO, threads: pool });
    await useBoth(new ArchiveWorker(archive), again);
    await pool.close();
    // Negative control: once its owner closed it, a call is refused.
    await expect(new ArchiveWorker(archive).sha256(Buffer.from('x'))).rejects.toMatchObject({ code: 'CANCELLED' });
    await expect(again.codec.blobId('data', Buffer.alloc(1 << 20, 4))).rejects.toMatchObject({ code: 'CANCELLED' });
  });

  it("a pool made for the crypto alone keeps closing with its codec (the default, unchanged)", async () => {
    const repo = await Repository.open(await storageAt('own'), { ...TEST_REPO, create: true, cryptoThreads: 1 });
    expect(await repo.codec.blobId('data', Buffer.alloc(1 << 20, 5))).toMatch(/^[0-9a-f]{64}$/);
    await repo.codec.close();
    await expect(repo.codec.blobId('data', Buffer.alloc(1 << 20, 6))).rejects.toMatchObject({ code: 'CANCELLED' });
  });
});
