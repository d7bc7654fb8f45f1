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
import { parseWalName, segmentName } from '../dist/agent/log-archive/segment.js';
import { timelineWindows } from '../dist/agent/log-archive/timeline-windows.js';
import { listSegments, planMerges, runMerges, type SizedSegment } from '../dist/agent/log-archive/segment-merger.js';
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
    await until('12 s of writes', () => Date.now() >= started + 12_000, 20_000);
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
