/**
 * A start whose continuity proof meets the storage away, and a clean stop before the proof's retry: the
 * stop makes the proof once more, so what the run read goes on the archived timeline. Without it, the
 * run's batches had no timeline at the stop (neither shipped nor spooled), LevelDB folded them into a
 * table at the next open, and the next start could not prove continuity: a gap, and a second base.
 *
 * The real S3 server the tests start, behind a loopback proxy that resets every connection while the
 * storage is to be away; a real classic-level database, closed and opened again between the runs as a
 * node does; an embedded agent. The retry is 30 s away (the archive's interval), so the stop comes
 * inside the backoff by construction, not by timing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { tempDir } from './support/processes.js';
import { FaultProxy, emptyAndClose, s3Server } from './support/s3-server.js';
import { Writers, levelApply, readState, until } from './support/pitr-writers.js';
import { TEST_KDF, TEST_REPO } from './support/test-password.js';

const server = s3Server();
const dir = tempDir('proof-retry');
const dbPath = path.join(dir, 'db');
const url = `s3://${server.bucket}/proof-retry-${path.basename(dir)}`;
const proxy = FaultProxy.forEndpoint(server.endpoint);
const credentials = { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
const messages: { msg: string; reason?: string }[] = [];
let storage: Storage | null = null;
let db: ClassicLevel<string, Buffer> | null = null;
let agent: Agent | null = null;
const writers = new Writers((writes) => levelApply(db!)(writes), { writers: 1, keysPerWriter: 50, batches: true, pauseMs: 3 });

afterAll(async () => {
  await writers.stop();
  await agent?.stop().catch(() => {});
  await db?.close().catch(() => {});
  await proxy.stop();
  if (storage) await emptyAndClose(storage);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The node starts: its database opens (LevelDB folds the logs into a table), then its agent starts, before any write. */
async function startNode(endpoint: string, intervalMs: number): Promise<void> {
  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) messages.push(JSON.parse(line) as { msg: string; reason?: string });
      done();
    },
  });
  // (The agent's options do not name credentials; its S3 options reach the client whole, as in the outage test.)
  const s3 = { endpoint, region: server.region, forcePathStyle: true, credentials };
  agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    backup: { repository: url, kdfCost: TEST_KDF, s3, logArchive: { intervalMs } },
    logger: pino({ level: 'info' }, sink),
  });
  await agent.start();
}

/** The node stops: no more writes, then its agent (which ships what it read), then its database. */
async function stopNode(): Promise<void> {
  await writers.stop();
  await agent!.stop();
  await db!.close();
  agent = null;
  db = null;
}

async function write(ops: number): Promise<void> {
  const target = writers.models[0]!.acked + ops;
  writers.start();
  await until(`${ops} ops`, () => writers.models[0]!.acked >= target);
  await writers.stop();
}

describe('log archive: a continuity proof that met the storage away', () => {
  it('is made again at a clean stop inside its backoff: the run goes on the timeline, one window, every write restorable', async () => {
    const endpoint = await proxy.start();
    storage = await openStorage(url, { s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials } });
    // Run 1: a timeline with its base, some writes, a clean stop.
    await startNode(endpoint, 200);
    await until('the first base', async () => (await readWindows(storage!)).timelines.some((t) => t.from !== null));
    await write(60);
    await stopNode();
    const first = (await readWindows(storage)).timelines;
    expect(first).toHaveLength(1);

    // Run 2: the storage away when the agent starts, so its proof fails and waits for a retry 30 s away.
    proxy.then = 'reset';
    proxy.dropConnections();
    await startNode(endpoint, 30_000);
    await until('the proof to fail on the storage', () => messages.some((m) => m.msg.includes('taking a base failed; retrying')), 120_000);
    await write(60);
    proxy.then = 'pass';
    const lastWrite = Date.now();
    await stopNode();
    expect(messages.filter((m) => m.msg.includes('the timeline goes on'))).toHaveLength(1);

    const w = await readWindows(storage);
    const why = JSON.stringify(messages.filter((m) => /cannot be proven|continuity|proof/.test(m.msg)));
    expect(w.timelines.map((t) => t.id), why).toEqual([first[0]!.id]);
    const [t] = w.timelines;
    expect(w.gaps).toEqual([]);
    expect(t!.brokenAfter).toBeNull();
    expect(t!.bases).toHaveLength(1);
    expect(t!.marks.map((m) => m.kind)).toEqual(['stop', 'resume', 'stop']);
    // The window's end holds every write acknowledged in both runs.
    const repo = await Repository.open(storage, TEST_REPO);
    try {
      const to = path.join(dir, 'end');
      await restoreToMoment({ repo, at: t!.to!, to });
      expect(writers.mismatch(await readState(to, 1), writers.bounds(lastWrite + 2000), true)).toBeNull();
      // Negative control: the check tells the end from the state before run 2's writes.
      const before = path.join(dir, 'before');
      await restoreToMoment({ repo, at: first[0]!.to!, to: before });
      expect(writers.mismatch(await readState(before, 1), writers.bounds(lastWrite + 2000), true)).not.toBeNull();
    } finally {
      await repo.codec.close();
    }
  }, 240_000);
});
