import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointRecord } from '../dist/shared/index.js';
import { MemoryStorage } from '../dist/agent/storage/memory-storage.js';
import { FaultStorage } from '../dist/agent/storage/fault-storage.js';
import { RetryStorage } from '../dist/agent/storage/retry-storage.js';
import { StorageError, type ObjectInfo, type Storage } from '../dist/agent/storage/storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import type { IndexFile } from '../dist/agent/repository/format.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { verifyRepository } from '../dist/agent/backup/verify-repository.js';
import { copySnapshots, type CopySnapshotsResult } from '../dist/agent/backup/copy-snapshots.js';
import { openCopyDestination, withCopyLocks } from '../dist/agent/backup/copy-session.js';
import { tempDir } from './support/processes.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * The copy's pipeline (copy-snapshots.ts), in process, on a source of ~10 packs and a destination that
 * stores slowly, records every call in one sequence and fails where a test says: source packs are read
 * ahead while 4 stores run, never more than 4 reads, 4 stores and 8 packs held at once; an index object
 * is written only for packs stored, the snapshot only after every pack and index object; a failed store
 * or index object fails the copy, no snapshot is visible, and the next run sends no pack twice. The same
 * copies through the CLI, killed, cancelled, between file:// and Swift, are in backup-copy.test.ts.
 */

const MiB = 1024 * 1024;
/** Incompressible files: ten packs of 8 MiB, and a little more. */
const FILES = 11;
const FILE_BYTES = 7 * MiB + 12345;

const dir = tempDir('copy-pipeline');
const checkpoint: CheckpointRecord = {
  id: '20261206T000000000Z-0001',
  label: null,
  createdAt: '2026-12-06T00:00:00.000Z',
  trigger: 'manual',
  pinned: false,
  path: path.join(dir, 'checkpoint'),
  files: FILES,
  bytes: FILES * FILE_BYTES,
  exclusiveBytes: 0,
};
let sourceStorage: MemoryStorage;
let sourcePacks: string[];
let backupId: string;

interface Call {
  side: 'from' | 'to';
  op: string;
  name: string;
  start: number;
  /** null while running; a failed call ends too. */
  end: number | null;
  ok: boolean;
  /** Bytes asked for (reads). */
  length: number;
}

/** One clock for both ends: every call's start and end, in the order they happened. */
class Journal {
  private tick = 0;
  readonly calls: Call[] = [];

  begin(side: Call['side'], op: string, name: string, length = 0): Call {
    const c: Call = { side, op, name, start: ++this.tick, end: null, ok: false, length };
    this.calls.push(c);
    return c;
  }

  finish(c: Call, ok: boolean): void {
    c.end = ++this.tick;
    c.ok = ok;
  }

  /** The most calls matching `which` that were running at once, and when it was first reached. */
  peak(which: (c: Call) => boolean): number {
    let peak = 0;
    for (const c of this.calls.filter(which)) peak = Math.max(peak, this.runningAt(c.start, which));
    return peak;
  }

  runningAt(t: number, which: (c: Call) => boolean): number {
    return this.calls.filter((c) => which(c) && c.start <= t && (c.end === null || c.end > t)).length;
  }
}

const isPack = (name: string) => name.startsWith('data/');
const packId = (name: string) => name.slice(name.lastIndexOf('/') + 1);

/**
 * A storage that records every call in `journal`; puts of packs take `putMs` (a slow store) and fail where
 * `failPut(n)` says (n: the how-manieth pack put); `streamed` adds streamRange over getRange, in pieces of
 * 256 KiB (as S3 hands a body over).
 */
class Recorded implements Storage {
  readonly description: string;
  readonly streamRange?: Storage['streamRange'];
  private packPuts = 0;

  constructor(
    private readonly inner: Storage,
    private readonly journal: Journal,
    private readonly side: Call['side'],
    private readonly o: { putMs?: number; failPut?: (n: number) => boolean; streamed?: boolean } = {},
  ) {
    this.description = inner.description;
    if (o.streamed) {
      this.streamRange = (name, offset, length, onPiece) =>
        this.record('streamRange', name, async () => {
          for (let at = 0; at < length; at += 256 * 1024) await onPiece(await inner.getRange(name, offset + at, Math.min(256 * 1024, length - at)));
        });
    }
  }

  put(name: string, data: Buffer): Promise<void> {
    return this.record('put', name, async () => {
      if (isPack(name)) {
        const n = ++this.packPuts;
        if (this.o.putMs) await sleep(this.o.putMs);
        if (this.o.failPut?.(n)) throw new StorageError('permanent', this.description, 'injected: access denied (HTTP 403)', { op: 'put', name });
      }
      await this.inner.put(name, data);
    });
  }

