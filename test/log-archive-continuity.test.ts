/**
 * One timeline through restarts, in process: a real classic-level database and an agent archiving its
 * log to a format 3 repository, stopped and started again eleven times (ten restarts) while a model
 * writer keeps writing (its writes fail while the node is down and are retried). Then:
 * - one window, no gap, one base (taken at the first start), a resume mark per restart;
 * - every moment restores exactly: inside each run (the model's bounds), and while the node was down
 *   (exactly the state at the stop);
 * - `restore --at seq:n` is the state right after the batch holding n, for several n;
 * - `backup changes` lists the batches the writer wrote (sequences, keys, order), offline and through the
 *   agent; `--key` finds every change of a key; a time range matches the restores at its ends;
 * - a database swapped for an earlier checkpoint starts a new timeline; one brought to the archive's
 *   sequence number with other writes does too (the proof compares the batches, not only the number),
 *   while one brought there with the same writes goes on (the negative control of that check).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { createAgent, type Agent, type ChangeBatch, type ChangesSummary } from '../dist/agent/index.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import type { Windows } from '../dist/agent/log-archive/timeline-windows.js';
import { cloneDbSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { runCli, tempDir } from './support/processes.js';
import { Writers, levelApply, readState, size, until, type Write } from './support/pitr-writers.js';
import { WriterModel, keyOf, valueOf } from './support/write-model.js';
import { TEST_KDF, TEST_REPO } from './support/test-password.js';

const RESTARTS = 10;
/** Ops the writer gets acknowledged in each run. */
const OPS_PER_RUN = 40;
/** How long the node stays down between two runs (the moments in between must restore too). */
const DOWN_MS = 300;

let dir: string;
let dbPath: string;
let repoUrl: string;
let socketPath: string;
let storage: Storage;
let repo: Repository;
let db: ClassicLevel<string, Buffer> | null = null;
let agent: Agent | null = null;
/** The node takes writes only between its agent's start and stop, as the example node does. */
let serving = false;
let inFlight = 0;
const logLines: { msg: string; reason?: string }[] = [];

/** The writer's ops go to whichever database is open; while the node is down they fail (and are retried). */
const writers = new Writers(
  async (writes: Write[]) => {
    if (!serving) throw new Error('the node is down');
    inFlight++;
    try {
      await levelApply(db!)(writes);
    } finally {
      inFlight--;
    }
  },
  { writers: 1, keysPerWriter: 30, batches: true, pauseMs: 3 },
);
const model = () => writers.models[0]!;

/** The base's sequence: the writer's op j covers S0 + prefix(j - 1) + 1 … S0 + prefix(j). */
let S0 = 0;
const prefix: number[] = [0];
function seqEnd(op: number): number {
  const ops = model().ops;
  while (prefix.length <= op) prefix.push(prefix.at(-1)! + ops[prefix.length - 1]!.length);
  return S0 + prefix[op]!;
}
const seqStart = (op: number) => seqEnd(op - 1) + 1;
/** The op whose batch holds sequence n (0: none, the base). */
function opOf(n: number): number {
  let j = 0;
  while (seqEnd(j) < n) j++;
  return j;
}

interface Run {
  /** The agent started and the node took writes from here… */
  servingFrom: number;
  /** …until here (after the stop, everything acknowledged was archived). */
  stoppedAt: number;
  ackedAtStop: number;
  /** When the node came back (the next run's start), or null for the last run. */
  restartedAt: number | null;
}
const runs: Run[] = [];
let windows: Windows;

function logger() {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line) as { msg: string; reason?: string });
      done();
    },
  });
  return pino({ level: 'info' }, sink);
}

async function startNode(): Promise<void> {
  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    socketPath,
    // Merging on short windows: merged segments span the restarts too.
    backup: { repository: repoUrl, kdfCost: TEST_KDF, logArchive: { intervalMs: 100, merge: { windowMs: 1000, largeWindowMs: 5000 } } },
    logger: logger(),
  });
  await agent.start();
}

