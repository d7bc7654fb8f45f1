/**
 * Snapshots into the replicas (backup.replicas): an embedded agent over a real classic-level database,
 * its primary repository on a directory, two replicas — one on the tests' S3 server (Swift), one on
 * another directory — and its admin socket, used by the built CLI as a real process.
 *
 * - A snapshot made through the socket (`backup create`) appears in each replica with the primary's id
 *   and time, and restores from the replica alone byte for byte as its checkpoint; `status` and
 *   `backup timeline` (text and JSON) name what each replica holds. Negative control: the same
 *   comparison against another checkpoint fails.
 * - The directory replica unreachable (swapped for a plain file) while snapshots are made: each
 *   `backup create` returns with the replica still lacking it (the primary does not wait); retention
 *   keeps the checkpoints it waits for; past backup.replicaPendingSnapshots the oldest is dropped
 *   (counted, and its checkpoint let go); back, it gets the others. Negative control: the dropped one
 *   is absent there.
 * - A restart with a snapshot still waiting for a replica: the new agent finds it (its scan) and the
 *   replica gets it.
 * - backup.replicaPendingSnapshots out of range or not a whole number: one clear INVALID_ARGUMENT line.
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
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { parseBackupOptions } from '../dist/agent/backup/backup-manager.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import type { AgentStatus, BackupRecord, BackupReplicaStatus, CheckpointRecord, LogArchiveTimelines } from '../dist/shared/api.js';
import { runCli, tempDir, until, type CliResult } from './support/processes.js';
import { emptyAndClose, s3Server } from './support/s3-server.js';
import { TEST_KDF, TEST_REPO } from './support/test-password.js';
import { seriesValue } from './support/exposition.js';
import { directoryAway } from './support/directory-away.js';
import { files, treeDifference } from './support/file-trees.js';

const silent = pino({ level: 'silent' });
const dir = tempDir('replica-snapshots');
const dbPath = path.join(dir, 'db');
const socketPath = path.join(dir, 'admin.sock');
const primaryDir = path.join(dir, 'primary');
const replicaDir = path.join(dir, 'replica');
const replicaUrl = pathToFileURL(replicaDir).href;
/** At most this many snapshots wait for a replica (the agent's backup.replicaPendingSnapshots). */
const PENDING = 2;
let s3Url: string;
let s3Storage: Storage;
let db: ClassicLevel<string, Buffer>;
let agent: Agent | null = null;
const storages: Storage[] = [];

beforeAll(async () => {
  const server = s3Server();
  s3Url = `s3://${server.bucket}/replica-${path.basename(dir)}`;
  // The agent finds S3 credentials where the SDK looks for them.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: server.accessKeyId, AWS_SECRET_ACCESS_KEY: server.secretAccessKey, AWS_REGION: server.region });
  s3Storage = await openStorage(s3Url, { s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true }, logger: silent });
  fs.mkdirSync(primaryDir);
  fs.mkdirSync(replicaDir);
  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  await write('a', 40);
});

afterAll(async () => {
  await agent?.stop().catch(() => {});
  await db?.close().catch(() => {});
  for (const s of storages) await s.close();
  if (s3Storage) await emptyAndClose(s3Storage);
  fs.rmSync(dir, { recursive: true, force: true });
});

async function write(prefix: string, n: number): Promise<void> {
  const batch = db.batch();
  for (let i = 0; i < n; i++) batch.put(`${prefix}/${i}`, Buffer.alloc(4096 + i, `${prefix}${i}`));
  await batch.write();
}

function newAgent(): Agent {
  const server = s3Server();
  return createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    socketPath,
    // One checkpoint beyond what is held: whatever a replica does not wait for goes at the next create.
    retention: { keepLast: 1 },
    backup: {
      repository: pathToFileURL(primaryDir).href,
      s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true },
      kdfCost: TEST_KDF,
      replicas: [s3Url, replicaUrl],
      replicaPendingSnapshots: PENDING,
      logArchive: { intervalMs: 500 },
    },
    logger: process.env.DEBUG_REPLICA ? pino({ level: 'info' }, pino.destination('/tmp/replica-snapshots-debug.log')) : silent,
  });
}

