import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readChunks, type ChunkSource } from '../dist/agent/backup/chunk-reader.js';
import type { ChunkJob, PlannedFile } from '../dist/agent/backup/backup-plan.js';
import { DirectReader } from '../dist/agent/fs/direct-reader.js';
import { CHUNK_SIZE, sha256 } from '../dist/agent/repository/format.js';
import { ErrorCodes } from '../dist/shared/errors.js';
import { tempDir } from './support/processes.js';

/**
 * Reading and hashing chunks alone (chunk-reader.ts), on real files with a real DirectReader, from a
 * fake source of jobs, into a fake `place` the test controls.
 */

/** Jobs over whole files, chunk by chunk, recording what is handed out and settled. */
class Jobs implements ChunkSource {
  readonly handedOut: ChunkJob[] = [];
  readonly settled = new Map<ChunkJob, (string | null)[]>();
  abandoned = 0;
  private readonly jobs: ChunkJob[] = [];

  constructor(reader: DirectReader, files: { file: string; size: number; claim?: number }[]) {
    for (const { file, size, claim } of files) {
      const handle = reader.open(file);
      const planned: PlannedFile = { name: path.basename(file), path: file, handle };
      const length = claim ?? size; // a file may claim more than it holds (one that shrank)
      for (let c = 0; c * CHUNK_SIZE < length; c++) {
        this.jobs.push({ file: planned, chunk: c, offset: c * CHUNK_SIZE, length: Math.min(CHUNK_SIZE, length - c * CHUNK_SIZE) });
      }
    }
  }

  get total(): number {
    return this.jobs.length;
  }

  next(): ChunkJob | null {
    const job = this.jobs[this.handedOut.length] ?? null;
    if (job) this.handedOut.push(job);
    return job;
  }

  async settle(job: ChunkJob, id: string | null): Promise<void> {
    this.settled.set(job, [...(this.settled.get(job) ?? []), id]);
  }

  async abandon(): Promise<void> {
    this.abandoned++;
  }

  async closeAll(): Promise<void> {
    for (const h of new Set(this.jobs.map((j) => j.file.handle))) await (await h).close();
  }
}