/** Stops taking writes, lets those in flight land, then stops the agent (which ships them) and closes the database. */
async function stopNode(): Promise<void> {
  serving = false;
  await until('the writes in flight', () => inFlight === 0);
  await agent!.stop();
  await db!.close();
  agent = null;
  db = null;
}

const restorable = (w: Windows) => w.timelines.filter((t) => t.from !== null);

/** Waits until the newest timeline's window reaches sequence `n` (everything acknowledged is archived). */
async function archivedUpTo(n: number): Promise<void> {
  await until(`the archive to reach sequence ${n}`, async () => (await readWindows(storage)).timelines.at(-1)?.lastSequence === n);
}

/** Exactly the state after op j (a fresh model: any order of checks). */
function exactlyAfter(seen: Map<number, number>[], j: number): boolean {
  const fresh = Object.assign(new WriterModel(0), { ops: model().ops });
  return fresh.matchPrefix(seen[0]!, j, j) === j;
}

async function restoredState(at: Parameters<typeof restoreToMoment>[0]['at'], name: string) {
  const to = path.join(dir, name);
  const r = await restoreToMoment({ repo, at, to });
  const seen = await readState(to, 1, 'fork');
  fs.rmSync(to, { recursive: true });
  return { r, seen };
}

/** `backup changes` through the CLI (--json: NDJSON), offline or through the agent's socket. */
async function changes(args: string[], via: 'repo' | 'agent' = 'repo'): Promise<{ batches: ChangeBatch[]; summary: ChangesSummary }> {
  const where = via === 'repo' ? ['--repo', path.join(dir, 'repo')] : ['--socket', socketPath];
  const r = await runCli(['backup', 'changes', ...where, ...args, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { batch?: ChangeBatch; summary?: ChangesSummary });
  expect(lines.at(-1)!.summary).toBeDefined();
  return { batches: lines.slice(0, -1).map((l) => l.batch!), summary: lines.at(-1)!.summary! };
}

/** What the writer's op j looks like as a listed batch (`keys` only: the entries of these keys). */
function expectedBatch(j: number, only?: number) {
  const ops = model().ops[j - 1]!;
  const entries = ops.map((c, i) => ({ c, i })).filter(({ c }) => only === undefined || c.k === only);
  return {
    sequence: seqStart(j),
    last: seqEnd(j),
    puts: ops.filter((c) => c.put).length,
    deletes: ops.filter((c) => !c.put).length,
    changes: entries.map(({ c }) => ({ type: c.put ? 'put' : 'del', key: keyOf(0, c.k) })),
  };
}
const shape = (b: ChangeBatch) => ({ sequence: b.sequence, last: b.last, puts: b.puts, deletes: b.deletes, changes: b.changes.map((c) => ({ type: c.type, key: c.key })) });

beforeAll(async () => {
  dir = tempDir('continuity');
  dbPath = path.join(dir, 'db');
  repoUrl = pathToFileURL(path.join(dir, 'repo')).href;
  socketPath = path.join(dir, 'run', 'admin.sock');
});

afterAll(async () => {
  await writers.stop();
  serving = false;
  await agent?.stop().catch(() => {});
  await db?.close().catch(() => {});
  await repo?.codec.close();
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archive: one timeline through restarts', () => {
  it(`${RESTARTS} restarts under writes: one window, no gap, one base, and every moment restores exactly`, async () => {
    for (let run = 0; run <= RESTARTS; run++) {
      const restartedAt = Date.now();
      if (run > 0) runs.at(-1)!.restartedAt = restartedAt;
      await startNode();
      if (run === 0) {
        storage = await openStorage(repoUrl, {});
        await until('the first base', async () => restorable(await readWindows(storage)).length === 1);
        S0 = (await readWindows(storage)).timelines[0]!.lastSequence!;
        writers.start();
      }
      serving = true;
      const servingFrom = Date.now();
      const target = model().acked + OPS_PER_RUN;
      await until(`${OPS_PER_RUN} ops in run ${run}`, () => model().acked >= target);
      await stopNode();
      const stoppedAt = Date.now();
      runs.push({ servingFrom, stoppedAt, ackedAtStop: model().acked, restartedAt: null });
      // Everything acknowledged was archived by the clean stop (nothing is waited for here).
      const stopped = await readWindows(storage);
      expect(stopped.timelines.at(-1)!.lastSequence, `run ${run}: ${JSON.stringify({ timelines: stopped.timelines.map((t) => ({ id: t.id, lastSequence: t.lastSequence, brokenAfter: t.brokenAfter })), log: logLines.filter((l) => !/^storage /.test(l.msg)).slice(-12) })}`).toBe(seqEnd(model().acked));
      if (run < RESTARTS) await new Promise((r) => setTimeout(r, DOWN_MS)); // the downtime itself
    }
    expect(writers.failures).toBeGreaterThan(0); // writes came while the node was down

    windows = await readWindows(storage);
    repo = await Repository.open(storage, TEST_REPO);
    const [t] = restorable(windows);
    // Why a start did not go on, if one did not: the log says.
    const why = JSON.stringify(logLines.filter((l) => /cannot be proven|continuity lost|could not be read/.test(l.msg)));
    expect(restorable(windows).length, why).toBe(1);
    expect(windows.timelines.length, why).toBe(1);
    expect(windows.gaps).toEqual([]);
    expect(t!.brokenAfter).toBeNull();
    expect(t!.bases.length).toBe(1);
    expect(t!.marks.filter((m) => m.kind === 'resume').length).toBe(RESTARTS);
    expect(t!.marks.filter((m) => m.kind === 'stop').length).toBe(RESTARTS + 1);
    expect(t!.lastSequence).toBe(seqEnd(model().acked));
    expect(t!.from!).toBeLessThanOrEqual(runs[0]!.servingFrom);
    const proofs = logLines.filter((l) => l.msg.includes('the timeline goes on'));
    expect(proofs.length).toBe(RESTARTS);
    // Each start but the first went on; the first found no timeline.
    expect(logLines.filter((l) => l.msg.includes('cannot be proven')).map((l) => l.reason)).toEqual(['the repository holds no timeline yet']);

    // Moments: one inside each run (the model's bounds), two inside each downtime (exactly the state at the stop).
    const pick = (a: number, b: number) => a + 1 + Math.floor(Math.random() * Math.max(1, b - a - 1));
    for (const [i, run] of runs.entries()) {
      // (The last run's window ends at its stop mark: its last pass, a little before the stop returned.)
      const at = pick(run.servingFrom, Math.min(run.stoppedAt, t!.to!));
      const { r, seen } = await restoredState(at, `run-${i}`);
      expect(r.timeline).toBe(t!.id);
      expect(writers.mismatch(seen, writers.bounds(at), true), `a moment of run ${i}`).toBeNull();
      if (run.restartedAt === null) continue;
      for (const at of [pick(run.stoppedAt, run.restartedAt), run.restartedAt]) {
        const down = await restoredState(at, `down-${i}`);
        expect(exactlyAfter(down.seen, run.ackedAtStop), `a moment while the node was down after run ${i}`).toBe(true);
        expect(down.r.reached.sequence).toBe(seqEnd(run.ackedAtStop));
      }
    }
    // Negative control: the exact check tells states apart (the state at a stop is not the one before it).
    const early = await restoredState(pick(runs[0]!.stoppedAt, runs[0]!.restartedAt!), 'control');
    expect(exactlyAfter(early.seen, runs[1]!.ackedAtStop)).toBe(false);
  }, 240_000);

  it('restore --at seq:n is the state right after the batch holding n, for several n', async () => {
    const last = seqEnd(model().acked);
    const batchOp = model().ops.findIndex((c, i) => c.length > 2 && i + 1 <= model().acked) + 1;
    const ns = new Set<number>([
      S0, // the base itself, no batch applied
      S0 + 1,
      seqStart(batchOp) + 1, // inside a batch: the whole batch is applied
      ...runs.slice(1, 4).map((r, i) => seqStart(runs[i]!.ackedAtStop + 1)), // the first batches after restarts
      last,
      ...Array.from({ length: 4 }, () => S0 + 1 + Math.floor(Math.random() * (last - S0))),
    ]);
    for (const n of [...ns].sort((a, b) => a - b)) {
      const { r, seen } = await restoredState({ kind: 'sequence', sequence: n }, `seq-${n}`);
      const j = opOf(n);
      expect(r.reached.sequence, `seq:${n}`).toBe(seqEnd(j));
      expect(exactlyAfter(seen, j), `seq:${n} is the state after op ${j}`).toBe(true);
    }
    // Through the CLI, and its refusals: beyond the archive, and not a sequence number.
    const to = path.join(dir, 'cli-seq');
    const n = seqStart(batchOp) + 1;
    const ok = await runCli(['backup', 'restore', '--at', `seq:${n}`, '--repo', path.join(dir, 'repo'), '--to', to, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const out = JSON.parse(ok.stdout) as { requested: string; reached: { sequence: number }; behindMs: number | null };
    expect(out).toMatchObject({ requested: `seq:${n}`, reached: { sequence: seqEnd(batchOp) }, behindMs: null });
    expect(exactlyAfter(await readState(to, 1), batchOp)).toBe(true);
    const beyond = await runCli(['backup', 'restore', '--at', `seq:${last + 1}`, '--repo', path.join(dir, 'repo'), '--to', path.join(dir, 'beyond')]);
    expect(beyond.code).toBe(3);
    expect(beyond.stderr).toMatch(/seq:\d+ cannot be restored exactly: no timeline has archived it.*\(MOMENT_NOT_RESTORABLE\)/);
    const bad = await runCli(['backup', 'restore', '--at', 'seq:-1', '--repo', path.join(dir, 'repo'), '--to', path.join(dir, 'bad')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not a moment/);
    expect(fs.existsSync(path.join(dir, 'beyond')) || fs.existsSync(path.join(dir, 'bad'))).toBe(false);
  }, 120_000);

  it('backup changes lists the batches written, in order; --key finds every change of a key; the agent says the same', async () => {
    // A range across two restarts, from a batch's end to the middle of a batch.
    const j1 = runs[2]!.ackedAtStop - 5;
    const j2 = runs[4]!.ackedAtStop + 3;
    const mid = model().ops[j2 - 1]!.length > 1 ? seqStart(j2) + 1 : seqStart(j2);
    const listed = await changes(['--from', `seq:${seqEnd(j1)}`, '--to', `seq:${mid}`]);
    expect(listed.batches.map(shape)).toEqual(Array.from({ length: j2 - j1 }, (_, i) => expectedBatch(j1 + 1 + i)));
    expect(listed.summary).toMatchObject({ timeline: windows.timelines[0]!.id, batches: j2 - j1, firstSequence: seqStart(j1 + 1), lastSequence: seqEnd(j2) });

    // --key: every change of the most changed key, over the whole timeline.
    const counts = new Map<number, number>();
    for (const op of model().ops.slice(0, model().acked)) for (const c of op) counts.set(c.k, (counts.get(c.k) ?? 0) + 1);
    const [k] = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]!;
    const touching = model().ops.slice(0, model().acked).flatMap((op, i) => (op.some((c) => c.k === k) ? [i + 1] : []));
    const byKey = await changes(['--key', keyOf(0, k), '--values']);
    expect(byKey.batches.map(shape)).toEqual(touching.map((j) => expectedBatch(j, k)));
    expect(byKey.summary.scanned).toBe(model().acked);
    // --values: a put's value, byte for byte (not UTF-8: base64).
    const put = byKey.batches.find((b) => b.changes[0]!.type === 'put')!;
    const op = opOf(put.sequence);
    expect(Buffer.from(put.changes[0]!.value!, put.changes[0]!.valueEncoding === 'base64' ? 'base64' : 'utf8')).toEqual(valueOf(0, op, k, size(op, k)));
    // Negative control: a key never written matches nothing (and every batch was still read).
    const none = await changes(['--key', 'no-such-key']);
    expect(none.batches).toEqual([]);
    expect(none.summary.scanned).toBe(model().acked);

    // A time range is the difference between the restores at its ends.
    const t1 = runs[3]!.servingFrom + 50;
    const t2 = runs[5]!.stoppedAt - 50;
    const [r1, r2] = [(await restoredState(t1, 't1')).r, (await restoredState(t2, 't2')).r];
    const ranged = await changes(['--from', new Date(t1).toISOString(), '--to', new Date(t2).toISOString()]);
    expect(ranged.summary.firstSequence).toBe(r1.reached.sequence + 1);
    expect(ranged.summary.lastSequence).toBe(r2.reached.sequence);

    // Through the agent's socket: the same listing (the node is started once more for it: another restart).
    await startNode();
    serving = true;
    const viaAgent = await changes(['--from', `seq:${seqEnd(j1)}`, '--to', `seq:${mid}`], 'agent');
    expect(viaAgent.batches).toEqual(listed.batches);
    // The same summary, but for the segments read: the restarted agent may have merged a minute that
    // finished meanwhile (the same batches in fewer segments, never more).
    const { segments: segmentsViaAgent, ...summaryViaAgent } = viaAgent.summary;
    const { segments: segmentsListed, ...summaryListed } = listed.summary;
    expect(summaryViaAgent).toEqual(summaryListed);
    expect(segmentsViaAgent).toBeGreaterThan(0);
    expect(segmentsViaAgent).toBeLessThanOrEqual(segmentsListed);
    // Refusals: moments in no window, both a key and a prefix.
    const refused = await runCli(['backup', 'changes', '--socket', socketPath, '--to', 'seq:1000000000']);
    expect(refused.code).toBe(3);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    const both = await runCli(['backup', 'changes', '--repo', path.join(dir, 'repo'), '--key', 'a', '--prefix', 'b']);
    expect(both.code).toBe(2);
    await stopNode();
  }, 120_000);

  it('a database swapped for an earlier checkpoint starts a new timeline; at the same sequence with other writes too, with the same writes not', async () => {
    await writers.stop();
    await startNode();
    serving = true;
    const checkpoint = await agent!.createCheckpoint({ label: 'before-fork' });
    const forked = Array.from({ length: 8 }, (_, i) => [`fork/${i}`, Buffer.from(`archived ${i}`)] as const);
    for (const [k, v] of forked) await db!.put(k, v);
    // Everything before the checkpoint was archived by the last stop, so this is the checkpoint's sequence.
    const before = (await readWindows(storage)).timelines[0]!.lastSequence!;
    const L = before + forked.length;
    await archivedUpTo(L);
    await stopNode();
    const first = (await readWindows(storage)).timelines[0]!;

    // The database swapped for the checkpoint (a rollback): a new timeline from a new base at its sequence.
    const swap = (name: string) => {
      fs.renameSync(dbPath, path.join(dir, name));
      cloneDbSync(checkpoint.path, dbPath);
    };
    swap('db.before-rollback');
    await startNode();
    await until('a second timeline', async () => restorable(await readWindows(storage)).length === 2);
    // It gets writes of its own (its end is then a segment the next starts compare with).
    serving = true;
    const again = Array.from({ length: 5 }, (_, i) => [`fork/again-${i}`, Buffer.from(`second history ${i}`)] as const);
    for (const [k, v] of again) await db!.put(k, v);
    const L2 = before + again.length;
    await archivedUpTo(L2);
    await stopNode();
    let w = await readWindows(storage);
    expect(w.timelines[0]!.id).toBe(first.id);
    expect(w.timelines[0]!.to).toBe(first.to); // the old window is as it was: nothing spliced onto it
    expect(w.timelines[0]!.lastSequence).toBe(L);
    expect(w.timelines[1]!.bases.map((b) => b.sequence)).toEqual([before]);
    expect(logLines.filter((l) => l.msg.includes('cannot be proven')).at(-1)!.reason).toMatch(/at sequence \d+, timeline .* ends at \d+ \(another history/);
    const second = w.timelines[1]!;

    // Two databases reach the second timeline's last sequence number from the same checkpoint: one with
    // the same writes (the same history: it goes on), one with others (a new timeline).
    /** A clone of the checkpoint brought to L2 offline (the node's own open, no agent), then the node started on it. */
    const reachL2 = async (name: string, writes: readonly (readonly [string, Buffer])[]) => {
      swap(name);
      const offline = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
      await offline.open();
      for (const [k, v] of writes) await offline.put(k, v);
      await offline.close();
      await startNode();
    };
    // The same writes: the same history at the same sequence numbers. It goes on (the control).
    const proofsBefore = logLines.filter((l) => l.msg.includes('the timeline goes on')).length;
    const decided = () => logLines.filter((l) => l.msg.includes('the timeline goes on') || l.msg.includes('cannot be proven')).length;
    const decidedBefore = decided();
    await reachL2('db.second', again);
    await until('the proof', () => decided() > decidedBefore);
    await stopNode();
    expect(logLines.filter((l) => l.msg.includes('the timeline goes on')).length).toBe(proofsBefore + 1);
    w = await readWindows(storage);
    expect(w.timelines.length).toBe(2);
    expect(w.timelines[1]!.marks.filter((m) => m.kind === 'resume').length).toBe(second.marks.filter((m) => m.kind === 'resume').length + 1);

    // Other writes, the same count: the same sequence number, another history. A new timeline.
    const other = again.map(([k], i) => [k, Buffer.from(`not the archived ${i}`)] as const);
    await reachL2('db.third', other);
    await until('a third timeline', async () => restorable(await readWindows(storage)).length === 3);
    await stopNode();
    expect(logLines.filter((l) => l.msg.includes('cannot be proven')).at(-1)!.reason).toMatch(/differs from timeline .* at its end: key "fork\/again-4" at sequence \d+ is another value/);
    w = await readWindows(storage);
    expect(w.timelines[1]!.lastSequence).toBe(L2);
    expect(w.timelines[2]!.bases.map((b) => b.sequence)).toEqual([L2]);
    const latest = await restoreToMoment({ repo, at: 'latest', to: path.join(dir, 'latest') });
    expect(latest.timeline).toBe(w.timelines[2]!.id);
    const restored = new ClassicLevel<string, string>(path.join(dir, 'latest'), { createIfMissing: false });
    await restored.open();
    expect(await restored.get('fork/again-4')).toBe('not the archived 4');
    await restored.close();
    const old = await restoreToMoment({ repo, at: w.timelines[1]!.to!, to: path.join(dir, 'second-end') });
    expect(old.timeline).toBe(w.timelines[1]!.id);
  }, 180_000);

  it('backup verify --read-data reads every segment back, and names the one with a flipped byte', async () => {
    const repoDir = path.join(dir, 'repo');
    const ok = await runCli(['backup', 'verify', '--read-data', '--repo', repoDir, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const report = JSON.parse(ok.stdout) as { ok: boolean; segments: number; errors: string[] };
    const chained = (await readWindows(storage)).timelines.reduce((n, t) => n + t.segments.length, 0);
    expect(report).toMatchObject({ ok: true, segments: chained, errors: [] });
    expect(chained).toBeGreaterThan(3);

    // One byte of one segment of the first timeline, in the middle of the object.
    const s = (await readWindows(storage)).timelines[0]!.segments[1]!;
    const name = `wal/${s.timeline}/seg/${String(s.first).padStart(20, '0')}-${String(s.last).padStart(20, '0')}-${String(s.from).padStart(13, '0')}-${String(s.to).padStart(13, '0')}`;
    const file = path.join(repoDir, name);
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    fs.writeFileSync(file, bytes);
    const bad = await runCli(['backup', 'verify', '--read-data', '--repo', repoDir]);
    expect(bad.code).toBe(7);
    expect(bad.stdout).toContain(`error: object ${name}`);
    expect(bad.stderr).toContain(name);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    // Without --read-data the segments are not read: the structure alone is fine.
    const quick = await runCli(['backup', 'verify', '--repo', repoDir]);
    expect(quick.code, quick.stderr).toBe(0);
  }, 120_000);
});
