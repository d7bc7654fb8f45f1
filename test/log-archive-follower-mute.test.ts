/**
 * The log follower's directory watch, muted after a write to the live log for less time than a log
 * takes to fill (log-follower.ts `muteMs`; why no log goes unseen: docs/log-archive-design.md, "The
 * follower"): the watch reports every write to the live log, and muting it is what keeps the archive's
 * CPU low under steady writes. What must hold: no log goes unseen, even when LevelDB takes writes as
 * fast as it can and its logs live a few tens of ms.
 *
 * Real classic-level databases with LevelDB's default write buffer (4 MiB), four writers of 100 KB
 * values, and passes every 250 ms as the archiver makes them. Checked: every batch read once, in order,
 * without a gap, and they replay to the database; the watch was muted (it handled fewer events than
 * there were writes, where unmuted it handles several per write). Negative control: muted for a second
 * (longer than a log lives here), the follower misses logs, and the same check sees the gap.
 */
import fs from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { LogFollower, muteMs, type ReadBatch } from '../dist/agent/log-archive/log-follower.js';
import { ArchiveWorker } from '../dist/agent/log-archive/archive-worker-client.js';
import { batchEntries, batchLast } from '../dist/agent/log-archive/write-batch.js';
import { tempDir } from './support/processes.js';

const dirs: string[] = [];
const worker = new ArchiveWorker();
afterAll(async () => {
  await worker.close();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const MiB = 1024 * 1024;
const WRITERS = 4;
const PUTS = 1600;
const VALUE_BYTES = 100_000;
const KEYS = 200;
/** The archiver's passes, closer together than its default second so that the mute starts early. */
const PASS_MS = 250;

const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Followed {
  read: ReadBatch[];
  /** Events the watch handled once a log had finished (the mute is asked once per event). */
  events: number;
  /** Writes acknowledged over the same time. */
  writes: number;
  /** The mute the follower last chose. */
  lastMute: number;
  /** Logs LevelDB created while it wrote (seen by a watch of the test's own, never muted). */
  logsCreated: number;
  db: ClassicLevel<string, Buffer>;
}

/** PUTS writes of VALUE_BYTES from WRITERS writers, as fast as LevelDB takes them, followed by a follower muted by `mute`. */
async function follow(name: string, mute: (sizes: readonly number[]) => number): Promise<Followed> {
  const dir = tempDir(name);
  dirs.push(dir);
  const db = new ClassicLevel<string, Buffer>(dir, { valueEncoding: 'buffer' }); // LevelDB's default write buffer
  await db.open();
  let events = 0;
  let writes = 0;
  let lastMute = 0;
  let counting = false;
  const follower = new LogFollower(dir, worker, (sizes) => {
    if (sizes.length > 0) {
      counting = true;
      events++;
    }
    return (lastMute = mute(sizes));
  });
  await follower.open();
  const read: ReadBatch[] = [];
  const logs = new Set<number>();
  const watch = fs.watch(dir, (_event, n) => {
    if (typeof n === 'string' && n.endsWith('.log')) logs.add(Number(n.slice(0, -4)));
  });
  let done = false;
  let next = 0;
  const writers = Promise.all(
    Array.from({ length: WRITERS }, async () => {
      for (let i = next++; i < PUTS; i = next++) {
        await db.put(`k${i % KEYS}`, randomBytes(VALUE_BYTES));
        if (counting) writes++;
      }
    }),
  ).finally(() => (done = true));
  const passes = (async () => {
    while (!done) {
      const pass = await follower.pass();
      expect(pass.problem).toBeNull();
      read.push(...pass.batches);
      await sleep(PASS_MS);
    }
  })();
  await Promise.all([writers, passes]);
  read.push(...(await follower.pass()).batches);
  await follower.close();
  watch.close();
  return { read, events, writes, lastMute, logsCreated: logs.size, db };
}

/** Null if the batches are every write, once, in order, and replay to the database; else what is wrong. */
async function mismatch(f: Followed): Promise<string | null> {
  for (let i = 1; i < f.read.length; i++) {
    if (f.read[i]!.seq !== batchLast(f.read[i - 1]!) + 1) return `a gap after sequence ${batchLast(f.read[i - 1]!)}: the next batch read starts at ${f.read[i]!.seq}`;
  }
  // LevelDB commits concurrent writers' batches as one group (one log record): count their entries.
  const entries = f.read.reduce((n, b) => n + b.count, 0);
  if (f.read[0]?.seq !== 1 || entries !== PUTS) return `${entries} writes read from sequence ${f.read[0]?.seq}, ${PUTS} made from 1`;
  const replayed = new Map<string, string>();
  for (const b of f.read) for (const e of batchEntries(b.payload)) if (e.type === 'put') replayed.set(e.key.toString('utf8'), digest(e.value));
  const actual = new Map<string, string>();
  for await (const [k, v] of f.db.iterator()) actual.set(k, digest(v));
  if (replayed.size !== actual.size) return `${replayed.size} keys replayed, ${actual.size} in the database`;
  for (const [k, d] of actual) if (replayed.get(k) !== d) return `key ${k} differs`;
  return null;
}

describe('the log follower\'s muted watch', () => {
  it('mutes for less than the fastest fill of a log like the last ones, never before one finished, never for small logs', () => {
    const table: [number[], number][] = [
      [[], 0], // nothing finished yet: the watch stays armed
      [[64 * 1024], 0], // LevelDB's smallest write buffer: a log lives 2 ms
      [[256 * 1024], 0],
      [[1 * MiB], 2],
      [[2 * MiB], 5],
      [[4 * MiB], 10], // the default write buffer
      [[64 * MiB], 10], // never longer than the cap
      [[4 * MiB, 100 * 1024, 4 * MiB], 0], // the smallest decides: a forced switch, or an outsized batch in a small buffer
    ];
    for (const [sizes, ms] of table) expect(muteMs(sizes), `sizes ${sizes.join(', ')}`).toBe(ms);
  });

  it('misses no log while LevelDB takes writes as fast as it can, and handles a fraction of the writes as events', async () => {
    const f = await follow('mute', muteMs);
    try {
      expect(f.logsCreated).toBeGreaterThan(10); // logs rotated: the case a muted watch could get wrong
      expect(f.lastMute).toBe(10); // 4 MiB logs: muted at the cap
      // Fewer events than writes: not muted, each write to the log is several (the next test).
      // (Not a bound per second: one event per mute, but a timer can run early by the loop's busy time.)
      expect(f.events).toBeLessThan(f.writes);
      expect(await mismatch(f)).toBeNull();
    } finally {
      await f.db.close();
    }
  }, 120_000);

  it('not muted, the watch handles events by the write (what the mute is for)', async () => {
    const f = await follow('unmuted', () => 0);
    try {
      // LevelDB writes a 100 KB value as four 32 KiB blocks, one write(2) each: about four events a write
      // here. The kernel merges identical events not yet read, so fewer when this thread is busy.
      expect(f.events).toBeGreaterThan(f.writes / 2);
      expect(await mismatch(f)).toBeNull();
    } finally {
      await f.db.close();
    }
  }, 120_000);

  it('negative control: muted for longer than a log lives, it misses logs, and the check sees the gap', async () => {
    const f = await follow('mute-control', (sizes) => (sizes.length > 0 ? 1000 : 0));
    try {
      expect(f.lastMute).toBe(1000);
      expect(await mismatch(f)).toMatch(/a gap after sequence/);
    } finally {
      await f.db.close();
    }
  }, 120_000);
});