describe('chunk reader', () => {
  const dir = tempDir('chunk-reader');
  const files = new Map<string, Buffer>();

  beforeAll(() => {
    for (const size of [1, 4097, CHUNK_SIZE, 3 * CHUNK_SIZE + 17]) {
      const data = randomBytes(size);
      const file = path.join(dir, `f-${size}`);
      fs.writeFileSync(file, data);
      files.set(file, data);
    }
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const all = () => [...files].map(([file, data]) => ({ file, size: data.length }));

  it('places every chunk by the hash of its bytes, settles each job once with that hash, counts what it read', async () => {
    const reader = new DirectReader(CHUNK_SIZE);
    const jobs = new Jobs(reader, all());
    const placed = new Map<string, Buffer>();
    let read = 0;
    let placedBytes = 0;
    await readChunks({
      source: jobs,
      reader,
      buffers: reader.buffers(3),
      identify: async (chunk) => sha256(chunk),
      place: async (id, chunk) => void placed.set(id, Buffer.from(chunk)),
      checkCancel: () => {},
      onRead: (n) => (read += n),
      onPlaced: (n) => (placedBytes += n),
    });
    await jobs.closeAll();
    const total = [...files.values()].reduce((s, d) => s + d.length, 0);
    expect(read).toBe(total);
    expect(placedBytes).toBe(total);
    expect(jobs.handedOut).toHaveLength(jobs.total);
    for (const job of jobs.handedOut) {
      const [id, ...more] = jobs.settled.get(job)!;
      expect(more).toEqual([]);
      const expected = files.get(job.file.path)!.subarray(job.offset, job.offset + job.length);
      expect(id).toBe(sha256(expected));
      expect(placed.get(id!)!.equals(expected)).toBe(true);
    }
    expect(reader.isDirect).toBe(true); // the buffers are page-aligned: read around the page cache
  });

  it('reads into a buffer again only once place has resolved for the chunk it held', async () => {
    const reader = new DirectReader(CHUNK_SIZE);
    const jobs = new Jobs(reader, all());
    const buffers = reader.buffers(2);
    /** Buffers holding a chunk that `place` has not released yet. */
    const held = new Set<number>();
    /** Which of the buffers `b` is (or is a view of). */
    const key = (b: Buffer) => buffers.findIndex((x) => x.buffer === b.buffer && x.byteOffset === b.byteOffset);
    const reused: number[] = [];
    const read = reader.read.bind(reader);
    reader.read = async (fh, file, buf, offset, length, shrank) => {
      if (held.has(key(buf))) reused.push(offset);
      return read(fh, file, buf, offset, length, shrank);
    };
    // Places are released only when both buffers wait in one, oldest first: a reader that did not wait
    // for its place would read into a held buffer.
    const waiting: { chunk: Buffer; copy: Buffer; release: () => void }[] = [];
    let changed = 0;
    const releaseOldest = () => {
      const w = waiting.shift()!;
      if (!w.chunk.equals(w.copy)) changed++;
      held.delete(key(w.chunk));
      w.release();
    };
    let remaining = jobs.total;
    await readChunks({
      source: jobs,
      reader,
      buffers,
      identify: async (chunk) => sha256(chunk),
      place: (_id, chunk) =>
        new Promise<void>((release) => {
          held.add(key(chunk));
          waiting.push({ chunk, copy: Buffer.from(chunk), release });
          remaining--;
          if (waiting.length === buffers.length || remaining === 0) while (waiting.length > (remaining === 0 ? 0 : buffers.length - 1)) releaseOldest();
        }),
      checkCancel: () => {},
      onRead: () => {},
      onPlaced: () => {},
    });
    await jobs.closeAll();
    expect(reused).toEqual([]);
    expect(changed).toBe(0);
  });

  it('stops at the first failure: names the file that shrank, settles every job it took, then throws', async () => {
    const reader = new DirectReader(CHUNK_SIZE);
    const short = [...files].find(([, d]) => d.length === 4097)![0];
    const big = [...files].find(([, d]) => d.length > 3 * CHUNK_SIZE)![0];
    const jobs = new Jobs(reader, [
      { file: short, size: 4097, claim: 8192 }, // job 0: the file ends before the chunk does
      { file: big, size: 3 * CHUNK_SIZE + 17 }, // jobs 1..4
    ]);
    // The second reader's place waits until the first reader's failure has come back and every
    // reaction to it has run (setImmediate: after the microtasks queued so far), so that it goes on to
    // look for more work only after the failure.
    let failed!: () => void;
    const failureSeen = new Promise<void>((resolve) => (failed = resolve)).then(() => new Promise<void>((resolve) => setImmediate(resolve)));
    const settle = jobs.settle.bind(jobs);
    jobs.settle = async (job, id) => {
      await settle(job, id);
      if (id === null) failed();
    };
    const run = readChunks({
      source: jobs,
      reader,
      buffers: reader.buffers(2),
      identify: async (chunk) => sha256(chunk),
      place: () => failureSeen,
      checkCancel: () => {},
      onRead: () => {},
      onPlaced: () => {},
    });
    const err = (await run.catch((e: unknown) => e)) as { code?: string; message?: string };
    await jobs.closeAll();
    expect(err.code).toBe(ErrorCodes.CORRUPT);
    expect(err.message).toBe(`${path.basename(short)} shrank while being backed up`);
    // Every job taken was settled exactly once (no handle left behind), and no more were taken.
    expect(jobs.handedOut.map((j) => jobs.settled.get(j))).toEqual([[null], [expect.any(String)]]);
    expect(jobs.abandoned).toBe(1);
  });

  it('checks for a cancel before each chunk, and stops with it', async () => {
    const reader = new DirectReader(CHUNK_SIZE);
    const jobs = new Jobs(reader, all());
    let checks = 0;
    const cancelled = new Error('cancelled');
    const run = readChunks({
      source: jobs,
      reader,
      buffers: reader.buffers(1),
      identify: async (chunk) => sha256(chunk),
      place: async () => {},
      checkCancel: () => {
        if (++checks === 3) throw cancelled;
      },
      onRead: () => {},
      onPlaced: () => {},
    });
    await expect(run).rejects.toBe(cancelled);
    await jobs.closeAll();
    expect(jobs.handedOut.map((j) => jobs.settled.get(j)![0] === null)).toEqual([false, false, true]);
  });
});