function parsed<T>(r: CliResult): T {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

const cli = (...args: string[]) => runCli([...args, '--socket', socketPath]);

async function status(): Promise<AgentStatus> {
  return parsed<AgentStatus>(await cli('status', '--json'));
}

async function replicaStatus(name: string): Promise<BackupReplicaStatus> {
  const r = (await agent!.status()).backup!.replicas!.find((x) => x.name === name);
  expect(r, name).toBeDefined();
  return r!;
}

/** A checkpoint then a backup of it: through the socket (the CLI as a process), or in-process (quicker). */
async function snapshot(via: 'socket' | 'in-process' = 'in-process'): Promise<{ checkpoint: CheckpointRecord; backup: BackupRecord }> {
  if (via === 'in-process') {
    const checkpoint = await agent!.createCheckpoint();
    return { checkpoint, backup: await agent!.createBackup({ checkpointId: checkpoint.id }) };
  }
  const checkpoint = parsed<CheckpointRecord>(await cli('checkpoint', 'create', '--json'));
  const backup = parsed<BackupRecord>(await cli('backup', 'create', '--checkpoint', checkpoint.id, '--json'));
  return { checkpoint, backup };
}

async function openRepo(storage: Storage): Promise<Repository> {
  return Repository.open(storage, TEST_REPO);
}

async function fileStorage(d: string): Promise<Storage> {
  const s = await openStorage(pathToFileURL(d).href, { logger: silent });
  storages.push(s);
  return s;
}

async function snapshotIds(storage: Storage): Promise<string[]> {
  const ids: string[] = [];
  for await (const o of storage.list('snapshots/')) ids.push(o.name.slice('snapshots/'.length));
  return ids.sort();
}

/** Restores backup `id` from `storage` alone into a fresh directory; its files. */
async function restored(storage: Storage, id: string): Promise<Map<string, Buffer>> {
  const repo = await openRepo(storage);
  const to = path.join(dir, `restored-${id}-${Math.random().toString(16).slice(2)}`);
  try {
    await restoreBackup({ repo, id, to });
    return files(to);
  } finally {
    await repo.codec.close();
    fs.rmSync(to, { recursive: true, force: true });
  }
}



describe('snapshots into the replicas', () => {
  it('a snapshot made through the socket reaches each replica with its id and restores from the replica alone byte for byte', async () => {
    agent = newAgent();
    await agent.start();
    // The log archive's base first (one backup at a time), and it reaches both replicas too.
    const base = await until("the log archive's base backup", async () => {
      const b = (await agent!.status()).backup!;
      return b.inProgress === null && b.lastBackup?.ok === true ? b.lastBackup.id : null;
    });
    await write('b', 30);
    const { checkpoint, backup } = await snapshot('socket');
    const checkpointFiles = files(checkpoint.path);
    for (const name of [s3Url, replicaUrl]) {
      await until(`${name} holds ${backup.id}`, async () => {
        const r = await replicaStatus(name);
        return r.newestSnapshot?.id === backup.id && r.pending.length === 0 && r.copying === null;
      });
    }
    const fileReplica = await fileStorage(replicaDir);
    for (const storage of [s3Storage, fileReplica]) {
      expect(await snapshotIds(storage)).toEqual(expect.arrayContaining([base, backup.id]));
      const repo = await openRepo(storage);
      const copy = await repo.readSnapshot(backup.id);
      await repo.codec.close();
      // The primary's snapshot, as made: its time and its checkpoint.
      expect({ id: copy.id, createdAt: copy.createdAt, checkpoint: copy.checkpoint.id }).toEqual({ id: backup.id, createdAt: backup.createdAt, checkpoint: checkpoint.id });
      const got = await restored(storage, backup.id);
      expect(treeDifference(got, checkpointFiles), storage.description).toBeNull();
      // Negative control: the same comparison with the base's checkpoint (before the writes of 'b') fails.
      const baseFiles = await restored(storage, base);
      expect(treeDifference(got, baseFiles)).not.toBeNull();
    }

    // What each replica holds: status (JSON and text), backup timeline (JSON and text), metrics.
    const json = (await status()).backup!.replicas!;
    expect(json.map((r) => [r.name, r.newestSnapshot?.id, r.pending.length])).toEqual([
      [s3Url, backup.id, 0],
      [replicaUrl, backup.id, 0],
    ]);
    const text = await cli('status');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`replica:`);
    expect(text.stdout).toMatch(new RegExp(`snapshots:\\s+idle; newest snapshot ${backup.id}, made `));
    const timeline = parsed<LogArchiveTimelines>(await cli('backup', 'timeline', '--json'));
    expect(timeline.replicas?.map((r) => r.name)).toEqual([s3Url, replicaUrl]);
    for (const r of timeline.replicas!) {
      expect(r.error, r.name).toBeNull();
      expect(r.newestSnapshot, r.name).toEqual({ id: backup.id, createdAt: backup.createdAt });
      expect(r.snapshots, r.name).toBeGreaterThanOrEqual(2);
      expect(r.timelines.length, r.name).toBe(1);
      expect(r.timelines[0]!.id, r.name).toBe(timeline.timelines.at(-1)!.id);
    }
    const timelineText = await cli('backup', 'timeline');
    expect(timelineText.code, timelineText.stderr).toBe(0);
    expect(timelineText.stdout).toContain(`replica ${replicaUrl}: newest snapshot ${backup.id} (made `);
    const scrape = await agent.metrics();
    expect(seriesValue(scrape, `node_admin_backup_replica_snapshots_pending{replica="${replicaUrl}"}`)).toBe(0);
    expect(seriesValue(scrape, `node_admin_backup_replica_newest_snapshot_timestamp_seconds{replica="${replicaUrl}"}`)).toBe(Date.parse(backup.createdAt) / 1000);
  }, 60_000);

  it("a replica away while snapshots are made: the primary's do not wait, retention keeps what it waits for up to the limit, and back it gets them", async () => {
    const a = agent!;
    const fileReplica = storages[0]!;
    const back = directoryAway(replicaDir);
    const made: { checkpoint: CheckpointRecord; backup: BackupRecord }[] = [];
    for (let i = 0; i <= PENDING; i++) {
      await write(`c${i}`, 20);
      const s = await snapshot();
      made.push(s);
      // Answered while the replica lacks it: the primary's backup did not wait for it.
      const r = await replicaStatus(replicaUrl);
      expect(r.pending.map((p) => p.id).concat(r.copying ?? [])).toContain(s.backup.id);
      expect(fs.existsSync(path.join(`${replicaDir}.away`, 'snapshots', s.backup.id))).toBe(false);
    }
    // The other replica (S3) is not held up by this one.
    await until('the S3 replica holds the newest', async () => (await replicaStatus(s3Url)).newestSnapshot?.id === made.at(-1)!.backup.id);
    const r = await until('the replica retrying', async () => {
      const x = await replicaStatus(replicaUrl);
      return x.state === 'retrying' ? x : null;
    });
    // Past the limit the oldest waiting one was dropped; the rest wait, their checkpoints kept (keepLast 1).
    expect(r.pending.map((p) => p.id)).toEqual(made.slice(1).map((m) => m.backup.id));
    expect(r.dropped).toBe(1);
    expect(r.lastError?.error).toBeTruthy();
    const scrape = await a.metrics();
    expect(seriesValue(scrape, `node_admin_backup_replica_snapshots_pending{replica="${replicaUrl}"}`)).toBe(PENDING);
    expect(seriesValue(scrape, `node_admin_backup_replica_snapshots_dropped_total{replica="${replicaUrl}",reason="pending_limit"}`)).toBe(1);
    await a.createCheckpoint({ label: 'after' });
    const ids = new Set((await a.listCheckpoints()).map((c) => c.id));
    for (const m of made.slice(1)) expect(ids.has(m.checkpoint.id), `checkpoint ${m.checkpoint.id} waited for`).toBe(true);
    expect(ids.has(made[0]!.checkpoint.id), 'the dropped one let go').toBe(false);

    back();
    await until('the replica caught up', async () => {
      const x = await replicaStatus(replicaUrl);
      return x.newestSnapshot?.id === made.at(-1)!.backup.id && x.pending.length === 0 && x.copying === null && x.state === 'idle';
    });
    const held = await snapshotIds(fileReplica);
    for (const m of made.slice(1)) expect(held).toContain(m.backup.id);
    // Negative control: the dropped one is not there.
    expect(held).not.toContain(made[0]!.backup.id);
    const last = made.at(-1)!;
    expect(treeDifference(await restored(fileReplica, last.backup.id), files(last.checkpoint.path))).toBeNull();
  }, 60_000);

  it('a restart with a snapshot still waiting for a replica: the new agent queues it again and the replica gets it', async () => {
    const back = directoryAway(replicaDir);
    await write('d', 20);
    const { backup } = await snapshot();
    expect((await replicaStatus(replicaUrl)).pending.map((p) => p.id)).toContain(backup.id);
    await agent!.stop();
    back();
    agent = newAgent();
    await agent.start();
    await until('the replica holds the snapshot made before the restart', async () => {
      const r = await replicaStatus(replicaUrl);
      return r.state === 'idle' && r.newestSnapshot !== null && r.newestSnapshot.createdAt >= backup.createdAt;
    });
    expect(await snapshotIds(storages[0]!)).toContain(backup.id);
  }, 60_000);
});

describe('backup.replicaPendingSnapshots', () => {
  it('takes a whole number from 1 to 1000 (default 3) and refuses anything else with one line', () => {
    const parse = (v: unknown) => parseBackupOptions({ repository: 'file:///tmp/x', replicaPendingSnapshots: v as number }, '/tmp/cp').replicaPendingSnapshots;
    expect(parse(undefined)).toBe(3);
    expect(parse(1)).toBe(1);
    expect(parse(1000)).toBe(1000);
    for (const bad of [0, -1, 1.5, 1001, '3', Number.NaN, Infinity]) {
      expect(() => parse(bad), String(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/^backup\.replicaPendingSnapshots must be a whole number from 1 to 1000, got \S+$/) }));
    }
  });
});
