/**
 * Restore to a moment, differentially: writers put, overwrite, delete and write multi-key batches into a
 * real classic-level database (a small write buffer: logs rotate every few hundred ms, tables flush and
 * compact) while an embedded agent archives its log to a file:// repository every second, with two more
 * base backups taken during the run. Then many restores to random moments across the whole window: each
 * restored database must equal, for every writer, the state after some op j of that writer with j at
 * least the last op acknowledged 2 s before the moment and at most the last op issued at or before it.
 * Negative controls: a batch skipped, and a batch applied twice, are caught by the same check; a damaged
 * segment is refused. Then a second run of the agent (a new timeline, a gap between the two) and the CLI:
 * `backup timeline`, `backup restore --at` (latest, inside each timeline) and its refusals.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { readWindows, restoreToMoment, collectBatches } from '../dist/agent/log-archive/restore-to-moment.js';
import { chooseBase, type Windows } from '../dist/agent/log-archive/timeline-windows.js';
import { encodeLog } from '../dist/agent/log-archive/log-writer.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import { batchEntries, batchLast } from '../dist/agent/log-archive/write-batch.js';
import { logFileName } from '../dist/agent/leveldb/file-names.js';
import { runCli, tempDir } from './support/processes.js';
import { keyOf, parseKey, valueOf } from './support/write-model.js';
import { Writers, levelApply, readState, size, until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

const WRITERS = 4;
const KEYS_PER_WRITER = 400;
const RUN_MS = Number(process.env.NODE_ADMIN_PITR_RUN_MS ?? 18_000);
const RESTORES = Number(process.env.NODE_ADMIN_PITR_RESTORES ?? 100);
const silent = pino({ level: 'silent' });

let dir: string;
let dbPath: string;
let repoDir: string;
let db: ClassicLevel<string, Buffer>;
let agent: Agent | null = null;
let storage: Storage;
let repo: Repository;
let writers: Writers;
let windows: Windows;

function newAgent(): Agent {
  return createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    retention: { keepLast: 20 },
    backup: { repository: pathToFileURL(repoDir).href, logArchive: { intervalMs: 1000 } },
    logger: silent,
  });
}

async function bases(): Promise<string[]> {
  const names: string[] = [];
  for await (const o of storage.list('wal/')) if (o.name.includes('/base/')) names.push(o.name);
  return names;
}

beforeAll(async () => {
  dir = tempDir('pitr');
  dbPath = path.join(dir, 'db');
  repoDir = path.join(dir, 'repo');
  fs.mkdirSync(repoDir);
  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024, maxFileSize: 256 * 1024 });
  await db.open();
  storage = await openStorage(pathToFileURL(repoDir).href, { logger: silent });
  // A few hundred ops a second in all (logs still rotate several times a second): the test is about
  // exactness, and each restore replays every batch since its base.
  writers = new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: KEYS_PER_WRITER, batches: true, pauseMs: 5 });
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  await db?.close().catch(() => {});
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archive: restore to a moment', () => {
  it('archives a database under writes, with three bases in one timeline', async () => {
    writers.start();
    agent = newAgent();
    await agent.start();
    // The first base is taken by the agent itself, in the background, while the writers write.
    await until('the first base', async () => (await bases()).length >= 1);
    const started = Date.now();
    for (const at of [RUN_MS / 3, (2 * RUN_MS) / 3]) {
      await new Promise((r) => setTimeout(r, Math.max(0, started + at - Date.now())));
      const checkpoint = await agent.createCheckpoint({ label: 'second-base' });
      await agent.createBackup({ checkpointId: checkpoint.id });
    }
    await new Promise((r) => setTimeout(r, Math.max(0, started + RUN_MS - Date.now())));
    await writers.stop();
    await agent.stop();
    agent = null;
    repo = await Repository.open(storage, TEST_REPO);
    windows = await readWindows(storage);
    expect(windows.timelines.length).toBe(1);
    const t = windows.timelines[0]!;
    expect(t.bases.filter((b) => b.usable).length, JSON.stringify(t.bases)).toBe(3);
    expect(t.brokenAfter).toBeNull();
    expect(t.to! - t.from!).toBeGreaterThan(RUN_MS * 0.8);
    // Logs rotated many times and tables were written: the archive spans far more than one log.
    expect(t.segments.length).toBeGreaterThan(RUN_MS / 2000);
    // After the agent stopped, everything was shipped: the window reaches the database's last sequence.
    await db.close();
    expect(t.lastSequence).toBe((await dbSequence(dbPath)).sequence);
    await db.open();
  }, 180_000);

  it(`restores ${RESTORES} random moments exactly`, async () => {
    const t = windows.timelines[0]!;
    const moments = Array.from({ length: RESTORES }, () => t.from! + Math.floor(Math.random() * (t.to! - t.from!)));
    // The edges too: each base's first moment and the window's last.
    moments.push(...t.bases.map((b) => b.from), t.to!);
    moments.sort((a, b) => a - b);
    const usedBases = new Set<string>();
    let batchesApplied = 0;
    let maxBehind = 0;
    for (const [i, at] of moments.entries()) {
      const to = path.join(dir, `restored-${i}`);
      const r = await restoreToMoment({ repo, at, to });
      usedBases.add(r.backup);
      batchesApplied += r.batches;
      expect(r.reached.time).toBeLessThanOrEqual(at);
      maxBehind = Math.max(maxBehind, at - r.reached.time);
      const problem = writers.mismatch(await readState(to, WRITERS), writers.bounds(at), false);
      expect(problem, `restore to ${new Date(at).toISOString()} (${r.batches} batches on backup ${r.backup})`).toBeNull();
      fs.rmSync(to, { recursive: true });
    }
    // Every base served some restores, and restores applied archived batches (not only bases).
    expect(usedBases.size).toBe(3);
    expect(batchesApplied).toBeGreaterThan(moments.length);
    console.log(`${moments.length} restores exact; ${batchesApplied} batches applied; the point reached was at most ${maxBehind} ms before the moment`);
  }, 600_000);

  it('negative controls: a batch skipped or applied twice is caught by the same check', async () => {
    const t = windows.timelines[0]!;
    const base = t.bases.find((b) => b.usable)!;
    const at = t.to!;
    const { batches } = await collectBatches(await Repository.open(storage, TEST_REPO), t, base, at);
    expect(batches.length).toBeGreaterThan(50);
    const bounds = writers.bounds(at);
    const keys = batches.map((b) => batchEntries(b.payload).map((e) => e.key.toString()));
    const putKeys = batches.map((b) => batchEntries(b.payload).filter((e) => e.type === 'put').map((e) => e.key.toString()));
    const writerOf = (i: number) => parseKey(keys[i]![0]!)!.writer;
    // Per batch: the last batch after it touching one of its keys (-1: none), and its writer's last batch.
    const lastTouch = new Map<string, number>();
    const lastOfWriter = new Map<number, number>();
    const laterTouch: number[] = [];
    const laterPutTouch: number[] = [];
    for (let i = batches.length - 1; i >= 0; i--) {
      laterTouch[i] = Math.max(-1, ...keys[i]!.map((k) => lastTouch.get(k) ?? -1));
      laterPutTouch[i] = Math.max(-1, ...putKeys[i]!.map((k) => lastTouch.get(k) ?? -1));
      for (const k of keys[i]!) if (!lastTouch.has(k)) lastTouch.set(k, i);
      if (!lastOfWriter.has(writerOf(i))) lastOfWriter.set(writerOf(i), i);
    }
    const plant = async (name: string, planted: typeof batches) => {
      const to = path.join(dir, name);
      await restoreBackup({ repo, id: base.backup, to });
      const { nextFileNumber } = await dbSequence(to);
      // Written straight, past appendBatches' own check (which refuses both plants: see below).
      fs.writeFileSync(path.join(to, logFileName(nextFileNumber)), encodeLog(planted.map((b) => b.payload)));
      const problem = writers.mismatch(await readState(to, WRITERS), bounds, true);
      fs.rmSync(to, { recursive: true });
      return problem;
    };
    // Skipped: a batch that writes a value and whose keys no later batch touches, followed by more ops of
    // its writer (so no prefix of that writer's history holds the later ops without it).
    const mid = Math.floor(batches.length / 2);
    const skip = batches.findIndex((_, i) => i >= mid && putKeys[i]!.length > 0 && laterTouch[i] === -1 && lastOfWriter.get(writerOf(i))! > i);
    expect(skip).toBeGreaterThan(0);
    expect(await plant('skipped', batches.filter((_, i) => i !== skip))).not.toBeNull();
    // Applied twice: a batch replayed at the end, after later batches changed its keys (with a fresh
    // sequence number, or LevelDB would rank it below them).
    const twice = batches.findIndex((_, i) => i >= mid && laterPutTouch[i]! > i);
    const copy = Buffer.from(batches[twice]!.payload);
    copy.writeBigUInt64LE(BigInt(batchLast(batches.at(-1)!) + 1), 0);
    expect(await plant('twice', [...batches, { ...batches[twice]!, payload: copy }])).not.toBeNull();
    // And the unplanted list passes the same check (the control is about the plants, not the check).
    expect(await plant('unplanted', batches)).toBeNull();
  }, 120_000);

  it('a second run starts a new timeline; the CLI lists both with the gap and restores in each', async () => {
    const before = (await readWindows(storage)).timelines[0]!;
    // While the agent is down the node writes: the archive cannot follow, so the next run must not splice.
    await db.put(keyOf(0, 0), valueOf(0, writers.models[0]!.issued + 1, 0, size(writers.models[0]!.issued + 1, 0)));
    writers.models[0]!.ops.push([{ k: 0, put: true }]);
    writers.models[0]!.issued++;
    writers.models[0]!.acked++;
    writers.times[0]!.issuedAt.push(Date.now());
    writers.times[0]!.ackedAt.push(Date.now());
    await new Promise((r) => setTimeout(r, 1500)); // a gap of at least this long between the windows
    writers.start();
    agent = newAgent();
    await agent.start();
    await until('the second timeline', async () => (await readWindows(storage)).timelines.some((t) => t.id !== before.id && t.from !== null));
    await new Promise((r) => setTimeout(r, 3000));
    await writers.stop();
    await agent.stop();
    agent = null;
    const w = await readWindows(storage);
    expect(w.timelines.length).toBe(2);
    expect(w.gaps.length).toBe(1);
    const [t1, t2] = w.timelines as [typeof before, typeof before];
    expect(t1.to).toBe(before.to);
    expect(t2.bases[0]!.sequence).toBeGreaterThan(t1.lastSequence!);

    const repoArg = ['--repo', repoDir];
    const listed = await runCli(['backup', 'timeline', ...repoArg, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const json = JSON.parse(listed.stdout) as { timelines: { id: string; from: string; to: string }[]; gaps: { from: string; to: string }[] };
    expect(json.timelines.map((t) => t.id)).toEqual([t1.id, t2.id]);
    expect(json.gaps).toEqual([{ from: new Date(t1.to!).toISOString(), to: new Date(t2.from!).toISOString() }]);
    const human = await runCli(['backup', 'timeline', ...repoArg]);
    expect(human.stdout).toMatch(/gap: .* cannot be restored/);

    // latest: exactly the database as it is now (every write was shipped when the agent stopped).
    const latest = path.join(dir, 'latest');
    const r = await runCli(['backup', 'restore', '--at', 'latest', ...repoArg, '--to', latest, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { reached: { time: string; sequence: number }; timeline: string };
    expect(result.timeline).toBe(t2.id);
    await db.close();
    expect(result.reached.sequence).toBe((await dbSequence(dbPath)).sequence);
    await db.open();
    const live = new Map<string, string>();
    for await (const [k, v] of db.iterator()) live.set(k, v.toString('hex'));
    const got = new Map<string, string>();
    const restored = new ClassicLevel<string, Buffer>(latest, { createIfMissing: false, valueEncoding: 'buffer' });
    await restored.open();
    for await (const [k, v] of restored.iterator()) got.set(k, v.toString('hex'));
    await restored.close();
    expect(got).toEqual(live);

    // Inside the first timeline, through the CLI, human output.
    const inT1 = path.join(dir, 'in-t1');
    const mid1 = Math.floor((t1.from! + t1.to!) / 2);
    const r1 = await runCli(['backup', 'restore', '--at', new Date(mid1).toISOString(), ...repoArg, '--to', inT1]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).toMatch(/restored the database as of .* \(sequence \d+, .* before the requested/);

    // Refusals: a clear error, its code and exit class, nothing at the target.
    const target = path.join(dir, 'refused');
    const refused = async (args: string[], code: string, exit: number) => {
      const x = await runCli(['backup', 'restore', ...args, ...repoArg, '--to', target]);
      expect(x.stderr).toContain(`(${code})`);
      expect(x.code).toBe(exit);
      expect(x.stderr.trim().split('\n').length).toBe(1);
      expect(fs.existsSync(target)).toBe(false);
      return x.stderr;
    };
    const gapMid = new Date(Math.floor((t1.to! + t2.from!) / 2)).toISOString();
    expect(await refused(['--at', gapMid], 'MOMENT_NOT_RESTORABLE', 3)).toMatch(/gap.*restorable windows: /);
    expect(await refused(['--at', new Date(t1.from! - 60_000).toISOString()], 'MOMENT_NOT_RESTORABLE', 3)).toMatch(/before the first base/);
    expect(await refused(['--at', new Date(Date.now() + 3_600_000).toISOString()], 'INVALID_ARGUMENT', 2)).toMatch(/in the future/);
    expect(await refused(['--at', 'yesterday'], 'INVALID_ARGUMENT', 2)).toMatch(/not a moment/);
    expect(await refused(['--at', '2026-11-23T10:00:00'], 'INVALID_ARGUMENT', 2)).toMatch(/with its zone/);
    expect(await refused([t2.bases[0]!.backup, '--at', 'latest'], 'INVALID_ARGUMENT', 2)).toMatch(/not both/);
    expect(chooseBase(w, Math.floor((t1.to! + t2.from!) / 2))).toBeNull();
  }, 180_000);

  it('a damaged segment is refused before anything is applied, and nothing is left at the target', async () => {
    const w = await readWindows(storage);
    const t = w.timelines[0]!;
    const seg = t.segments.at(-1)!;
    const file = path.join(repoDir, 'wal', seg.timeline, 'seg', fs.readdirSync(path.join(repoDir, 'wal', seg.timeline, 'seg')).sort().at(-1)!);
    const bytes = fs.readFileSync(file);
    bytes.writeUInt8(bytes[bytes.length - 100]! ^ 1, bytes.length - 100);
    fs.writeFileSync(file, bytes);
    const to = path.join(dir, 'damaged');
    await expect(restoreToMoment({ repo, at: t.to!, to })).rejects.toThrow(/wal\/.*\/seg\/.* is damaged/);
    expect(fs.existsSync(to)).toBe(false);
    expect(fs.readdirSync(dir).filter((n) => n.includes('pitr') || n.includes('restoring'))).toEqual([]);
  }, 60_000);
});
