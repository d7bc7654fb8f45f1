/**
 * A continuous replica of the log archive (backup.replicas): writers write into a real classic-level
 * database (logs rotate) while an embedded agent archives it to a primary file:// repository and to a
 * replica on another file:// directory. Each repository is made unreachable in turn (its directory
 * swapped for a plain file: even root cannot write under it) while the writes go on:
 *
 * - the replica away (at least NODE_ADMIN_REPLICA_OUTAGE_MS, 30 s): the primary keeps storing segments;
 *   the replica's status says `retrying` and its lag metric grows; back, it catches up (nothing waits
 *   for it any more) without a gap;
 * - the primary away: the replica keeps receiving segments, the primary's wait in its spool.
 *
 * Then both archives hold one whole timeline, and restores `--at` from the replica alone (bases backed up
 * into it from the checkpoints, with the primary's backup ids) equal the writers' model at random moments
 * and at moments inside both outages. Negative control: the same restored state is refused against the
 * model of a moment where other writes had been acknowledged.
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
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import type { LogArchiveStatus } from '../dist/shared/api.js';
import { tempDir } from './support/processes.js';
import { Writers, levelApply, readState, until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';
import { seriesValue } from './support/exposition.js';
import { directoryAway } from './support/directory-away.js';
import { restoresExact } from './support/restores-exact.js';

const WRITERS = 3;
const RESTORES = Number(process.env.NODE_ADMIN_REPLICA_RESTORES ?? 12);
/** Segments stored on one side while the other is away (each outage lasts at least this many intervals). */
const OUTAGE_SEGMENTS = 4;
/**
 * The replica's outage lasts at least this long (issue 19: a continuous replica stopped for 30 s catches
 * up, and every moment restores exactly from it); CI's smaller sample takes 6 s (.ci/run).
 */
const OUTAGE_MS = Number(process.env.NODE_ADMIN_REPLICA_OUTAGE_MS ?? 30_000);
const INTERVAL_MS = 500;
const silent = pino({ level: 'silent' });

const dir = tempDir('pitr-replica');
const dbPath = path.join(dir, 'db');
const primaryDir = path.join(dir, 'primary');
const replicaDir = path.join(dir, 'replica');
const laterDir = path.join(dir, 'replica-added-later');
/** Open while a test writes (the writers hold this instance: closed and opened again, never replaced). */
const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024, maxFileSize: 256 * 1024 });
let writers: Writers;
let agent: Agent | null = null;
const storages: Storage[] = [];

afterAll(async () => {
  await agent?.stop().catch(() => {});
  await db.close().catch(() => {});
  for (const s of storages) await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});


async function segments(d: string): Promise<number> {
  const live = fs.statSync(d).isDirectory() ? d : `${d}.away`;
  const s = await openStorage(pathToFileURL(live).href, { logger: silent });
  try {
    let n = 0;
    for await (const o of s.list('wal/')) if (o.name.includes('/seg/')) n++;
    return n;
  } finally {
    await s.close();
  }
}

function newAgent(replicas: string[], replicaBytes?: number): Agent {
  return createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    retention: { keepLast: 20 },
    backup: { repository: pathToFileURL(primaryDir).href, replicas, logArchive: { intervalMs: INTERVAL_MS, ...(replicaBytes ? { replicaBytes } : {}) } },
    logger: process.env.DEBUG_REPLICA ? pino({ level: 'info' }, pino.destination('/tmp/replica-debug.log')) : silent,
  });
}

