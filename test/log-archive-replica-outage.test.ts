/**
 * A continuous replica away for minutes of writes, and through a restart of the agent (issue 19): the
 * writers write into a real classic-level database while an embedded agent archives it to a primary
 * file:// repository and a replica on another file:// directory. The replica is made unreachable (its
 * directory swapped for a plain file) for NODE_ADMIN_REPLICA_LONG_OUTAGE_MS (3 min) of writes, with its
 * outbox allowed 1 MiB of memory: the rest of what waits for it goes to its spool directory. The agent then stops
 * and starts again with the replica still away — the stop writes the rest of the replica's outbox to
 * that directory, the start finds it — and more is written before the replica returns.
 *
 * Checked: the bytes waiting in memory stay bounded while more than 4 MiB waits; everything that waited
 * is in the replica's spool at the restart; after the return the replica holds one timeline without a
 * gap up to the last write (through the restart: its resume mark), its spool is empty, and restores
 * from the replica alone at moments inside the outage, on both sides of the restart, equal the writers'
 * model. The check that can fail: without the spool at the stop, the replica's copy is cut short at the
 * restart and ends there (the archiver's verifyReplica), so the window and the last sequence differ.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import { replicaSpoolName } from '../dist/agent/log-archive/log-archiver.js';
import type { LogArchiveReplicaStatus, LogArchiveStatus } from '../dist/shared/api.js';
import { tempDir } from './support/processes.js';
import { Writers, levelApply, until } from './support/pitr-writers.js';
import { directoryAway } from './support/directory-away.js';
import { restoresExact } from './support/restores-exact.js';

const WRITERS = 3;
/** The outage's part before the restart; CI's smaller sample takes 20 s (.ci/run), enough for the outbox to go to disk. */
const LONG_OUTAGE_MS = Number(process.env.NODE_ADMIN_REPLICA_LONG_OUTAGE_MS ?? 180_000);
/**
 * The replica's outbox keeps this much in memory, the rest waits in its spool directory: more than a
 * segment (an interval's writes here), so that the stop has some in memory to write there.
 */
const SPOOL_MEMORY_BYTES = 1024 * 1024;
/** Segments the primary stores after the restart while the replica is still away. */
const AFTER_RESTART_SEGMENTS = 4;
const INTERVAL_MS = 500;
const silent = pino({ level: 'silent' });

const dir = tempDir('replica-outage');
const dbPath = path.join(dir, 'db');
const primaryDir = path.join(dir, 'primary');
const replicaDir = path.join(dir, 'replica');
const replicaUrl = pathToFileURL(replicaDir).href;
const replicaSpool = path.join(`${dbPath}.log-archive-spool`, 'replicas', replicaSpoolName(replicaUrl));
const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024, maxFileSize: 256 * 1024 });
let agent: Agent | null = null;
let storage: Storage | null = null;

afterAll(async () => {
  await agent?.stop().catch(() => {});
  await db.close().catch(() => {});
  await storage?.close();
  if (!process.env.DEBUG_REPLICA) fs.rmSync(dir, { recursive: true, force: true });
});

/** The segment files waiting in the replica's spool directory (0 when there is none). */
function spooled(): number {
  return fs.existsSync(replicaSpool) ? fs.readdirSync(replicaSpool).filter((n) => n.endsWith('.seg')).length : 0;
}

/** Starts an agent archiving to the primary and the replica; its status, the log archive's and the replica's. */
async function startAgent(): Promise<{ archive: () => Promise<LogArchiveStatus>; replica: () => Promise<LogArchiveReplicaStatus> }> {
  const a = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    retention: { keepLast: 20 },
    backup: { repository: pathToFileURL(primaryDir).href, replicas: [replicaUrl], logArchive: { intervalMs: INTERVAL_MS, spoolMemoryBytes: SPOOL_MEMORY_BYTES } },
    logger: process.env.DEBUG_REPLICA ? pino({ level: 'debug' }, pino.destination('/tmp/replica-outage-debug.log')) : silent,
  });
  agent = a;
  await a.start();
  const archive = async (): Promise<LogArchiveStatus> => (await a.status()).logArchive!;
  return { archive, replica: async () => (await archive()).replicas![0]! };
}

