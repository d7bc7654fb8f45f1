/**
 * `backup prune` and the log archive (wal/): what goes once retention has chosen the backups to keep.
 * As data (walObjectsToPrune, a pure function) checked against the windows: after a prune, every kept
 * base still restores over the same window end, and nothing a kept base needs is gone; then on a real
 * repository, through the engine's prune, with restores before and after compared.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { pruneRepository } from '../dist/agent/backup/prune-repository.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { listCheckpointsOffline } from '../dist/agent/offline.js';
import { baseName, parseWalName, segmentName, type WalObject } from '../dist/agent/log-archive/segment.js';
import { timelineWindows } from '../dist/agent/log-archive/timeline-windows.js';
import { logArchivePruneClient, protectedBase, walObjectsToPrune } from '../dist/agent/log-archive/wal-prune.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { runCli, tempDir } from './support/processes.js';
import { until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

const T1 = '20261123t100000000z-aaaa';
const T2 = '20261123t120000000z-bbbb';
const B1 = '20261123t100001000z-0001';
const B2 = '20261123t100501000z-0002';
const B3 = '20261123t120001000z-0003';
const B4 = '20261123t120501000z-0004';

const seg = (timeline: string, first: number, last: number, from: number, to: number) => parseWalName(segmentName({ timeline, first, last, from, to }))!;
const base = (timeline: string, backup: string, sequence: number, from: number, to: number, last = sequence) => parseWalName(baseName({ timeline, backup, sequence, last, from, to }))!;

/** Two timelines, two bases each, segments before, between and after the bases. */
const LISTING: WalObject[] = [
  base(T1, B1, 10, 1000, 1000),
  seg(T1, 11, 20, 900, 2000),
  seg(T1, 21, 30, 2000, 3000),
  base(T1, B2, 25, 2500, 3000),
  seg(T1, 31, 40, 3000, 4000),
  base(T2, B3, 100, 10_000, 10_000),
  seg(T2, 101, 110, 9900, 11_000),
  base(T2, B4, 110, 11_000, 11_000),
  seg(T2, 111, 120, 11_000, 12_000),
];

const names = (objects: WalObject[]) => objects.map((o) => o.name);
const pick = (...objects: WalObject[]) => names(objects).sort();

describe('walObjectsToPrune', () => {
  const cases: { what: string; kept: string[]; doomed: string[] }[] = [
    { what: 'every backup kept: nothing goes', kept: [B1, B2, B3, B4], doomed: [] },
    {
      what: "the oldest base of a timeline removed: its record, and the segments wholly before the next base's sequence",
      kept: [B2, B3, B4],
      doomed: pick(LISTING[0]!, LISTING[1]!),
    },
    {
      what: 'every base of an older timeline removed: the whole timeline',
      kept: [B3, B4],
      doomed: pick(LISTING[0]!, LISTING[1]!, LISTING[2]!, LISTING[3]!, LISTING[4]!),
    },
    {
      what: 'every base of the newest timeline removed: only its records (a running archiver may be extending it)',
      kept: [B1, B2],
      doomed: pick(LISTING[5]!, LISTING[7]!),
    },
    {
      what: 'a segment ending at the oldest kept base\'s sequence goes (case 2: one straddling it stays)',
      kept: [B1, B2, B4],
      doomed: pick(LISTING[5]!, LISTING[6]!),
    },
  ];
  for (const c of cases) {
    it(c.what, () => {
      expect(walObjectsToPrune(LISTING, new Set(c.kept))).toEqual(c.doomed);
    });
  }

  it('after a prune, every kept base is as restorable as before: same window end, same usable bases (differential over every subset)', () => {
    const all = [B1, B2, B3, B4];
    for (let mask = 0; mask < 16; mask++) {
      const kept = new Set(all.filter((_, i) => mask & (1 << i)));
      const before = timelineWindows(LISTING, kept);
      const doomed = new Set(walObjectsToPrune(LISTING, kept));
      const after = timelineWindows(LISTING.filter((o) => !doomed.has(o.name)), kept);
      for (const t of before.timelines) {
        const usable = t.bases.filter((b) => b.usable).map((b) => b.backup);
        const same = after.timelines.find((x) => x.id === t.id);
        if (usable.length === 0) continue;
        expect(same, `mask ${mask}: timeline ${t.id}`).toBeDefined();
        expect(same!.bases.filter((b) => b.usable).map((b) => b.backup), `mask ${mask}`).toEqual(usable);
        expect(same!.to, `mask ${mask}`).toBe(t.to);
        expect(same!.lastSequence, `mask ${mask}`).toBe(t.lastSequence);
      }
    }
  });

  it('negative control: the same check catches a prune that takes a segment a kept base needs', () => {
    const kept = new Set([B2, B3, B4]);
    const before = timelineWindows(LISTING, kept);
    const tooMuch = new Set([...walObjectsToPrune(LISTING, kept), LISTING[2]!.name]); // 21..30 holds 26..30
    const after = timelineWindows(LISTING.filter((o) => !tooMuch.has(o.name)), kept);
    const t1 = after.timelines.find((t) => t.id === T1)!;
    expect(t1.bases.filter((b) => b.usable).map((b) => b.backup)).not.toEqual(before.timelines[0]!.bases.filter((b) => b.usable).map((b) => b.backup));
  });
});