  putStream(name: string, open: () => Readable, size: number): Promise<void> {
    return this.record('putStream', name, () => this.inner.putStream(name, open, size));
  }

  get(name: string): Promise<Buffer> {
    return this.record('get', name, () => this.inner.get(name));
  }

  getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.record('getRange', name, () => this.inner.getRange(name, offset, length, into), length);
  }

  stat(name: string): Promise<ObjectInfo | null> {
    return this.inner.stat(name);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  delete(name: string): Promise<void> {
    return this.record('delete', name, () => this.inner.delete(name));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async record<T>(op: string, name: string, call: () => Promise<T>, length = 0): Promise<T> {
    const c = this.journal.begin(this.side, op, name, length);
    try {
      const r = await call();
      this.journal.finish(c, true);
      return r;
    } catch (err) {
      this.journal.finish(c, false);
      throw err;
    }
  }
}

/** A copy of every backup of `from` into `to` (made with the source's keys when empty), as copyRepository runs it. */
async function copyAll(from: Storage, to: Storage, indexBatch?: number): Promise<CopySnapshotsResult & { packsRecovered: number }> {
  const source = await Repository.open(from, { ...TEST_REPO, cryptoThreads: 0 });
  try {
    return await withCopyLocks(
      source,
      () => openCopyDestination(to, source, { ...TEST_REPO, cryptoThreads: 0 }),
      async (ends) => ({ ...(await copySnapshots({ ...ends, select: { all: true }, ...(indexBatch ? { indexBatch } : {}) })), packsRecovered: ends.packsRecovered }),
    );
  } finally {
    await source.codec.close();
  }
}

async function verified(storage: Storage): Promise<void> {
  const repo = await Repository.open(storage, { ...TEST_REPO, cryptoThreads: 0 });
  try {
    const report = await verifyRepository(repo, { readData: true });
    expect(report.errors).toEqual([]);
    expect((await repo.listSnapshots()).map((s) => s.id)).toEqual([backupId]);
  } finally {
    await repo.codec.close();
  }
}

/** The packs each index object at `to` lists. */
async function indexObjects(to: Storage): Promise<Map<string, string[]>> {
  const repo = await Repository.open(to, { ...TEST_REPO, cryptoThreads: 0 });
  try {
    const out = new Map<string, string[]>();
    for await (const o of to.list('index/')) out.set(o.name, (await repo.getJson<IndexFile>(o.name)).packs.map((p) => p.id));
    return out;
  } finally {
    await repo.codec.close();
  }
}

/** Pack names stored by successful puts at `to`, over every journal given. */
function packsStored(...journals: Journal[]): string[] {
  return journals.flatMap((j) => j.calls.filter((c) => c.side === 'to' && c.op === 'put' && c.ok && isPack(c.name)).map((c) => packId(c.name)));
}

beforeAll(async () => {
  fs.mkdirSync(checkpoint.path, { recursive: true });
  for (let i = 0; i < FILES; i++) fs.writeFileSync(path.join(checkpoint.path, `${String(i).padStart(6, '0')}.ldb`), randomBytes(FILE_BYTES));
  sourceStorage = new MemoryStorage('memory:source');
  const repo = await Repository.open(sourceStorage, { create: true, ...TEST_REPO, cryptoThreads: 0 });
  try {
    backupId = (await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(null) })).id;
  } finally {
    await repo.codec.close();
  }
  sourcePacks = [];
  for await (const o of sourceStorage.list('data/')) sourcePacks.push(packId(o.name));
  expect(sourcePacks.length).toBeGreaterThanOrEqual(10);
}, 60_000);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('backup copy pipeline', () => {
  it('a slow destination: reads run ahead of 4 stores, within their bounds; indexes follow their packs, the snapshot follows all', async () => {
    const journal = new Journal();
    const to = new MemoryStorage('memory:to');
    const r = await copyAll(new Recorded(sourceStorage, journal, 'from'), new Recorded(to, journal, 'to', { putMs: 40 }), 3);
    expect(r).toMatchObject({ mode: 'packs', copied: [backupId], packsSent: sourcePacks.length });

    const packPut = (c: Call) => c.side === 'to' && c.op === 'put' && isPack(c.name);
    const packRead = (c: Call) => c.side === 'from' && c.op === 'getRange' && isPack(c.name);
    // The store kept busy (4 at once), never more; the source read at most 4 at once.
    expect(journal.peak(packPut)).toBe(4);
    expect(journal.peak(packRead)).toBeLessThanOrEqual(4);
    // Reads ahead: a pack read while 4 stores were running (one slot reading, checking and storing in turn cannot).
    expect(journal.calls.some((c) => packRead(c) && journal.runningAt(c.start, packPut) === 4)).toBe(true);
    // Memory: a pack is held from its read (its last: a tree blob is read from it before) to its store; at most 8 at once.
    const held = sourcePacks.map((p) => {
      const reads = journal.calls.filter((c) => packRead(c) && packId(c.name) === p);
      const put = journal.calls.find((c) => packPut(c) && packId(c.name) === p)!;
      return { start: Math.max(...reads.map((c) => c.start)), end: put.end! };
    });
    expect(Math.max(...held.map((h) => held.filter((o) => o.start <= h.start && o.end > h.start).length))).toBeLessThanOrEqual(8);

    const toCalls = journal.calls.filter((c) => c.side === 'to');
    const ended = (name: string) => toCalls.find((c) => c.op === 'put' && c.name === name)!.end!;
    // The marker before any pack.
    const marker = toCalls.find((c) => c.op === 'put' && c.name.startsWith('pending/'))!;
    expect(Math.min(...toCalls.filter(packPut).map((c) => c.start))).toBeGreaterThan(marker.end!);
    // Each index object lists only packs stored before it was written; together they list every pack.
    const indexes = await indexObjects(to);
    expect(indexes.size).toBeGreaterThanOrEqual(Math.ceil(sourcePacks.length / 3));
    for (const [name, packs] of indexes) {
      const write = toCalls.find((c) => c.op === 'put' && c.name === name)!;
      for (const p of packs) expect(ended(`data/${p.slice(0, 2)}/${p}`)).toBeLessThan(write.start);
    }
    expect([...indexes.values()].flat().sort()).toEqual([...sourcePacks].sort());
    // The snapshot after every pack and every index object.
    const snapshot = toCalls.find((c) => c.op === 'put' && c.name.startsWith('snapshots/'))!;
    const before = toCalls.filter((c) => c.op === 'put' && (isPack(c.name) || c.name.startsWith('index/')));
    expect(Math.max(...before.map((c) => c.end!))).toBeLessThan(snapshot.start);
    await verified(to);
  });

  it('a pack that fails to be stored: the copy fails, no pack is stored after it, no snapshot; run again, no pack is sent twice', async () => {
    const to = new MemoryStorage('memory:to-failing');
    const first = new Journal();
    await expect(copyAll(sourceStorage, new Recorded(to, first, 'to', { putMs: 20, failPut: (n) => n === 5 }))).rejects.toThrow(/injected: access denied/);
    const failed = first.calls.find((c) => c.op === 'put' && isPack(c.name) && !c.ok)!;
    expect(first.calls.filter((c) => c.op === 'put' && isPack(c.name) && c.start > failed.end!)).toEqual([]);
    expect(first.calls.some((c) => c.name.startsWith('snapshots/'))).toBe(false);
    const storedFirst = packsStored(first);
    expect(storedFirst.length).toBeGreaterThanOrEqual(4);

    // The packs stored before the failure were indexed as the copy ended: the next run knows them.
    const second = new Journal();
    await copyAll(sourceStorage, new Recorded(to, second, 'to'));
    expect(packsStored(second).length).toBe(sourcePacks.length - storedFirst.length);
    const all = packsStored(first, second);
    expect(new Set(all).size).toBe(all.length);
    expect([...all].sort()).toEqual([...sourcePacks].sort());
    await verified(to);
  });

  it('an index object that fails to be written: the copy fails with it, no snapshot, the marker stays; run again, the packs stored are indexed, none sent again', async () => {
    const to = new MemoryStorage('memory:to-index');
    const first = new Journal();
    const faulty = new FaultStorage(new Recorded(to, first, 'to'), [{ kind: 'permanent', ops: ['put'], prefix: 'index/' }]);
    await expect(copyAll(sourceStorage, faulty, 3)).rejects.toThrow(/index\/.*injected fault: access denied/);
    expect(faulty.injected.put).toBeGreaterThanOrEqual(1);
    const names: string[] = [];
    for await (const o of to.list('')) names.push(o.name);
    expect(names.filter((n) => n.startsWith('snapshots/'))).toEqual([]);
    expect(names.filter((n) => n.startsWith('pending/'))).toHaveLength(1);
    const storedFirst = packsStored(first);
    expect(storedFirst.length).toBeGreaterThanOrEqual(3);

    const second = new Journal();
    const r = await copyAll(sourceStorage, new Recorded(to, second, 'to'), 3);
    expect(r.packsRecovered).toBe(storedFirst.length);
    const all = packsStored(first, second);
    expect(new Set(all).size).toBe(all.length);
    expect([...all].sort()).toEqual([...sourcePacks].sort());
    await verified(to);
  });

  it('two backups: the packs only the second needs are read before the first is written, and each is written only after every pack it needs', async () => {
    // A source of two backups: the one above, then three more files (new packs).
    const two = new MemoryStorage('memory:two');
    for await (const o of sourceStorage.list('')) if (!o.name.startsWith('locks/')) await two.put(o.name, await sourceStorage.get(o.name));
    const more = { ...checkpoint, id: '20261206T000000000Z-0002', path: path.join(dir, 'checkpoint-2'), files: FILES + 3 };
    fs.cpSync(checkpoint.path, more.path, { recursive: true });
    for (let i = FILES; i < FILES + 3; i++) fs.writeFileSync(path.join(more.path, `${String(i).padStart(6, '0')}.ldb`), randomBytes(FILE_BYTES));
    const repo = await Repository.open(two, { ...TEST_REPO, cryptoThreads: 0 });
    let secondId: string;
    try {
      secondId = (await backupCheckpoint({ repo, checkpoint: more, cache: HashCache.load(null) })).id;
    } finally {
      await repo.codec.close();
    }
    const secondPacks: string[] = [];
    for await (const o of two.list('data/')) if (!sourcePacks.includes(packId(o.name))) secondPacks.push(packId(o.name));
    expect(secondPacks.length).toBeGreaterThanOrEqual(2);

    const journal = new Journal();
    const to = new MemoryStorage('memory:to-two');
    const r = await copyAll(new Recorded(two, journal, 'from'), new Recorded(to, journal, 'to', { putMs: 40 }));
    expect(r.copied).toEqual([backupId, secondId]);
    const put = (prefix: string) => journal.calls.filter((c) => c.side === 'to' && c.op === 'put' && c.name.startsWith(prefix));
    const firstWritten = put(`snapshots/${backupId}`)[0]!;
    const secondWritten = put(`snapshots/${secondId}`)[0]!;
    const ofPacks = (ids: string[]) => put('data/').filter((c) => ids.includes(packId(c.name)));
    // Each snapshot after every pack it needs (the first: its own; the second: all) and the index objects before it.
    expect(Math.max(...ofPacks(sourcePacks).map((c) => c.end!))).toBeLessThan(firstWritten.start);
    expect(Math.max(...put('data/').map((c) => c.end!), ...put('index/').map((c) => c.end!))).toBeLessThan(secondWritten.start);
    expect(firstWritten.end!).toBeLessThan(secondWritten.start);
    // One pipeline over both: a pack only the second needs was read (whole: not its tree blob) before the first was written.
    const secondReads = journal.calls.filter((c) => c.side === 'from' && c.op === 'getRange' && c.length > MiB && secondPacks.includes(packId(c.name)));
    expect(secondReads.length).toBe(secondPacks.length);
    expect(secondReads.some((c) => c.start < firstWritten.start)).toBe(true);
    const check = await Repository.open(to, { ...TEST_REPO, cryptoThreads: 0 });
    try {
      expect((await verifyRepository(check, { readData: true })).errors).toEqual([]);
    } finally {
      await check.codec.close();
    }
  });

  it('a source that streams ranges, cut short three times: each read goes on where it stopped; the copy is exact', async () => {
    const journal = new Journal();
    const cut = new FaultStorage(new Recorded(sourceStorage, journal, 'from', { streamed: true }), [{ kind: 'reset', ops: ['getRange'], prefix: 'data/', afterBytes: 3 * MiB + 1, first: 3 }]);
    const from = new RetryStorage(cut, { baseDelayMs: 1, maxDelayMs: 5 });
    const to = new MemoryStorage('memory:to-streamed');
    const r = await copyAll(from, to);
    expect(cut.injected.getRange).toBe(3);
    // Streamed: no pack read by getRange (a tree blob is, by Repository.readBlob).
    expect(journal.calls.filter((c) => c.op === 'streamRange').length).toBe(sourcePacks.length + 3);
    expect(r.packsSent).toBe(sourcePacks.length);
    await verified(to);
  });
});