describe('log archive: a replica away for minutes, through a restart', () => {
  it('spools what waits for it, finds it again after the restart, catches up, and every moment restores exactly from it', async () => {
    fs.mkdirSync(primaryDir);
    fs.mkdirSync(replicaDir);
    storage = await openStorage(replicaUrl, { logger: silent });
    const replicaStorage = storage;
    await db.open();
    const writers = new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: 300, batches: true, pauseMs: 5 });
    writers.start();
    let { archive, replica } = await startAgent();
    await until('the replica has a usable base and segments after it', async () => {
      const t = (await readWindows(replicaStorage)).timelines[0];
      return t !== undefined && t.bases.some((b) => b.usable) && t.lastSequence! > t.bases[0]!.sequence;
    });
    const timeline = (await archive()).timeline!.id;

    const back = directoryAway(replicaDir);
    const away = { from: Date.now(), to: 0 };
    await until('the replica fails', async () => (await replica()).state === 'retrying');
    await until(
      `the replica away for ${LONG_OUTAGE_MS} ms, with more than 4 MiB waiting for it`,
      async () => Date.now() >= away.from + LONG_OUTAGE_MS && (await replica()).waitingBytes > 4 * 1024 * 1024,
      LONG_OUTAGE_MS + 120_000,
    );
    const waiting = await replica();
    expect(waiting.state).toBe('retrying');
    expect(waiting.spooledBytes).toBeGreaterThan(0);
    // A segment is cut whole before it can go to disk: memory holds at most the 1 MiB and what one interval cut.
    expect(waiting.waitingBytes - waiting.spooledBytes, 'bytes waiting in memory').toBeLessThan(SPOOL_MEMORY_BYTES + 2 * 1024 * 1024);
    expect(spooled()).toBeGreaterThan(0);

    // The node restarts while the replica is still away: what waited for it in memory goes to its spool.
    await writers.stop();
    await agent!.stop();
    agent = null;
    await db.close();
    const restartAt = Date.now();
    const left = spooled();
    expect(left, 'everything that waited for the replica is in its spool directory').toBeGreaterThanOrEqual(waiting.waitingSegments);
    await db.open();
    ({ archive, replica } = await startAgent());
    await until('the timeline goes on', async () => (await archive()).timeline?.id === timeline);
    expect((await replica()).waitingSegments, "the previous run's segments wait for the replica").toBeGreaterThanOrEqual(left);
    writers.start();
    const shipped = (await archive()).shippedSegments;
    await until('the primary stores segments after the restart while the replica is away', async () => (await archive()).shippedSegments >= shipped + AFTER_RESTART_SEGMENTS);
    away.to = Date.now();
    back();
    await until(
      'the replica caught up',
      async () => {
        const r = await replica();
        return r.state === 'following' && r.waitingSegments === 0 && r.lastSuccess !== null && Date.parse(r.lastSuccess) > away.to;
      },
      120_000,
    );
    expect(spooled()).toBe(0);
    await until('more writes after the replica is back', () => Date.now() > away.to + 2 * INTERVAL_MS);
    await writers.stop();
    await agent!.stop();
    agent = null;
    await db.close();
    const last = (await dbSequence(dbPath)).sequence;

    // One whole timeline at the replica, through the outage and the restart: no gap, up to the last write.
    const timelines = (await readWindows(replicaStorage)).timelines;
    expect(timelines.map((t) => t.id)).toEqual([timeline]);
    const t = timelines[0]!;
    expect(t.brokenAfter).toBeNull();
    expect(t.lastSequence).toBe(last);
    expect(t.marks.map((m) => m.kind)).toContain('resume');
    expect(t.from!).toBeLessThan(away.from);
    const inside = (from: number, to: number) => [1, 2, 3].map((i) => Math.floor(from + (i * (to - from)) / 4));
    expect(await restoresExact(replicaStorage, [...inside(away.from, restartAt), ...inside(restartAt, away.to), t.to!], writers, dir)).toBeGreaterThan(0);
  }, 300_000 + LONG_OUTAGE_MS);
});