let dir: string;
let agent: Agent | null = null;
let db: ClassicLevel<string, string> | null = null;

afterAll(async () => {
  await agent?.stop();
  await db?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('protectedBase: the base backup retention must keep', () => {
  const cases: { what: string; objects: WalObject[]; backups: string[]; want: string | null }[] = [
    { what: "the newest timeline's newest base", objects: LISTING, backups: [B1, B2, B3, B4], want: B4 },
    { what: 'its newest base whose backup still exists', objects: LISTING, backups: [B1, B2, B3], want: B3 },
    { what: "none when no base of the newest timeline has a backup (an older timeline's do not count)", objects: LISTING, backups: [B1, B2], want: null },
    { what: 'the newest timeline decides even if it has segments only', objects: [...LISTING, seg('20261123t130000000z-cccc', 1, 5, 0, 1)], backups: [B1, B2, B3, B4], want: null },
    { what: 'nothing archived: none', objects: [], backups: [B1], want: null },
  ];
  for (const c of cases) {
    it(c.what, () => {
      expect(protectedBase(c.objects, new Set(c.backups))).toBe(c.want);
    });
  }
});

describe('backup prune on a repository with a log archive', () => {
  it('deletes the archive no kept base needs; the kept window restores exactly as before; a dry run deletes nothing', async () => {
    dir = tempDir('pitr-prune');
    const dbPath = path.join(dir, 'db');
    const repoDir = path.join(dir, 'repo');
    const url = pathToFileURL(repoDir).href;
    db = new ClassicLevel(dbPath);
    await db.open();
    agent = createAgent({ dbPath, checkpointDir: path.join(dir, 'checkpoints'), retention: { keepLast: 20 }, backup: { repository: url, logArchive: { intervalMs: 100 } }, logger: pino({ level: 'silent' }) });
    await agent.start();
    const storage = await openStorage(url, {});
    const usableBases = async () => (await readWindows(storage)).timelines.flatMap((t) => t.bases.filter((b) => b.usable));
    await until('the first base', async () => (await usableBases()).length === 1);
    // Writes, a second base, more writes.
    for (let i = 0; i < 300; i++) await db.put(`k${i % 50}`, `first-${i}`);
    const checkpoint = await agent.createCheckpoint({ label: 'second-base' });
    await agent.createBackup({ checkpointId: checkpoint.id });
    await until('the second base', async () => (await usableBases()).length === 2);
    for (let i = 0; i < 300; i++) await db.put(`k${i % 50}`, `second-${i}`);
    await agent.stop();
    agent = null;

    const before = await readWindows(storage);
    expect(before.timelines.length).toBe(1);
    const [b1, b2] = before.timelines[0]!.bases;
    const segmentsBefore = before.timelines[0]!.segments.length;
    expect(segmentsBefore).toBeGreaterThan(1);
    const repo = await Repository.open(storage, TEST_REPO);
    const latestBefore = await restoreToMoment({ repo, at: 'latest', to: path.join(dir, 'latest-before') });

    // Keep the newest backup only: the first base and the segments wholly before the second base's sequence go.
    const dry = await pruneRepository(repo, { keepLast: 1 }, { dryRun: true, logArchive: logArchivePruneClient });
    const expected = segmentsBefore - (await readWindows(storage)).timelines[0]!.segments.filter((s) => s.last > b2!.sequence).length + 1;
    expect(dry.walObjectsDeleted).toBe(expected);
    expect((await readWindows(storage)).timelines[0]!.segments.length).toBe(segmentsBefore);
    const cli = await runCli(['backup', 'prune', '--repo', repoDir, '--keep-last', '1', '--dry-run']);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`${expected} archived log objects to delete`);

    const pruned = await pruneRepository(repo, { keepLast: 1 }, { logArchive: logArchivePruneClient });
    expect(pruned.removed.map((r) => r.id)).toEqual([b1!.backup]);
    expect(pruned.walObjectsDeleted).toBe(expected);
    const after = await readWindows(storage);
    const t = after.timelines[0]!;
    expect(t.bases.map((b) => [b.backup, b.usable])).toEqual([[b2!.backup, true]]);
    expect(t.from).toBe(b2!.from);
    expect(t.to).toBe(before.timelines[0]!.to);
    expect(t.segments[0]!.first).toBeLessThanOrEqual(b2!.sequence + 1);
    // A moment before the kept base is no longer claimed; the latest is restored exactly as before.
    await expect(restoreToMoment({ repo, at: b1!.from, to: path.join(dir, 'gone') })).rejects.toThrow(/cannot be restored|window/);
    const latestAfter = await restoreToMoment({ repo, at: 'latest', to: path.join(dir, 'latest-after') });
    expect(latestAfter.reached).toEqual(latestBefore.reached);
    const read = async (p: string) => {
      const d = new ClassicLevel(p, { createIfMissing: false });
      const out = await d.iterator().all();
      await d.close();
      return out;
    };
    expect(await read(path.join(dir, 'latest-after'))).toEqual(await read(path.join(dir, 'latest-before')));
    expect(await read(path.join(dir, 'latest-after'))).toEqual(await db.iterator().all());

    // A newer backup that is no base (of a checkpoint older than the timeline's bases, made with the
    // archiver stopped), then keep-last 1: the policy alone would remove the timeline's only base and
    // its whole window; the base is kept beyond the policy, said so, and the window restores as before.
    const older = (await listCheckpointsOffline(path.join(dir, 'checkpoints'))).find((c) => c.id !== checkpoint.id)!;
    const cache = HashCache.load(path.join(dir, 'hash-cache.json'));
    const notABase = await backupCheckpoint({ repo, checkpoint: older, cache });
    const dryKeep = await pruneRepository(repo, { keepLast: 1 }, { dryRun: true, logArchive: logArchivePruneClient });
    expect(dryKeep.removed).toEqual([]);
    expect(dryKeep.logArchiveBase).toBe(b2!.backup);
    expect(dryKeep.kept.sort()).toEqual([b2!.backup, notABase.id].sort());
    const cliKeep = await runCli(['backup', 'prune', '--repo', repoDir, '--keep-last', '1', '--dry-run']);
    expect(cliKeep.code, cliKeep.stderr).toBe(0);
    expect(cliKeep.stdout).toContain(`kept ${b2!.backup} beyond the policy`);
    const kept = await pruneRepository(repo, { keepLast: 1 }, { logArchive: logArchivePruneClient });
    expect(kept.removed).toEqual([]);
    expect((await readWindows(storage)).timelines[0]!.to).toBe(before.timelines[0]!.to);
    const latestKept = await restoreToMoment({ repo, at: 'latest', to: path.join(dir, 'latest-kept') });
    expect(latestKept.reached).toEqual(latestBefore.reached);
    // Without the archive's objects the same policy removes that base: the keeping above is the rule's doing.
    const noWal = path.join(dir, 'no-wal');
    fs.cpSync(repoDir, noWal, { recursive: true, filter: (src) => src !== path.join(repoDir, 'wal') });
    const noWalStorage = await openStorage(pathToFileURL(noWal).href, {});
    const walFree = await pruneRepository(await Repository.open(noWalStorage, TEST_REPO), { keepLast: 1 }, { dryRun: true, logArchive: logArchivePruneClient });
    await noWalStorage.close();
    expect(walFree.removed.map((r) => r.id)).toEqual([b2!.backup]);
    expect(walFree.logArchiveBase).toBeNull();
  }, 120_000);
});
