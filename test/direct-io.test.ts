import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { DirectReader } from '../dist/agent/fs/direct-reader.js';
import { DIRECT_ALIGN, DirectOpener, alignedBuffers, readPagesUnlessRefused, writeSplit } from '../dist/agent/fs/direct-io.js';
import { mkdirDurable } from '../dist/agent/fs/durable-fs.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { createCheckpointSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { PackBuilder } from '../dist/agent/repository/pack.js';
import { canonicalJson, sha256 } from '../dist/agent/repository/format.js';
import { tempDir } from './support/processes.js';
import type { FileHandle } from 'node:fs/promises';
import { TEST_REPO } from './support/test-password.js';

/**
 * O_DIRECT reads (backups) and writes (packs, restores) must give exactly the bytes ordinary I/O gives,
 * at every size around the page and chunk boundaries, and fall back to ordinary I/O, with the same
 * result, when direct I/O is refused (here: a buffer that is not page-aligned, which the kernel refuses
 * just as a filesystem without O_DIRECT does).
 */

const MiB = 1024 * 1024;
const SIZES = [0, 1, 4095, 4096, 4097, MiB - 1, MiB, MiB + 5, 3 * MiB + 4096 * 3 + 17];

describe('direct I/O', () => {
  const dir = tempDir('direct');
  const files = new Map<string, Buffer>();

  beforeAll(() => {
    for (const size of SIZES) {
      const data = randomBytes(size);
      const file = path.join(dir, `f-${size}`);
      fs.writeFileSync(file, data);
      files.set(file, data);
    }
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const readWhole = async (reader: DirectReader, file: string, buf: Buffer): Promise<Buffer> => {
    const size = fs.statSync(file).size;
    const fh = await reader.open(file);
    const parts: Buffer[] = [];
    try {
      for (let offset = 0; offset < size; offset += MiB) {
        const length = Math.min(MiB, size - offset);
        await reader.read(fh, file, buf, offset, length, () => new Error('shrank'));
        parts.push(Buffer.from(buf.subarray(0, length)));
      }
    } finally {
      await fh.close();
    }
    return Buffer.concat(parts);
  };

  it('alignedBuffers are page-aligned: an O_DIRECT read into each succeeds', () => {
    const bufs = alignedBuffers(3, MiB);
    const file = [...files.keys()].find((f) => f.endsWith(`-${MiB}`))!;
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
    try {
      for (const b of bufs) expect(fs.readSync(fd, b, 0, DIRECT_ALIGN, 0)).toBe(DIRECT_ALIGN);
      // The control: one byte off the page boundary is refused, so the test above can fail.
      expect(() => fs.readSync(fd, bufs[0]!, 1, DIRECT_ALIGN, 0)).toThrow(/EINVAL/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('reads every size exactly, directly', async () => {
    const reader = new DirectReader(MiB);
    const [buf] = reader.buffers(1);
    for (const [file, data] of files) expect((await readWhole(reader, file, buf!)).equals(data)).toBe(true);
    expect(reader.isDirect).toBe(true);
  });

  it('falls back to ordinary reads, for good, when a direct read is refused, with the same bytes', async () => {
    const reader = new DirectReader(MiB);
    const misaligned = alignedBuffers(1, 2 * MiB)[0]!.subarray(16, 16 + MiB);
    for (const [file, data] of files) expect((await readWhole(reader, file, misaligned)).equals(data)).toBe(true);
    expect(reader.isDirect).toBe(false);
  });

  it('names a file that ends before the piece asked for, directly and not', async () => {
    for (const enabled of [true, false]) {
      const reader = new DirectReader(MiB, enabled);
      const [buf] = reader.buffers(1);
      const file = [...files.keys()].find((f) => f.endsWith('-4097'))!;
      const fh = await reader.open(file);
      try {
        await expect(reader.read(fh, file, buf!, 0, 8192, () => new Error('it shrank'))).rejects.toThrow('it shrank');
      } finally {
        await fh.close();
      }
    }
  });

  it('a directory storage stores large puts exactly, from aligned and unaligned buffers', async () => {
    const storage = new DirStorage(path.join(dir, 'repo'));
    for (const size of [MiB, MiB + 1, 5 * MiB + 4095]) {
      const aligned = alignedBuffers(1, Math.ceil(size / DIRECT_ALIGN) * DIRECT_ALIGN + DIRECT_ALIGN)[0]!;
      randomBytes(size).copy(aligned);
      for (const [what, data] of [
        ['aligned', aligned.subarray(0, size)],
        ['unaligned', aligned.subarray(1, size + 1)],
      ] as const) {
        const name = `obj/${what}-${size}`;
        await storage.put(name, data);
        expect(fs.statSync(path.join(dir, 'repo', 'obj', `${what}-${size}`)).size).toBe(size);
        expect((await storage.get(name)).equals(data)).toBe(true);
      }
    }
  });
});

describe('the file helpers beside direct I/O (agent/fs)', () => {
  const dir = tempDir('direct-helpers');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A handle that records its writes instead of writing, or refuses them as a filesystem without O_DIRECT does. */
  const recorder = (refuse = false) => {
    const writes: [number, number][] = [];
    const fh = {
      write: async (data: Buffer, offset: number, length: number, position: number) => {
        if (refuse) throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' });
        writes.push([position, length]);
        return { bytesWritten: length, buffer: data };
      },
    } as unknown as FileHandle;
    return { fh, writes };
  };

  it('writeSplit writes the whole pages directly and the rest the ordinary way, never a page both ways', async () => {
    const data = Buffer.alloc(2 * DIRECT_ALIGN + 100);
    for (const [position, direct, plain] of [
      [0, [[0, 2 * DIRECT_ALIGN]], [[2 * DIRECT_ALIGN, 100]]],
      [3 * DIRECT_ALIGN, [[3 * DIRECT_ALIGN, 2 * DIRECT_ALIGN]], [[5 * DIRECT_ALIGN, 100]]],
      [100, [], [[100, data.length]]], // off the page grid: the direct handle is not even asked for
    ] as const) {
      const d = recorder();
      const p = recorder();
      let asked = 0;
      await writeSplit(async () => (asked++, d.fh), async () => p.fh, data, position);
      expect([d.writes, p.writes], `at ${position}`).toEqual([direct, plain]);
      expect(asked).toBe(direct.length);
    }
    // Less than a page: all of it the ordinary way.
    const p = recorder();
    await writeSplit(async () => recorder().fh, async () => p.fh, Buffer.alloc(100), 0);
    expect(p.writes).toEqual([[0, 100]]);
  });

  it('writeSplit writes all of it the ordinary way when the direct write is refused, or there is no direct handle', async () => {
    const data = Buffer.alloc(2 * DIRECT_ALIGN + 100);
    for (const direct of [async () => recorder(true).fh, async () => null]) {
      const p = recorder();
      await writeSplit(direct, async () => p.fh, data, 0);
      expect(p.writes).toEqual([[0, data.length]]);
    }
  });

  it('writeSplit into a real file, through a direct and an ordinary handle, leaves exactly the bytes', async () => {
    const file = path.join(dir, 'split');
    const plain = await fs.promises.open(file, 'wx');
    const opener = new DirectOpener();
    const direct = await opener.open(file, fs.constants.O_WRONLY);
    try {
      const aligned = alignedBuffers(1, 3 * DIRECT_ALIGN)[0]!;
      randomBytes(aligned.length).copy(aligned);
      const first = aligned.subarray(0, 2 * DIRECT_ALIGN + 5); // page-aligned memory: two pages directly
      const second = randomBytes(DIRECT_ALIGN + 7); // unaligned memory: refused, then ordinary
      await writeSplit(async () => direct, async () => plain, first, 0);
      await writeSplit(async () => direct, async () => plain, second, 3 * DIRECT_ALIGN);
      const expected = Buffer.concat([first, Buffer.alloc(3 * DIRECT_ALIGN - first.length), second]);
      expect(fs.readFileSync(file).equals(expected)).toBe(true);
      expect(opener.enabled).toBe(true);
    } finally {
      await direct?.close();
      await plain.close();
    }
  });

  it('readPagesUnlessRefused reads whole pages into aligned memory, and says false when the kernel refuses', async () => {
    const file = path.join(dir, 'pages');
    const data = randomBytes(3 * DIRECT_ALIGN);
    fs.writeFileSync(file, data);
    const fh = (await new DirectOpener().open(file, fs.constants.O_RDONLY))!;
    try {
      const buf = alignedBuffers(1, 4 * DIRECT_ALIGN)[0]!;
      expect(await readPagesUnlessRefused(fh, buf, DIRECT_ALIGN, 2 * DIRECT_ALIGN)).toBe(true);
      expect(buf.subarray(0, 2 * DIRECT_ALIGN).equals(data.subarray(DIRECT_ALIGN))).toBe(true);
      expect(await readPagesUnlessRefused(fh, buf.subarray(1), 0, DIRECT_ALIGN)).toBe(false);
    } finally {
      await fh.close();
    }
  });

  it('mkdirDurable makes every missing directory, and is harmless when racing itself or when they exist', async () => {
    const deep = path.join(dir, 'a', 'b', 'c');
    await Promise.all([mkdirDurable(deep), mkdirDurable(deep), mkdirDurable(path.join(dir, 'a', 'b'))]);
    expect(fs.statSync(deep).isDirectory()).toBe(true);
    await mkdirDurable(deep);
    fs.writeFileSync(path.join(dir, 'file'), 'x');
    await expect(mkdirDurable(path.join(dir, 'file', 'sub'))).rejects.toThrow(/ENOTDIR|EEXIST/);
  });
});

/** A checkpoint of a database of `batches` batches of 100 random values, `smallest` to `smallest` + 3 KB each, in tables of 512 KiB. */
async function smallCheckpoint(dir: string, batches: number, smallest: number) {
  const db = new ClassicLevel<string, Buffer>(path.join(dir, 'db'), { valueEncoding: 'buffer', writeBufferSize: 512 * 1024, maxFileSize: 512 * 1024 });
  await db.open();
  for (let b = 0; b < batches; b++) await db.batch(Array.from({ length: 100 }, (_, i) => ({ type: 'put' as const, key: `k${b}-${i}`, value: randomBytes(smallest + ((b * 100 + i) % 3000)) })));
  await db.close();
  return createCheckpointSync({ dbPath: path.join(dir, 'db'), checkpointDir: path.join(dir, 'checkpoints'), id: '20261122T000000000Z-0001', label: null, pinned: false, trigger: 'manual' });
}

describe('backups and restores with and without direct I/O', () => {
  const dir = tempDir('direct-backup');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('give the same tree and the same restored files', async () => {
    const checkpoint = await smallCheckpoint(dir, 20, 1000);

    const trees: string[] = [];
    const restored: string[] = [];
    // One repository for both (its content ids are keyed: two repositories name the same tree apart).
    const repo = await Repository.open(new DirStorage(path.join(dir, 'repo')), { create: true, ...TEST_REPO });
    for (const directIo of [true, false]) {
      const record = await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(null), directIo });
      trees.push((await repo.readSnapshot(record.id)).tree);
      for (const restoreDirect of [true, false]) {
        const to = path.join(dir, `restored-${directIo}-${restoreDirect}`);
        await restoreBackup({ repo, id: record.id, to, directIo: restoreDirect });
        restored.push(to);
      }
    }
    expect(trees[0]).toBe(trees[1]);
    for (const to of restored) {
      const names = fs.readdirSync(checkpoint.path).filter((n) => n !== 'LOCK' && n !== 'LOG' && n !== 'LOG.old').sort();
      expect(fs.readdirSync(to).sort()).toEqual(names);
      for (const n of names) expect(fs.readFileSync(path.join(to, n)).equals(fs.readFileSync(path.join(checkpoint.path, n)))).toBe(true);
    }
  });
});

describe('a restore of chunks off the page grid', () => {
  const dir = tempDir('direct-odd');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each(['aligned', 'contiguous'] as const)('writes every byte where it belongs (no padding over a neighbour), directly or not: %s blobs', async (layout) => {
    // A repository whose file is cut into chunks of odd sizes (format v1 writes 1 MiB chunks, but a
    // restore must not trust that): writes then start and end off page boundaries, next to each other.
    // Packs as written now (blobs on page boundaries) and as written before (blobs back to back, so a
    // run of several chunks is read at once and starts off the page grid in the pack too).
    const repoDir = path.join(dir, `repo-${layout}`);
    const storage = new DirStorage(repoDir);
    // Packs made by hand, blobs named by their SHA-256: the plain format's.
    const repo = await Repository.open(storage, { create: true, insecureNoEncryption: true });
    const sizes = [5000, MiB, 3, 70_000, MiB + 17, 2 * 4096, 12_345]; // more than one run (2 MiB at most)
    const content = randomBytes(sizes.reduce((a, b) => a + b, 0));
    const chunks: string[] = [];
    const blobs: [string, Buffer][] = [];
    let at = 0;
    for (const size of sizes) {
      const chunk = content.subarray(at, at + size);
      at += size;
      const id = sha256(chunk);
      chunks.push(id);
      blobs.push([id, chunk]);
    }
    const tree = Buffer.from(canonicalJson({ version: 1, files: [{ name: 'odd', size: content.length, chunks }] }));
    const treeId = sha256(tree);
    blobs.push([treeId, tree]);
    const pack = layout === 'aligned' ? alignedPack(blobs) : contiguousPack(blobs);
    await repo.uploadPack(pack.id, pack.data);
    await repo.writeIndex([{ id: pack.id, size: pack.data.length, blobs: pack.blobs }]);
    const id = '20261122t000000000z-0001';
    await repo.writeSnapshot({
      version: 1,
      id,
      createdAt: new Date().toISOString(),
      hostname: 'test',
      pinned: false,
      checkpoint: { id: '20261122T000000000Z-0001', label: null, createdAt: new Date().toISOString(), trigger: 'manual' },
      tree: treeId,
      files: 1,
      bytes: content.length,
    });
    // And with the first run of the file written last, after its neighbour (a run that ends off the page
    // grid must never be padded to a whole page: the pad would land on the neighbour): its read is held
    // until the restore reports every other run written.
    class FirstRunLate extends DirStorage {
      private done = { bytesDone: 0, bytesTotal: 0 };
      private held: { length: number; release: () => void } | null = null;
      /** What the restore had written when the first run's read was let go; its length. */
      writtenBeforeFirst: number | null = null;
      firstLength: number | null = null;
      readonly onProgress = (p: { bytesDone: number; bytesTotal: number }) => {
        this.done = p;
        this.releaseIfOthersWritten();
      };
      override async getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
        if (name.startsWith('data/') && offset === 0) {
          await new Promise<void>((resolve, reject) => {
            const valve = setTimeout(() => reject(new Error('the other runs were never all written while the first one waited')), 60_000);
            this.held = { length, release: () => (clearTimeout(valve), resolve()) };
            this.releaseIfOthersWritten();
          });
        }
        return super.getRange(name, offset, length, into);
      }
      private releaseIfOthersWritten(): void {
        const h = this.held;
        if (h === null || this.done.bytesTotal === 0 || this.done.bytesDone !== this.done.bytesTotal - h.length) return;
        this.held = null;
        this.writtenBeforeFirst = this.done.bytesDone;
        this.firstLength = h.length;
        h.release();
      }
    }
    for (const directIo of [true, false]) {
      const late = new FirstRunLate(repoDir);
      for (const [what, r, onProgress] of [
        ['in order', repo, undefined],
        ['first run late', await Repository.open(late, TEST_REPO), late.onProgress],
      ] as const) {
        const to = path.join(dir, `restored-${layout}-${directIo}-${what.replace(/ /g, '-')}`);
        await restoreBackup({ repo: r, id, to, directIo, concurrency: 4, ...(onProgress ? { onProgress } : {}) });
        expect(fs.readFileSync(path.join(to, 'odd')).equals(content), `${what}, directIo ${directIo}`).toBe(true);
      }
      // The case happened: the first run (one that ends off the page grid) was written after all the others.
      expect(late.firstLength).not.toBeNull();
      expect(late.firstLength! % DIRECT_ALIGN).not.toBe(0);
      expect(late.writtenBeforeFirst).toBe(content.length - late.firstLength!);
    }
  });
});

function alignedPack(blobs: [string, Buffer][]): { id: string; data: Buffer; blobs: [string, number, number][] } {
  const builder = new PackBuilder(Buffer.alloc(4 * MiB));
  for (const [id, data] of blobs) builder.add(id, data);
  const pack = builder.finish();
  return { id: pack.id, data: Buffer.from(pack.data), blobs: pack.blobs };
}

/** A pack as written before blobs were aligned: back to back, then header, length, magic. */
function contiguousPack(blobs: [string, Buffer][]): { id: string; data: Buffer; blobs: [string, number, number][] } {
  const entries: [string, number, number][] = [];
  let at = 0;
  for (const [id, data] of blobs) {
    entries.push([id, at, data.length]);
    at += data.length;
  }
  const header = Buffer.from(canonicalJson({ version: 1, blobs: entries }));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  const data = Buffer.concat([...blobs.map(([, b]) => b), header, length, Buffer.from('NAPACK01')]);
  return { id: sha256(header), data, blobs: entries };
}

describe("a sealed backup's reads", () => {
  const dir = tempDir('direct-threads');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("go to the crypto threads, none through libuv's pool, and store the tree the pool's reads store", async () => {
    const checkpoint = await smallCheckpoint(dir, 10, 2000);
    const bytes = fs.readdirSync(checkpoint.path).reduce((s, n) => s + fs.statSync(path.join(checkpoint.path, n)).size, 0);
    expect(bytes).toBeGreaterThan(2 * MiB); // several chunks, several files

    // Every read through a FileHandle (what DirectReader.read does: one libuv pool job each).
    const probe = await fs.promises.open(path.join(checkpoint.path, 'CURRENT'), 'r');
    const proto = Object.getPrototypeOf(probe) as { read: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const read = proto.read;
    let poolReads = 0;
    proto.read = function (this: unknown, ...a: unknown[]) {
      poolReads++;
      return read.apply(this, a);
    };
    const repo = await Repository.open(new DirStorage(path.join(dir, 'repo')), { create: true, ...TEST_REPO });
    const counted: number[] = [];
    const trees: string[] = [];
    try {
      expect(repo.codec.encrypted).toBe(true);
      for (const threads of [true, false]) {
        // The negative control: the codec without its read-and-name step, as a plain codec is.
        if (!threads) Object.defineProperty(repo.codec, 'readAndIdentifyBlob', { value: undefined, configurable: true });
        poolReads = 0;
        // Pace max: auto probes the disk's latency with reads of its own, through the pool on purpose.
        const record = await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(null), pace: 'max' });
        counted.push(poolReads);
        trees.push((await repo.readSnapshot(record.id)).tree);
      }
    } finally {
      proto.read = read;
      await repo.codec.close();
    }
    expect(counted[0]).toBe(0);
    expect(counted[1]).toBeGreaterThanOrEqual(Math.ceil(bytes / MiB));
    expect(trees[0]).toBe(trees[1]);
  });
});