describe('log archive: a continuous replica', () => {
  it('keeps a replica current through an outage of either side, and restores from it alone are exact', async () => {
    fs.mkdirSync(primaryDir);
    fs.mkdirSync(replicaDir);
    await db.open();
    writers = new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: 300, batches: true, pauseMs: 5 });
    writers.start();
    const replicaUrl = pathToFileURL(replicaDir).href;
    // Room in the replica's outbox for the whole outage (41 MB waited after 30 s on a loaded 2-core
    // machine; a faster one writes more): overflowing it is the third test's case, not this one's.
    agent = newAgent([replicaUrl], 256 * 1024 * 1024);
    await agent.start();
    const a = agent;
    const archive = async (): Promise<LogArchiveStatus> => (await a.status()).logArchive!;
    const replica = async () => (await archive()).replicas![0]!;
    const series = `{replica="${replicaUrl}"}`;

    await until('the replica holds a base and segments', async () => (await replica()).lastSuccess !== null && (await segments(replicaDir)) > 0);
    expect((await replica()).name).toBe(replicaUrl);

    // The replica away: the primary goes on storing; the replica retries, its lag grows.
    const replicaBack = directoryAway(replicaDir);
    const replicaAway = { from: Date.now(), to: 0 };
    const shippedBefore = (await archive()).shippedSegments;
    await until('the replica fails', async () => (await replica()).state === 'retrying');
    await until('the primary stores segments while the replica is away', async () => (await archive()).shippedSegments >= shippedBefore + OUTAGE_SEGMENTS);
    await until('the replica lag beyond three intervals', async () => (await replica()).lagSeconds > (3 * INTERVAL_MS) / 1000);
    await until(`the replica away for ${OUTAGE_MS} ms`, () => Date.now() >= replicaAway.from + OUTAGE_MS, OUTAGE_MS + 60_000);
    const scrapeAway = await a.metrics();
    expect(seriesValue(scrapeAway, `node_admin_backup_replica_lag_seconds${series}`)).toBeGreaterThan((3 * INTERVAL_MS) / 1000);
    expect(seriesValue(scrapeAway, `node_admin_backup_replica_last_success_timestamp_seconds${series}`)).toBeGreaterThan(0);
    expect((await archive()).state).not.toBe('retrying');
    replicaAway.to = Date.now();
    replicaBack();
    await until('the replica caught up', async () => {
      const r = await replica();
      return r.state === 'following' && r.waitingSegments === 0 && r.lastSuccess !== null && Date.parse(r.lastSuccess) > replicaAway.to;
    });
    await until('the replica lag back under three intervals', async () => (await replica()).lagSeconds < (3 * INTERVAL_MS) / 1000);

    // The primary away: the replica keeps receiving.
    const primaryBack = directoryAway(primaryDir);
    const primaryAway = { from: Date.now(), to: 0 };
    await until('the primary fails', async () => (await archive()).state === 'retrying');
    const onReplica = await segments(replicaDir);
    await until('the replica receives segments while the primary is away', async () => (await segments(replicaDir)) >= onReplica + OUTAGE_SEGMENTS);
    expect((await replica()).state).toBe('following');
    primaryAway.to = Date.now();
    primaryBack();
    await until('the primary caught up', async () => {
      const s = await archive();
      return s.state !== 'retrying' && s.lastShipped !== null && Date.parse(s.lastShipped.at) > primaryAway.to;
    });

    await writers.stop();
    await agent.stop();
    agent = null;
    await db.close();
    const last = (await dbSequence(dbPath)).sequence;

    // Both hold one whole timeline up to the database's last write.
    for (const d of [primaryDir, replicaDir]) {
      const storage = await openStorage(pathToFileURL(d).href, { logger: silent });
      storages.push(storage);
      const w = await readWindows(storage);
      expect(w.timelines.length, d).toBe(1);
      expect(w.timelines[0]!.brokenAfter, d).toBeNull();
      expect(w.timelines[0]!.lastSequence, d).toBe(last);
    }
    const replicaStorage = storages[1]!;
    const t = (await readWindows(replicaStorage)).timelines[0]!;
    expect(t.bases.filter((b) => b.usable).length).toBeGreaterThan(0);
    expect(t.from!).toBeLessThan(replicaAway.from);
    expect(t.to!).toBeGreaterThan(primaryAway.to);

    // Restores from the replica alone: random moments, and moments inside each outage.
    const repo = await Repository.open(replicaStorage, TEST_REPO);
    const inside = (o: { from: number; to: number }) => [o.from + (o.to - o.from) / 3, o.from + (2 * (o.to - o.from)) / 3].map(Math.floor);
    const moments = [
      ...Array.from({ length: RESTORES }, () => t.from! + Math.floor(Math.random() * (t.to! - t.from!))),
      ...inside(replicaAway),
      ...inside(primaryAway),
      t.to!,
    ].sort((x, y) => x - y);
    let applied = 0;
    for (const [i, at] of moments.entries()) {
      const to = path.join(dir, `restored-${i}`);
      const r = await restoreToMoment({ repo, at, to });
      applied += r.batches;
      const state = await readState(to, WRITERS);
      expect(writers.mismatch(state, writers.bounds(at), true), `restore to ${new Date(at).toISOString()}`).toBeNull();
      if (i === moments.length - 1) {
        // Negative control: the newest state is not the state at the window's start.
        expect(writers.mismatch(state, writers.bounds(t.from!), true)).not.toBeNull();
      }
      fs.rmSync(to, { recursive: true });
    }
    expect(applied).toBeGreaterThan(moments.length);
    await repo.codec.close();
  }, 180_000 + OUTAGE_MS);

  it('after a restart that goes on with the timeline: the replica that holds it goes on; one added since gets a base of its own', async () => {
    await db.open();
    fs.mkdirSync(laterDir);
    const laterStorage = await openStorage(pathToFileURL(laterDir).href, { logger: silent });
    storages.push(laterStorage);
    const before = (await readWindows(storages[0]!)).timelines[0]!;
    // The node writes nothing before the agent has started: the continuity proof can be made.
    agent = newAgent([pathToFileURL(replicaDir).href, pathToFileURL(laterDir).href]);
    await agent.start();
    const a = agent;
    await until('the timeline goes on', async () => (await a.status()).logArchive?.timeline?.id === before.id);
    writers.start();
    const later = async () => (await readWindows(laterStorage)).timelines[0];
    await until('the replica added later has a usable base and segments after it', async () => {
      const t = await later();
      return t !== undefined && t.bases.some((b) => b.usable) && t.lastSequence! > t.bases[0]!.sequence;
    });
    const laterFrom = (await later())!.from!;
    await until('more writes after its base', async () => writers.acked > 0 && Date.now() > laterFrom + 2 * INTERVAL_MS);
    await writers.stop();
    await agent.stop();
    agent = null;
    await db.close();
    const last = (await dbSequence(dbPath)).sequence;

    for (const [d, storage] of [primaryDir, replicaDir, laterDir].map((d, i) => [d, storages[i]!] as const)) {
      const w = await readWindows(storage);
      expect(w.timelines.map((t) => t.id), d).toEqual([before.id]);
      expect(w.timelines[0]!.brokenAfter, d).toBeNull();
      expect(w.timelines[0]!.lastSequence, d).toBe(last);
    }
    // The replica that held the timeline: its window goes on across the restart, as the primary's.
    const replicaStorage = storages[1]!;
    const t = (await readWindows(replicaStorage)).timelines[0]!;
    expect(t.from).toBe(before.from);
    expect(t.marks.map((m) => m.kind)).toContain('resume');
    const span = (from: number, to: number) => Array.from({ length: 4 }, (_, i) => Math.floor(from + ((i + 1) * (to - from)) / 5));
    expect(await restoresExact(replicaStorage, span(before.to!, t.to!), writers, dir)).toBeGreaterThan(0);
    // The one added since: from its own base on.
    const l = (await readWindows(laterStorage)).timelines[0]!;
    expect(l.from).toBeGreaterThan(before.to!);
    expect(await restoresExact(laterStorage, span(l.from!, l.to!), writers, dir)).toBeGreaterThan(0);
  }, 120_000);

  it("a replica away until its outbox overflows: only its copy of the timeline ends; the primary's goes on", async () => {
    await db.open();
    const smallDir = path.join(dir, 'replica-small');
    fs.mkdirSync(smallDir);
    const smallStorage = await openStorage(pathToFileURL(smallDir).href, { logger: silent });
    storages.push(smallStorage);
    const before = (await readWindows(storages[0]!)).timelines[0]!;
    agent = newAgent([pathToFileURL(smallDir).href], 4 * 1024 * 1024);
    await agent.start();
    const a = agent;
    const archive = async (): Promise<LogArchiveStatus> => (await a.status()).logArchive!;
    await until('the timeline goes on', async () => (await archive()).timeline?.id === before.id);
    writers.start();
    await until('the replica has a usable base', async () => (await readWindows(smallStorage)).timelines[0]?.bases.some((b) => b.usable) === true);
    const back = directoryAway(smallDir);
    const awayFrom = Date.now();
    await until('the replica is behind (its outbox overflowed)', async () => (await archive()).replicas![0]!.state === 'behind');
    back();
    const shipped = (await archive()).shippedSegments;
    await until('the primary goes on', async () => (await archive()).shippedSegments >= shipped + OUTAGE_SEGMENTS);
    const status = await archive();
    expect(status.breaks).toBe(0);
    expect(status.replicas![0]!.lastError?.error).toMatch(/bytes of segments waited for the replica/);
    await writers.stop();
    await agent.stop();
    agent = null;
    await db.close();
    const last = (await dbSequence(dbPath)).sequence;

    const primary = (await readWindows(storages[0]!)).timelines;
    expect(primary.map((t) => t.id)).toEqual([before.id]);
    expect(primary[0]!.lastSequence).toBe(last);
    const small = (await readWindows(smallStorage)).timelines[0]!;
    expect(small.id).toBe(before.id);
    expect(small.lastSequence!).toBeLessThan(last);
    expect(small.to!).toBeLessThanOrEqual(awayFrom);
    expect(await restoresExact(smallStorage, [small.from!, small.to!], writers, dir)).toBeGreaterThanOrEqual(0);
  }, 120_000);
});
