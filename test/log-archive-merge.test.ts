/**
 * Merging the log archive's segments as they age (segment-merger.ts): the plan as data, the covering
 * chain a reader takes while a merged segment and its inputs are both listed, and a real run: an
 * embedded agent archiving a database under writes with short merge windows (1 s and 5 s instead of a
 * minute and an hour), checked against the model of acknowledged writes at random moments after the
 * merges, and a merge cut short between storing the merged segment and deleting its inputs (the state
 * a kill -9 there leaves): still exact, and the next merge clears the leftovers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { decodeSegment, encodeSegment, parseWalName, segmentName, sha256Here } from '../dist/agent/log-archive/segment.js';
import { bodyBytes, HEADER_ROOM, SegmentBuilder } from '../dist/agent/log-archive/segment-builder.js';
import { timelineWindows } from '../dist/agent/log-archive/timeline-windows.js';
import { listSegments, MAX_MERGED_BYTES, planMerges, runMerges, type SizedSegment } from '../dist/agent/log-archive/segment-merger.js';
import { archiveChanges, parseChangesRequest } from '../dist/agent/log-archive/archive-changes.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { tempDir } from './support/processes.js';
import { Writers, levelApply, readState, until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

const T = '20261123t100000000z-aaaa';
const MIN = 60_000;
const HOUR = 3_600_000;
const H0 = 1_795_000_000_000 - (1_795_000_000_000 % HOUR); // an hour boundary
const sized = (first: number, last: number, from: number, to: number, size = 1000): SizedSegment => {
  const info = { timeline: T, first, last, from, to };
  return { ...info, name: segmentName(info), size };
};

describe('planMerges', () => {
  it('finished minutes become one segment each; the current minute waits', () => {
    const segs = [sized(1, 10, H0, H0 + 10_000), sized(11, 20, H0 + 10_000, H0 + 30_000), sized(21, 30, H0 + 30_000, H0 + MIN - 1), sized(31, 40, H0 + MIN - 1, H0 + MIN + 5000), sized(41, 50, H0 + MIN + 5000, H0 + MIN + 9000)];
    const plan = planMerges(segs);
    expect(plan.merges.map((r) => r.map((s) => s.first))).toEqual([[1, 11, 21]]);
    expect(plan.leftovers).toEqual([]);
  });

  it('a finished hour becomes as few segments as the size cap allows, each run consecutive', () => {
    const segs = Array.from({ length: 6 }, (_, i) => sized(i * 10 + 1, i * 10 + 10, H0 + i * 10 * MIN, H0 + (i + 1) * 10 * MIN - 1, 10));
    segs.push(sized(61, 70, H0 + HOUR - 1, H0 + HOUR + 1000));
    expect(planMerges(segs).merges.map((r) => r.length)).toEqual([6]);
    expect(planMerges(segs, undefined, 25).merges.map((r) => r.map((s) => s.first))).toEqual([[1, 11], [21, 31], [41, 51]]);
  });

  it('after a merge cut short (merged stored, inputs not deleted): the inputs are leftovers, nothing is merged twice', () => {
    const inputs = [sized(1, 10, H0, H0 + 10_000), sized(11, 20, H0 + 10_000, H0 + 20_000)];
    const merged = sized(1, 20, H0, H0 + 20_000, 2000);
    const plan = planMerges([...inputs, merged, sized(21, 30, H0 + 20_000, H0 + 2 * MIN)]);
    expect(plan.leftovers.sort()).toEqual(inputs.map((s) => s.name).sort());
    expect(plan.merges).toEqual([]);
  });

  it('the covering chain: a merged segment is preferred over its inputs; a partial overlap is never spliced', () => {
    const objects = [sized(1, 10, 0, 10), sized(11, 20, 10, 20), sized(1, 20, 0, 20), sized(21, 30, 20, 30)].map((s) => parseWalName(s.name)!);
    const w = timelineWindows(objects, new Set());
    expect(w.timelines[0]!.segments.map((s) => [s.first, s.last])).toEqual([[1, 20], [21, 30]]);
    const partial = [sized(1, 15, 0, 15), sized(11, 30, 10, 30)].map((s) => parseWalName(s.name)!);
    const p = timelineWindows(partial, new Set()).timelines[0]!;
    expect(p.segments.map((s) => [s.first, s.last])).toEqual([[1, 15]]);
    expect(p.brokenAfter).toBe(15);
  });
});

const WRITERS = 3;
let dir: string;
let agent: Agent | null = null;
let db: ClassicLevel<string, Buffer> | null = null;
let writers: Writers | null = null;

afterAll(async () => {
  await writers?.stop();
  await agent?.stop();
  await db?.close().catch(() => {});
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('merging in a running archiver', () => {
  it('merges finished windows while the node writes; restores to random moments stay exact; a cut-short merge is cleared', async () => {
    dir = tempDir('pitr-merge');
    const dbPath = path.join(dir, 'db');
    const repoDir = path.join(dir, 'repo');
    db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024 });
    await db.open();
    writers = new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: 200, batches: true, pauseMs: 5 });
    writers.start();
    agent = createAgent({
      dbPath,
      checkpointDir: path.join(dir, 'checkpoints'),
      backup: { repository: pathToFileURL(repoDir).href, logArchive: { intervalMs: 100, merge: { windowMs: 1000, largeWindowMs: 5000 } } },
      logger: pino({ level: 'silent' }),
    });
    await agent.start();
    const storage = new DirStorage(repoDir);
    await until('the first base', async () => (await readWindows(storage)).timelines.some((t) => t.from !== null));
    const started = Date.now();
    // Both conditions: 12 s hold two large windows (5 s) finished and merged, and 60 segments are
    // enough to see the merge at work; a loaded machine ships fewer a second, so it writes for longer.
    const a = agent;
    await until('12 s of writes and 60 segments shipped', async () => Date.now() >= started + 12_000 && (await a.status()).logArchive!.shippedSegments > 60, 60_000);
    await writers.stop();
    const status = (await agent.status()).logArchive!;
    await agent.stop();
    agent = null;

    const w = await readWindows(storage);
    expect(w.timelines.length).toBe(1);
    const t = w.timelines[0]!;
    expect(t.brokenAfter).toBeNull();
    const repo = await Repository.open(storage, TEST_REPO);
    const listed = await listSegments(repo, t.id);
    // Merged: far fewer objects than segments shipped (about ten a second).
    expect(status.shippedSegments).toBeGreaterThan(50);
    expect(listed.length).toBeLessThan(status.shippedSegments / 3);
    expect(listed.some((s) => s.to - s.from >= 4000)).toBe(true); // a large window merged
    await db.close();

    const moments = Array.from({ length: 12 }, () => t.from! + Math.floor(Math.random() * (t.to! - t.from!)));
    moments.push(t.to!);
    moments.sort((a, b) => a - b);
    for (const [i, at] of moments.entries()) {
      const to = path.join(dir, `restored-${i}`);
      const r = await restoreToMoment({ repo, at, to });
      expect(r.reached.time).toBeLessThanOrEqual(at);
      expect(writers.mismatch(await readState(to, WRITERS), writers.bounds(at), false), `restore to ${new Date(at).toISOString()}`).toBeNull();
      fs.rmSync(to, { recursive: true });
    }

    // A merge cut short: the merged segment stored, its inputs not deleted (a kill -9 between the two).
    const chain = (await readWindows(storage)).timelines[0]!.segments;
    const last3 = chain.slice(-3);
    expect(last3.length).toBe(3);
    const inputs = (await listSegments(repo, t.id)).filter((s) => last3.some((c) => c.first === s.first && c.last === s.last));
    const failingDeletes = Object.assign(Object.create(storage) as DirStorage, { delete: async () => { throw new Error('killed'); } });
    await expect(runMerges(repo.on(failingDeletes), { merges: [inputs], leftovers: [] })).rejects.toThrow('killed');
    const both = await listSegments(repo, t.id);
    expect(both.length).toBe(listed.length + 1);
    const during = (await readWindows(storage)).timelines[0]!;
    expect([during.to, during.lastSequence, during.brokenAfter]).toEqual([t.to, t.lastSequence, null]);
    const latest = path.join(dir, 'latest');
    await restoreToMoment({ repo, at: t.to!, to: latest });
    expect(writers.mismatch(await readState(latest, WRITERS), writers.bounds(t.to!), true)).toBeNull();
    const plan = planMerges(both, { windowMs: 1000, largeWindowMs: 5000 });
    expect(plan.leftovers.sort()).toEqual(inputs.map((s) => s.name).sort());
    await runMerges(repo, { merges: [], leftovers: plan.leftovers });
    expect((await listSegments(repo, t.id)).length).toBe(listed.length - 2);

    // Negative control: the model check refuses a restore compared with the first moment's bounds.
    expect(writers.mismatch(await readState(latest, WRITERS), writers.bounds(t.from!), true)).not.toBeNull();

    // backup changes while a merge replaces segments it has yet to read (the agent merges while it
    // lists): it lists again and goes on, every batch once, in order, as a listing left alone.
    const listAll = async (onBatch: () => Promise<void>) => {
      const sequences: number[] = [];
      const gen = archiveChanges(repo, parseChangesRequest({}));
      for (;;) {
        const n = await gen.next();
        if (n.done) return { sequences, summary: n.value };
        sequences.push(n.value.sequence);
        await onBatch();
      }
    };
    const alone = await listAll(async () => {});
    const chainNow = (await readWindows(storage)).timelines[0]!.segments;
    const tail = (await listSegments(repo, t.id)).filter((s) => chainNow.slice(-3).some((c) => c.first === s.first && c.last === s.last));
    expect(tail.length).toBe(3);
    let merged = false;
    const during2 = await listAll(async () => {
      if (merged) return;
      merged = true;
      await runMerges(repo, { merges: [tail], leftovers: [] });
    });
    // The merge took segments the listing had yet to read: their names were gone when it got there.
    expect(tail.every((s) => s.first > during2.sequences[0]!)).toBe(true);
    expect((await listSegments(repo, t.id)).some((s) => s.name === tail[0]!.name)).toBe(false);
    expect(during2.sequences).toEqual(alone.sequences);
    expect(during2.summary.lastSequence).toBe(alone.summary.lastSequence);
    expect(during2.summary.scanned).toBe(alone.summary.scanned);
  }, 120_000);
});

// Bounded memory (issue 22): a merged segment holds at most maxBodyBytes of log whatever it compresses
// to, built input by input into one buffer; the planner leaves a window alone whose known bodies say a
// merge cannot make fewer segments.
describe('merges bounded by the bytes of log they hold', () => {
  /** A segment of `n` batches of one entry each, `size` bytes of payload each, from sequence `first`. */
  const batchesOf = (first: number, n: number, size: number, readAt: number) =>
    Array.from({ length: n }, (_, i) => {
      const payload = Buffer.alloc(size, 0x61 + (i % 26)); // compresses to almost nothing: stored size says little
      payload.writeBigUInt64LE(BigInt(first + i), 0);
      payload.writeUInt32LE(1, 8);
      return { seq: first + i, count: 1, payload, readAt };
    });

  it('SegmentBuilder makes the bytes encodeSegment makes, in a reused buffer, appended in pieces', async () => {
    const info = { timeline: T, first: 1, last: 30, from: H0, to: H0 + 1000 };
    const batches = batchesOf(1, 30, 500, H0 + 500);
    const builder = new SegmentBuilder(Buffer.alloc(HEADER_ROOM + 64 * 1024));
    for (let round = 0; round < 2; round++) {
      builder.add(batches.slice(0, 10));
      builder.add(batches.slice(10));
      expect(builder.bytes).toBe(bodyBytes(batches));
      expect(await builder.finish(info, sha256Here)).toEqual(await encodeSegment(info, batches));
    }
    // Negative control: more than the buffer holds is refused, not written past its end.
    const small = new SegmentBuilder(Buffer.alloc(HEADER_ROOM + 4096));
    expect(small.fits(bodyBytes(batches))).toBe(false);
    expect(() => small.add(batches)).toThrow('do not fit');
    expect(await SegmentBuilder.encode(Buffer.alloc(HEADER_ROOM + 4096), info, batches, sha256Here)).toBeNull();
  });

  it('a run holding more log than the cap becomes several merged segments; an input over the cap alone stays; every batch kept, in order', async () => {
    const dir = tempDir('merge-cap');
    const repo = await Repository.open(new DirStorage(path.join(dir, 'repo')), { ...TEST_REPO, create: true });
    // Ten inputs of 20 batches x 1000 bytes (20,240 bytes of body each), the seventh 60 batches (over the cap).
    const inputs: SizedSegment[] = [];
    const all: number[] = [];
    let seq = 1;
    for (let i = 0; i < 10; i++) {
      const n = i === 6 ? 60 : 20;
      const info = { timeline: T, first: seq, last: seq + n - 1, from: H0 + i * 1000, to: H0 + (i + 1) * 1000 };
      const batches = batchesOf(seq, n, 1000, info.to);
      await repo.putObject(segmentName(info), await encodeSegment(info, batches));
      for (const b of batches) all.push(b.seq);
      seq += n;
    }
    inputs.push(...(await listSegments(repo, T)));
    expect(inputs.length).toBe(10);
    const cap = 50_000; // two inputs fit, three do not
    const bodies = new Map<string, number>();
    const done = await runMerges(repo, { merges: [inputs], leftovers: [] }, sha256Here, { maxBodyBytes: cap, bodies });
    const after = await listSegments(repo, T);
    // [0,1] [2,3] [4,5] merged; 6 alone (over the cap); [7,8] merged; 9 alone (nothing left to pair with).
    expect(after.map((s) => [s.first, s.last])).toEqual([
      [1, 40],
      [41, 80],
      [81, 120],
      [121, 180],
      [181, 220],
      [221, 240],
    ]);
    expect(done).toEqual({ stored: 4, deleted: 8 });
    expect([...bodies.keys()].sort()).toEqual(after.map((s) => s.name).sort());
    for (const s of after) expect(bodies.get(s.name)!).toBeLessThanOrEqual(s.first === 121 ? 60 * 1012 : cap);
    const read: number[] = [];
    for (const s of after) for (const b of await decodeSegment(s.name, s, await repo.getObject(s.name))) read.push(b.seq);
    expect(read).toEqual(all);

    // With those bodies known, the planner merges nothing more there: each pair is at the cap already.
    const windows = { windowMs: 60 * MIN, largeWindowMs: 120 * MIN };
    const listed = [...after, sized(241, 250, H0 + 60 * MIN + 1, H0 + 60 * MIN + 2)];
    expect(planMerges(listed, windows, MAX_MERGED_BYTES, bodies, cap).merges).toEqual([]);
    // Negative control: without them (stored sizes alone, a few KiB each) it would merge them all again.
    expect(planMerges(listed, windows, MAX_MERGED_BYTES, new Map(), cap).merges.map((r) => r.length)).toEqual([6]);
  });
});
