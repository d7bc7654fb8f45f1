import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, createOfflineCheckpoint, listCheckpointsOffline, verifyCheckpointOffline } from '../dist/agent/index.js';
import { mkdirDurable, mkdirDurableSync, writeFileAtomic } from '../dist/agent/fs/durable-fs.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { SegmentSpool } from '../dist/agent/log-archive/segment-spool.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { main as cliMain } from '../dist/cli/cli.js';
import { EXAMPLE_NODE, startExampleNode, tempDir } from './support/processes.js';
import { mountPowercut } from './support/powercut-fs.js';
import { agentOperation, cleanUpCrashRoot, cliOperation, runCrashPoints, spawnOperation, type Ack, type CrashCase, type CrashReport, type OperationProcess } from './support/crash-points.js';
import { powercutSkip } from './support/powercut-suite.js';
import { FaultProxy, s3Server } from './support/s3-server.js';
import { TEST_KDF } from './support/test-password.js';

/**
 * What the project promises after a power cut (docs/power-loss.md), proven on the power-cut filesystem
 * (test/support/powercut-fs/, strict POSIX: only what was fsynced survives, a directory's entries only
 * once it is fsynced) by the crash-point harness (test/support/crash-points.ts): each operation runs in
 * a child process, the power is cut after many of the filesystem's operations, and the invariants are
 * checked on what is left. Each case here found a bug or guards one that it would find again.
 */

const skip = powercutSkip();
const roots: string[] = [];
const reports: CrashReport[] = [];
afterAll(() => {
  for (const r of roots.splice(0)) cleanUpCrashRoot(r);
  if (reports.length > 0) {
    process.stdout.write(
      `power cut: ${reports.reduce((n, r) => n + r.points.length + 1, 0)} cut points in ${reports.length} cases, ` +
        `${(reports.reduce((n, r) => n + r.ms, 0) / 1000).toFixed(0)} s\n`,
    );
  }
});

/**
 * The suite's time: CI runs it once (on one Node version), and it must add at most 4 minutes there. Each
 * case gets an even share of what is left (NODE_ADMIN_POWERCUT_SECONDS, default 160 s, all the cases),
 * and tries its cut points in its seeded order while its share lasts (at least 2, and the end).
 */
const BUDGET_MS = Number(process.env.NODE_ADMIN_POWERCUT_SECONDS ?? 160) * 1000;
const CASES = 12; // the crashPoints() calls below
let suiteStarted = 0;
let casesDone = 0;

async function crashPoints(c: CrashCase): Promise<CrashReport> {
  const root = tempDir('powercut');
  roots.push(root);
  suiteStarted ||= Date.now();
  const left = suiteStarted + BUDGET_MS - Date.now();
  const deadline = Date.now() + Math.max(0, left) / Math.max(1, CASES - casesDone);
  casesDone++;
  const report = await runCrashPoints(root, c, { deadline });
  reports.push(report);
  return report;
}

const silent = pino({ level: 'silent' });

/** The database every case starts from: `count` keys of `size` bytes, some in tables, the rest in the log. */
const MODEL_KEYS = 1500;
const VALUE_SIZE = 1000;
function modelValue(i: number): string {
  return `v${i}:`.padEnd(VALUE_SIZE, 'x');
}
function modelKey(i: number): string {
  return `k${String(i).padStart(6, '0')}`;
}

async function makeDb(dbPath: string): Promise<void> {
  // A small write buffer: the 1.5 MB go partly into tables, the rest stays in the log.
  const db = new ClassicLevel<string, string>(dbPath, { writeBufferSize: 256 * 1024 });
  await db.open();
  for (let i = 0; i < MODEL_KEYS; i += 100) {
    await db.batch(Array.from({ length: Math.min(100, MODEL_KEYS - i) }, (_, j) => ({ type: 'put' as const, key: modelKey(i + j), value: modelValue(i + j) })));
  }
  await db.close();
}

/** Every entry of a database, read from a copy (opening changes a database: never the one checked). */
async function readDb(dbPath: string): Promise<Map<string, string>> {
  const copy = `${dbPath.replace(/\/$/, '')}.read-${process.pid}-${Math.random().toString(16).slice(2)}`;
  fs.cpSync(dbPath, copy, { recursive: true });
  const db = new ClassicLevel<string, string>(copy, { createIfMissing: false });
  try {
    await db.open();
    const out = new Map<string, string>();
    for await (const [k, v] of db.iterator()) out.set(k, v);
    return out;
  } finally {
    await db.close().catch(() => {});
    fs.rmSync(copy, { recursive: true, force: true });
  }
}

/** The database holds exactly the model's entries (and the `extra` ones, when given). */
async function expectModel(dbPath: string, what: string, extra = 0): Promise<void> {
  const entries = await readDb(dbPath);
  expect(entries.size, `${what}: entries`).toBe(MODEL_KEYS + extra);
  for (let i = 0; i < MODEL_KEYS; i += 97) expect(entries.get(modelKey(i)), `${what}: ${modelKey(i)}`).toBe(modelValue(i));
  for (let i = 0; i < extra; i++) expect(entries.get(`extra${i}`), `${what}: extra${i}`).toBe(`e${i}`);
}

/** Adds `extra` entries to a database no one has open. */
async function addExtra(dbPath: string, extra: number): Promise<void> {
  const db = new ClassicLevel<string, string>(dbPath, { createIfMissing: false });
  await db.open();
  await db.batch(Array.from({ length: extra }, (_, i) => ({ type: 'put' as const, key: `extra${i}`, value: `e${i}` })));
  await db.close();
}

/**
 * The CLI, run in this process (the checks after a cut run many commands: a process each would cost
 * more than the rest of the check).
 */
async function runCli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await cliMain(args, { stdout: { write: (t: string) => (stdout += t) }, stderr: { write: (t: string) => (stderr += t) }, env: {} });
  return { code, stdout, stderr };
}

/** Runs the embedded-agent child to its end (a case's preparation). */
async function agentSteps(config: Record<string, unknown>): Promise<Ack[]> {
  const op = agentOperation(config);
  const code = await op.exited;
  expect(code, `agent child: ${op.output()}`).toBe(0);
  return op.acks();
}

function repoUrl(dir: string): string {
  return pathToFileURL(path.join(dir, 'node', 'backups')).href;
}

/**
 * The repository verifies, every byte read (exit 0: nothing missing or damaged). A repository whose
 * config never became durable is no repository yet: then nothing may have been acknowledged in it.
 */
async function expectRepoVerifies(dir: string, acknowledged: number): Promise<void> {
  const r = await runCli(['backup', 'verify', '--read-data', '--repo', repoUrl(dir)]);
  if (r.code === 3 && r.stderr.includes('REPOSITORY_NOT_FOUND') && acknowledged === 0) return;
  expect(r.code, `backup verify --read-data: ${r.stdout}${r.stderr}`).toBe(0);
}

/** A backup of a checkpoint by an agent in this process (the next one after a cut); its record. */
async function backupHere(dir: string, checkpointId: string): Promise<{ id: string; bytesUploaded: number }> {
  const agent = createAgent({
    dbPath: path.join(dir, 'node', 'db'),
    checkpointDir: path.join(dir, 'node', 'checkpoints'),
    backup: { repository: repoUrl(dir) },
    logger: silent,
  });
  await agent.start();
  try {
    const r = await agent.createBackup({ checkpointId });
    return { id: r.id, bytesUploaded: r.bytesUploaded ?? 0 };
  } finally {
    await agent.stop();
  }
}

/** Backup `id` restores, byte-exactly as checksummed, to a database equal to the model (+ `extra`). */
async function expectBackupRestores(dir: string, id: string, extra: number): Promise<void> {
  const to = path.join(dir, `restore-check-${id}`);
  const r = await runCli(['backup', 'restore', id, '--repo', repoUrl(dir), '--to', to]);
  expect(r.code, `backup restore ${id}: ${r.stdout}${r.stderr}`).toBe(0);
  await expectModel(to, `backup ${id} restored`, extra);
  fs.rmSync(to, { recursive: true, force: true });
}

/** Every backup the repository lists. */
async function listBackups(dir: string): Promise<{ id: string; checkpoint: { id: string } }[]> {
  const r = await runCli(['backup', 'list', '--repo', repoUrl(dir), '--json']);
  expect(r.code, `backup list: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as { id: string; checkpoint: { id: string } }[];
}

function acked(acks: Ack[], kind: string): Ack[] {
  return acks.filter((a) => a.kind === kind);
}

/**
 * The checkpoint invariants: every listed checkpoint is whole (verifies, and holds the model: no write
 * runs during these cases), every acknowledged one is listed, and an agent starts on what is left and
 * lists the same.
 */
async function checkCheckpoints(dbPath: string, checkpointDir: string, ackedIds: string[]): Promise<string[]> {
  const listed = (await listCheckpointsOffline(checkpointDir)).map((r) => r.id);
  for (const id of ackedIds) expect(listed, `acknowledged checkpoint ${id} is listed`).toContain(id);
  for (const id of listed) {
    const report = await verifyCheckpointOffline(checkpointDir, id);
    expect(report.ok, `checkpoint ${id} verifies: ${JSON.stringify(report)}`).toBe(true);
    await expectModel(path.join(checkpointDir, id, 'db'), `checkpoint ${id}`);
  }
  const agent = createAgent({ dbPath, checkpointDir, logger: silent });
  await agent.start();
  try {
    expect((await agent.listCheckpoints()).map((r) => r.id)).toEqual(listed);
  } finally {
    await agent.stop();
  }
  return listed;
}

describe.skipIf(skip !== null)(`power cuts${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('mkdirDurable makes durable a directory that exists but is not (its maker died before fsyncing the parent)', async () => {
    const base = tempDir('powercut-mkdir');
    roots.push(base);
    const m = await mountPowercut(base);
    try {
      for (const name of ['async', 'sync', 'control']) fs.mkdirSync(path.join(m.mnt, name));
      const root = fs.openSync(m.mnt, 'r');
      fs.fsyncSync(root); // the three are durable...
      fs.closeSync(root);
      // ...and a process made a directory in each and died before fsyncing its parent: it exists, in the
      // cache only.
      for (const name of ['async', 'sync', 'control']) fs.mkdirSync(path.join(m.mnt, name, 'objects'));
      await mkdirDurable(path.join(m.mnt, 'async', 'objects'));
      mkdirDurableSync(path.join(m.mnt, 'sync', 'objects'));
      for (const name of ['async', 'sync', 'control']) await writeFileAtomic(path.join(m.mnt, name, 'objects', 'object'), name);
      await m.cut();
    } finally {
      await m.unmount();
    }
    expect(fs.readFileSync(path.join(base, 'data', 'async', 'objects', 'object'), 'utf8')).toBe('async');
    expect(fs.readFileSync(path.join(base, 'data', 'sync', 'objects', 'object'), 'utf8')).toBe('sync');
    // The negative control: written the same way into the directory nobody made durable, it is gone.
    expect(fs.readdirSync(path.join(base, 'data', 'control'))).toEqual([]);
  });

  it('the harness catches an acknowledgement a power cut takes back (negative control), and passes the same write made durable', async () => {
    /** Writes dir/flag through a temp file and a rename, fsyncing as told, then acknowledges it. */
    const writer = (durable: boolean): CrashCase => ({
      name: `negative control (${durable ? 'durable' : 'not durable'})`,
      maxPoints: 4,
      async prepare() {},
      start: (dir) =>
        spawnOperation(process.execPath, [
          '-e',
          `const fs = require('fs'); const [dir, durable] = [process.argv[1], process.argv[2] === 'true'];
           const fd = fs.openSync(dir + '/flag.tmp', 'w'); fs.writeSync(fd, 'written'); if (durable) fs.fsyncSync(fd); fs.closeSync(fd);
           fs.renameSync(dir + '/flag.tmp', dir + '/flag');
           if (durable) { const d = fs.openSync(dir, 'r'); fs.fsyncSync(d); fs.closeSync(d); }
           console.log(JSON.stringify({ ack: { kind: 'written' } }));`,
          dir,
          String(durable),
        ]),
      async check(dir, cut) {
        const flag = path.join(dir, 'flag');
        if (acked(cut.acks, 'written').length > 0) expect(fs.existsSync(flag) ? fs.readFileSync(flag, 'utf8') : null, 'the acknowledged write').toBe('written');
      },
    });
    const root = tempDir('powercut-control');
    roots.push(root);
    await expect(runCrashPoints(root, writer(false))).rejects.toThrow(/the acknowledged write/);
    await runCrashPoints(root, writer(true));
  });

  it('checkpoint create into a fresh data directory (the agent): an acknowledged checkpoint survives, none is partial', async () => {
    const report = await crashPoints({
      name: 'checkpoint create, fresh data directory',
      maxPoints: 10,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
      },
      start: (dir) =>
        agentOperation({ dbPath: path.join(dir, 'node', 'db'), checkpointDir: path.join(dir, 'node', 'checkpoints'), steps: [{ op: 'checkpoint' }] }),
      async check(dir, cut) {
        const db = path.join(dir, 'node', 'db');
        await expectModel(db, 'the live database');
        await checkCheckpoints(db, path.join(dir, 'node', 'checkpoints'), acked(cut.acks, 'checkpoint').map((a) => a.id as string));
      },
    });
    expect(report.points.length).toBeGreaterThan(0);
  });

  it("the example node's first start on an empty data directory: after a cut it starts again, and its database opens", async () => {
    const outside = tempDir('powercut-sock');
    roots.push(outside);
    const socket = path.join(outside, 'admin.sock');
    /** The node started on `dir/node`; acknowledged once ready, then stopped (SIGTERM) by the harness. */
    const startNode = (dir: string): OperationProcess => {
      const op = spawnOperation(process.execPath, [EXAMPLE_NODE, '--data-dir', path.join(dir, 'node'), '--port', '0', '--socket', socket, '--log-archive', 'off']);
      const acks: Ack[] = [];
      let stopping = false;
      const timer = setInterval(() => {
        if (stopping || !op.stdout().includes('"node ready"')) return;
        stopping = true;
        acks.push({ kind: 'ready' });
        // The node is up: stop it as an operator would (its stop is part of what is cut).
        op.signal('SIGTERM');
      }, 20);
      void op.exited.then(() => clearInterval(timer));
      return { ...op, acks: () => acks };
    };
    await crashPoints({
      name: 'example node, first start',
      maxPoints: 8,
      async prepare() {},
      start: startNode,
      async check(dir, cut) {
        const db = path.join(dir, 'node', 'db');
        if (acked(cut.acks, 'ready').length > 0) {
          // The node said it was ready: its database is there and opens (an empty one: nothing was written).
          expect((await readDb(db)).size).toBe(0);
        }
        const node = await startExampleNode(path.join(dir, 'node'));
        expect(await node.stop()).toBe(0);
        expect((await readDb(db)).size).toBe(0);
      },
    });
  });

  it('checkpoint create --offline into an existing checkpoint directory', async () => {
    let first = '';
    await crashPoints({
      name: 'checkpoint create --offline, existing directory',
      maxPoints: 6,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
        first = (await createOfflineCheckpoint({ dbPath: path.join(dir, 'node', 'db'), checkpointDir: path.join(dir, 'node', 'checkpoints') })).id;
      },
      start: (dir) =>
        cliOperation(['checkpoint', 'create', '--offline', '--db', path.join(dir, 'node', 'db'), '--checkpoint-dir', path.join(dir, 'node', 'checkpoints'), '--json']),
      async check(dir, cut) {
        const db = path.join(dir, 'node', 'db');
        await expectModel(db, 'the live database');
        const ids = acked(cut.acks, 'cli').map((a) => (a.result as { id: string }).id);
        const listed = await checkCheckpoints(db, path.join(dir, 'node', 'checkpoints'), [first, ...ids]);
        expect(listed.length).toBeLessThanOrEqual(2);
      },
    });
  });

  it('retention after a create (keep the newest 1): what is listed is whole, the acknowledged one is kept', async () => {
    await crashPoints({
      name: 'checkpoint create with retention',
      maxPoints: 6,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
        for (let i = 0; i < 2; i++) await createOfflineCheckpoint({ dbPath: path.join(dir, 'node', 'db'), checkpointDir: path.join(dir, 'node', 'checkpoints') });
      },
      start: (dir) =>
        agentOperation({
          dbPath: path.join(dir, 'node', 'db'),
          checkpointDir: path.join(dir, 'node', 'checkpoints'),
          retention: { keepLast: 1 },
          steps: [{ op: 'checkpoint' }],
        }),
      async check(dir, cut) {
        const db = path.join(dir, 'node', 'db');
        await expectModel(db, 'the live database');
        const ids = acked(cut.acks, 'checkpoint').map((a) => a.id as string);
        const listed = await checkCheckpoints(db, path.join(dir, 'node', 'checkpoints'), ids);
        if (ids.length > 0 && cut.acks.some((a) => a.kind === 'stopped')) expect(listed).toEqual(ids);
      },
    });
  });

  it('checkpoint restore (offline): exit 0 leaves the checkpoint in place; no cut loses the database it replaces', async () => {
    const EXTRA = 50;
    let id = '';
    await crashPoints({
      name: 'checkpoint restore',
      maxPoints: 6,
      async prepare(dir) {
        const db = path.join(dir, 'node', 'db');
        await makeDb(db);
        id = (await createOfflineCheckpoint({ dbPath: db, checkpointDir: path.join(dir, 'node', 'checkpoints') })).id;
        await addExtra(db, EXTRA); // the live database moves on past the checkpoint
      },
      start: (dir) =>
        cliOperation(['checkpoint', 'restore', id, '--db', path.join(dir, 'node', 'db'), '--checkpoint-dir', path.join(dir, 'node', 'checkpoints'), '--json']),
      async check(dir, cut) {
        const node = path.join(dir, 'node');
        const db = path.join(node, 'db');
        const replaced = fs.readdirSync(node).filter((n) => n.startsWith('db.replaced-'));
        if (acked(cut.acks, 'cli').length > 0) {
          await expectModel(db, 'the restored database');
          expect(replaced).toHaveLength(1);
        }
        // The database that was there before is somewhere, whole: in place, or set aside.
        const candidates = [db, ...replaced.map((n) => path.join(node, n))].filter((p) => fs.existsSync(p));
        let old = 0;
        for (const p of candidates) {
          const size = (await readDb(p)).size;
          expect([MODEL_KEYS, MODEL_KEYS + EXTRA], `${p} is one of the two databases, whole`).toContain(size);
          if (size === MODEL_KEYS + EXTRA) {
            await expectModel(p, 'the replaced database', EXTRA);
            old++;
          }
        }
        expect(old, `the replaced database survives (${candidates.join(', ')})`).toBe(1);
        expect((await verifyCheckpointOffline(path.join(node, 'checkpoints'), id)).ok).toBe(true);
      },
    });
  });

  /** A backup of checkpoint `checkpointId` by the agent (the case's operation, or the next one after a cut). */
  const backupConfig = (dir: string, checkpointId: string) => ({
    dbPath: path.join(dir, 'node', 'db'),
    checkpointDir: path.join(dir, 'node', 'checkpoints'),
    backup: { repository: repoUrl(dir) },
    steps: [{ op: 'backup', checkpointId }],
  });

  /**
   * The backup invariants after a cut: the repository verifies (every byte), an acknowledged backup
   * restores to exactly its checkpoint, and the next backup of the same checkpoint completes, re-sending
   * nothing when the cut one was acknowledged.
   */
  async function checkBackup(dir: string, cut: { acks: Ack[] }, checkpointId: string, extra: number): Promise<void> {
    const ids = acked(cut.acks, 'backup').map((a) => a.id as string);
    await expectRepoVerifies(dir, ids.length);
    for (const id of ids) await expectBackupRestores(dir, id, extra);
    // The next backup completes (no lock, marker or half-written object left by the cut stops it), and
    // after an acknowledged one it stores nothing but its snapshot.
    const next = await backupHere(dir, checkpointId);
    if (ids.length > 0) expect(next.bytesUploaded, 'the next backup of an acknowledged one stores only its snapshot').toBeLessThan(64 * 1024);
    else await expectBackupRestores(dir, next.id, extra);
  }

  it('backup create, full, to file://: an acknowledged backup restores exactly, the repository verifies after any cut', async () => {
    let checkpointId = '';
    await crashPoints({
      name: 'backup create (full)',
      maxPoints: 8,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
        checkpointId = (await createOfflineCheckpoint({ dbPath: path.join(dir, 'node', 'db'), checkpointDir: path.join(dir, 'node', 'checkpoints') })).id;
      },
      start: (dir) => agentOperation(backupConfig(dir, checkpointId)),
      check: (dir, cut) => checkBackup(dir, cut, checkpointId, 0),
    });
  });

  it('backup create, incremental, to file://', async () => {
    const EXTRA = 300;
    let second = '';
    await crashPoints({
      name: 'backup create (incremental)',
      maxPoints: 8,
      async prepare(dir) {
        const db = path.join(dir, 'node', 'db');
        const checkpointDir = path.join(dir, 'node', 'checkpoints');
        await makeDb(db);
        const first = (await createOfflineCheckpoint({ dbPath: db, checkpointDir })).id;
        await agentSteps(backupConfig(dir, first));
        await addExtra(db, EXTRA);
        second = (await createOfflineCheckpoint({ dbPath: db, checkpointDir })).id;
      },
      start: (dir) => agentOperation(backupConfig(dir, second)),
      check: (dir, cut) => checkBackup(dir, cut, second, EXTRA),
    });
  });

  it('backup restore from file://: exit 0 leaves the whole database at the target, a cut leaves it whole or absent', async () => {
    let backupId = '';
    await crashPoints({
      name: 'backup restore',
      maxPoints: 6,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
        const checkpointId = (await createOfflineCheckpoint({ dbPath: path.join(dir, 'node', 'db'), checkpointDir: path.join(dir, 'node', 'checkpoints') })).id;
        backupId = acked(await agentSteps(backupConfig(dir, checkpointId)), 'backup')[0]!.id as string;
      },
      start: (dir) => cliOperation(['backup', 'restore', backupId, '--repo', repoUrl(dir), '--to', path.join(dir, 'restored'), '--json']),
      async check(dir, cut) {
        const to = path.join(dir, 'restored');
        if (acked(cut.acks, 'cli').length > 0 || fs.existsSync(to)) await expectModel(to, 'the restored database');
        // Run again after the cut (into a new target if the first one is there): it completes.
        const again = path.join(dir, fs.existsSync(to) ? 'restored-again' : 'restored');
        const r = await runCli(['backup', 'restore', backupId, '--repo', repoUrl(dir), '--to', again]);
        expect(r.code, r.stderr).toBe(0);
        await expectModel(again, 'the restore run again');
      },
    });
  });

  it('backup prune (keep the newest 1): every backup still listed restores, the repository verifies', async () => {
    const ids: { id: string; extra: number }[] = [];
    await crashPoints({
      name: 'backup prune',
      maxPoints: 8,
      async prepare(dir) {
        const db = path.join(dir, 'node', 'db');
        const checkpointDir = path.join(dir, 'node', 'checkpoints');
        await makeDb(db);
        for (const extra of [0, 100, 200]) {
          if (extra > 0) await addExtra(db, extra);
          const checkpointId = (await createOfflineCheckpoint({ dbPath: db, checkpointDir })).id;
          ids.push({ id: acked(await agentSteps(backupConfig(dir, checkpointId)), 'backup')[0]!.id as string, extra });
        }
      },
      start: (dir) => cliOperation(['backup', 'prune', '--repo', repoUrl(dir), '--keep-last', '1', '--json']),
      async check(dir, cut) {
        await expectRepoVerifies(dir, ids.length);
        const listed = (await listBackups(dir)).map((b) => b.id);
        expect(listed).toContain(ids[2]!.id);
        if (acked(cut.acks, 'cli').length > 0) expect(listed).toEqual([ids[2]!.id]);
        for (const b of ids) if (listed.includes(b.id)) await expectBackupRestores(dir, b.id, b.extra);
      },
    });
  });

  /** The keys a `puts` step of the child writes (powercut-child.mjs). */
  const putKeys = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(6, '0')}`);

  /** `backup restore --at latest` into `to`; the restored database's entries, and the sequence reached. */
  async function restoreLatest(dir: string, to: string): Promise<{ entries: Map<string, string>; sequence: number }> {
    const r = await runCli(['backup', 'restore', '--at', 'latest', '--repo', repoUrl(dir), '--to', to, '--json']);
    expect(r.code, `restore --at latest: ${r.stdout}${r.stderr}`).toBe(0);
    const sequence = (JSON.parse(r.stdout) as { reached: { sequence: number } }).reached.sequence;
    const entries = await readDb(to);
    fs.rmSync(to, { recursive: true, force: true });
    return { entries, sequence };
  }

  it('the log archive: a write acknowledged as archived is restorable with restore --at after any cut; the agent starts again', async () => {
    const archive = (dir: string) => ({
      dbPath: path.join(dir, 'node', 'db'),
      checkpointDir: path.join(dir, 'node', 'checkpoints'),
      backup: { repository: repoUrl(dir), logArchive: { intervalMs: 100 } },
    });
    await crashPoints({
      name: 'log archive',
      maxPoints: 8,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
      },
      start: (dir) =>
        agentOperation({
          ...archive(dir),
          steps: [
            { op: 'following' },
            { op: 'puts', prefix: 'a', count: 100, size: 200 },
            { op: 'shipped' },
            { op: 'puts', prefix: 'b', count: 100, size: 200 },
            { op: 'shipped' },
          ],
        }),
      async check(dir, cut) {
        const shipped = acked(cut.acks, 'shipped');
        await expectRepoVerifies(dir, shipped.length);
        if (shipped.length > 0) {
          // Every write made before the last acknowledgement of "archived" is restorable.
          const latest = await restoreLatest(dir, path.join(dir, 'restored'));
          expect(latest.sequence).toBeGreaterThanOrEqual(shipped.at(-1)!.sequence as number);
          const expected = [...putKeys('a', 100), ...(shipped.length > 1 ? putKeys('b', 100) : [])];
          for (const k of expected) expect(latest.entries.has(k), `archived write ${k} restored`).toBe(true);
          for (let i = 0; i < MODEL_KEYS; i += 97) expect(latest.entries.get(modelKey(i))).toBe(modelValue(i));
        }
        // The agent starts on what is left and archives again: a new timeline, a new base.
        const agent = createAgent({ ...archive(dir), logger: silent });
        await agent.start();
        try {
          for (;;) {
            const s = (await agent.status()).logArchive;
            if (s?.state === 'following') break;
            if (s?.state === 'retrying' || s?.state === 'broken') throw new Error(`the log archive does not start after the cut: ${JSON.stringify(s)}`);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        } finally {
          await agent.stop();
        }
      },
    });
  });

  it('the log archive with its spool: the repository away, then back, then away at the stop; a segment the spool accepted reaches the repository after any cut, and restores', async () => {
    // S3 on the tests' Swift server, through a proxy the case stops and starts (as in
    // log-archive-outage.test.ts): the repository lives outside the power-cut mount, and what the
    // archiver reads while it is away spills to the spool, `<db>.log-archive-spool/`, on the mount.
    const server = s3Server();
    const proxy = FaultProxy.forEndpoint(server.endpoint);
    const proxied = await proxy.start();
    const s3 = (endpoint: string) => ({ endpoint, region: server.region, forcePathStyle: true });
    // The SDK finds the credentials in the environment: the child inherits them, the checks here use them.
    const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    /** What the checks met, over all the runs: the checks that matter must have had something to check. */
    const seen = { onlySpooled: 0, storedAgain: 0 };
    /** Each run archives into a repository of its own (the server keeps what earlier runs stored; it is removed with the server). */
    let url = '';
    const direct = () => ['--repo', url, '--s3-endpoint', server.endpoint];
    /** The order the child writes in (its `puts` steps): a key each, one sequence number each. */
    const puts = [
      { prefix: 'a', count: 100, size: 200 },
      { prefix: 'b', count: 100, size: 1000 },
      { prefix: 'c', count: 100, size: 1000 },
      { prefix: 'd', count: 100, size: 1000 },
    ];
    const order = puts.flatMap((p) => putKeys(p.prefix, p.count).map((key, i) => ({ key, value: `${p.prefix}${i}:`.padEnd(p.size, 'v') })));
    const [a, b, c, d] = puts.map((p) => ({ op: 'puts', ...p }));
    let prepared = 0; // the database's last sequence before the child writes
    const spoolDir = (dir: string) => path.join(dir, 'node', 'db.log-archive-spool');

    /** A database restored to `sequence` holds the model and exactly the child's first writes up to it. */
    const expectWritesUpTo = (entries: Map<string, string>, sequence: number, what: string) => {
      const n = sequence - prepared;
      expect(n, `${what}: sequence ${sequence} is one of the child's writes`).toBeGreaterThanOrEqual(0);
      expect(n).toBeLessThanOrEqual(order.length);
      expect(entries.size, `${what}: entries`).toBe(MODEL_KEYS + n);
      for (let i = 0; i < MODEL_KEYS; i += 97) expect(entries.get(modelKey(i)), `${what}: ${modelKey(i)}`).toBe(modelValue(i));
      for (const w of order.slice(0, n)) expect(entries.get(w.key), `${what}: ${w.key}`).toBe(w.value);
    };
    /** `backup restore --at <at>` straight from the server; the restored entries and the sequence reached. */
    const restoreAt = async (dir: string, at: string): Promise<{ entries: Map<string, string>; sequence: number }> => {
      const to = path.join(dir, 'restored');
      const r = await runCli(['backup', 'restore', '--at', at, ...direct(), '--to', to, '--json']);
      expect(r.code, `restore --at ${at}: ${r.stdout}${r.stderr}`).toBe(0);
      const sequence = (JSON.parse(r.stdout) as { reached: { sequence: number } }).reached.sequence;
      const entries = await readDb(to);
      fs.rmSync(to, { recursive: true, force: true });
      return { entries, sequence };
    };

    try {
      await crashPoints({
        name: 'log archive with its spool',
        maxPoints: 6,
        // The case is about the spool: its points are the operations before the spool's own fsyncs (of
        // its files and its directory), while it fills during the first outage and at the stop during the
        // second. The drain makes nothing durable (its removals wait for the directory's next fsync): a
        // cut during or after it leaves the durable state of the next spool write's points, or the end's.
        focus: (line) => line.includes('.log-archive-spool'),
        async prepare(dir) {
          const db = path.join(dir, 'node', 'db');
          await makeDb(db);
          prepared = (await dbSequence(db)).sequence;
        },
        start(dir) {
          url = `s3://${server.bucket}/powercut-spool-${Date.now().toString(36)}-${Math.random().toString(16).slice(2, 8)}`;
          proxy.then = 'pass';
          const t0 = Date.now();
          return agentOperation(
            {
              dbPath: path.join(dir, 'node', 'db'),
              checkpointDir: path.join(dir, 'node', 'checkpoints'),
              // The smallest memory part (64 KiB): b's and c's 100 KB go to the spool's directory. A cheap key:
              // every open of the repository, here and in the checks, derives it.
              backup: { repository: url, s3: s3(proxied), kdfCost: TEST_KDF, logArchive: { intervalMs: 100, spoolMemoryBytes: 64 * 1024 } },
              steps: [
                { op: 'following' },
                a,
                { op: 'shipped' },
                { op: 'storage', want: 'away' },
                b,
                { op: 'spooled', count: 1 },
                // Written to the spool while the outage lasts (the shipments failing meanwhile queue no more than one).
                c,
                { op: 'spooled', count: 2 },
                { op: 'storage', want: 'back' },
                { op: 'shipped' }, // the spool drained (its removals not durable until its next write)
                { op: 'storage', want: 'away' },
                d, // and the agent stops: the last shipment fails, what was read goes to the spool
              ],
            },
            {
              onAck(ack, op) {
                if (process.env.NODE_ADMIN_POWERCUT_TIMES) process.stdout.write(`    ${Date.now() - t0} ms: ${JSON.stringify(ack)}\n`);
                if (ack.kind !== 'storage') return;
                proxy.then = ack.want === 'away' ? 'reset' : 'pass';
                if (ack.want === 'away') proxy.dropConnections(); // the SDK's pooled sockets too
                op.signal('SIGUSR2');
              },
            },
          );
        },
        async check(dir, cut) {
          proxy.then = 'pass';
          const spool = new SegmentSpool(spoolDir(dir));
          // Whatever the cut left under a spooled segment's name is whole (its digest checked): the
          // spool never holds a half-written file that would be taken for a whole one.
          const left = await spool.list();
          for (const f of left) {
            expect(f.info, `${f.file}: a spooled segment's name`).not.toBeNull();
            await spool.read({ info: f.info!, file: f.file });
          }
          const spooled = acked(cut.acks, 'spooled') as unknown as { timeline: string; first: number; last: number }[];
          const shipped = acked(cut.acks, 'shipped').map((x) => x.sequence as number);
          const storage = await openStorage(url, { s3: s3(server.endpoint) });
          try {
            // A segment the spool accepted is still in the spool, or was stored.
            const before = await readWindows(storage);
            const storedBefore = (x: { timeline: string; first: number; last: number }) =>
              before.timelines.find((t) => t.id === x.timeline)?.segments.some((y) => y.first <= x.first && y.last >= x.last) ?? false;
            for (const s of spooled) {
              const inSpool = left.some((f) => f.info!.timeline === s.timeline && f.info!.first === s.first && f.info!.last === s.last);
              expect(inSpool || storedBefore(s), `spooled segment ${s.first}..${s.last} of ${s.timeline}: in the spool or stored`).toBe(true);
            }
            // What the spool holds that the repository does not: the restart must store it (the check
            // after it fails without: the window's end is checked against these too).
            const onlySpooled = left.filter((f) => !storedBefore(f.info!));
            seen.onlySpooled += onlySpooled.length;
            seen.storedAgain += left.length - onlySpooled.length;
            // A write acknowledged as archived is in a restorable window as the cut left the repository
            // (what a restore chooses from; the restore at the end, after the restart, reads it).
            if (shipped.length > 0) {
              const t = before.timelines.find((x) => x.id === acked(cut.acks, 'shipped')[0]!.timeline);
              expect(t?.to, 'the archived writes are in a restorable window').not.toBeNull();
              expect(t!.brokenAfter).toBeNull();
              expect(t!.lastSequence!).toBeGreaterThanOrEqual(Math.max(...shipped));
            }

            // The agent starts again on what the cut left: it stores the spool's segments (again, those
            // stored before the cut whose removal was not durable) and takes a new base.
            const messages: { level: number; msg: string }[] = [];
            const agent = createAgent({
              dbPath: path.join(dir, 'node', 'db'),
              checkpointDir: path.join(dir, 'node', 'checkpoints'),
              backup: { repository: url, s3: s3(server.endpoint), logArchive: { intervalMs: 100 } },
              logger: pino({ level: 'info' }, { write: (line: string) => void messages.push(JSON.parse(line) as { level: number; msg: string }) }),
            });
            await agent.start();
            try {
              for (;;) {
                const trouble = messages.find((m) => m.level >= 40 && /spool/.test(m.msg));
                if (trouble) throw new Error(`the restart did not store the spool: ${trouble.msg}`);
                const s = (await agent.status()).logArchive;
                if (s?.state === 'retrying' || s?.state === 'broken') throw new Error(`the log archive does not start after the cut: ${JSON.stringify(s)}`);
                if (s?.state === 'following' && (await spool.list()).length === 0) break;
                await new Promise((resolve) => setTimeout(resolve, 50));
              }
            } finally {
              await agent.stop();
            }

            // Everything the spool accepted, and everything the cut left in it, reached the repository:
            // the old timeline reaches it without a gap, and restores to it.
            const timelines = new Set([...spooled.map((s) => s.timeline), ...acked(cut.acks, 'shipped').map((x) => x.timeline as string), ...left.map((f) => f.info!.timeline)]);
            expect(timelines.size, `one timeline before the restart: ${[...timelines].join(', ')}`).toBeLessThanOrEqual(1);
            if (timelines.size === 1) {
              const id = [...timelines][0]!;
              const old = (await readWindows(storage)).timelines.find((t) => t.id === id);
              expect(old?.to, `timeline ${id} is restorable`).not.toBeNull();
              expect(old!.brokenAfter).toBeNull();
              const needed = Math.max(...shipped, ...spooled.map((s) => s.last), ...left.map((f) => f.info!.last));
              // Negative control: before the restart, the same check failed for what only the spool held.
              const was = before.timelines.find((t) => t.id === id);
              if (onlySpooled.length > 0) expect(was?.lastSequence ?? -1, 'before the restart, the window stops short of the spool').toBeLessThan(needed);
              expect(old!.lastSequence!, `timeline ${id} reaches every spooled and archived write`).toBeGreaterThanOrEqual(needed);
              const end = await restoreAt(dir, new Date(old!.to!).toISOString());
              expect(end.sequence).toBeGreaterThanOrEqual(needed);
              expectWritesUpTo(end.entries, end.sequence, `restore --at the end of timeline ${id}`);
              // After a cut at the end, the stop had spooled everything the child wrote.
              if (cut.acks.some((x) => x.kind === 'stopped')) expect(end.sequence).toBe(prepared + order.length);
            }
          } finally {
            await storage.close();
          }
        },
      });
      // The end (the stop spooled what it read last) always leaves the restart segments only the spool holds.
      expect(seen.onlySpooled, 'runs whose restart had to store what only the spool held').toBeGreaterThan(0);
      if (process.env.NODE_ADMIN_POWERCUT_TIMES) process.stdout.write(`  spool: ${JSON.stringify(seen)}\n`);
    } finally {
      await proxy.stop();
      process.env.AWS_ACCESS_KEY_ID = savedEnv.id;
      process.env.AWS_SECRET_ACCESS_KEY = savedEnv.secret;
      if (savedEnv.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      if (savedEnv.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
    }
  });

  it('backup restore --at latest: exit 0 leaves the database at the target, a cut leaves it whole or absent', async () => {
    let sequence = 0;
    await crashPoints({
      name: 'restore --at',
      maxPoints: 6,
      async prepare(dir) {
        await makeDb(path.join(dir, 'node', 'db'));
        const acks = await agentSteps({
          dbPath: path.join(dir, 'node', 'db'),
          checkpointDir: path.join(dir, 'node', 'checkpoints'),
          backup: { repository: repoUrl(dir), logArchive: { intervalMs: 100 } },
          steps: [{ op: 'following' }, { op: 'puts', prefix: 'a', count: 100, size: 200 }, { op: 'shipped' }],
        });
        sequence = acked(acks, 'shipped')[0]!.sequence as number;
      },
      start: (dir) => cliOperation(['backup', 'restore', '--at', 'latest', '--repo', repoUrl(dir), '--to', path.join(dir, 'restored'), '--json']),
      async check(dir, cut) {
        const to = path.join(dir, 'restored');
        const done = acked(cut.acks, 'cli');
        if (done.length > 0) expect((done[0]!.result as { reached: { sequence: number } }).reached.sequence).toBeGreaterThanOrEqual(sequence);
        if (done.length > 0 || fs.existsSync(to)) {
          const entries = await readDb(to);
          expect(entries.size).toBe(MODEL_KEYS + 100);
          for (const k of putKeys('a', 100)) expect(entries.has(k)).toBe(true);
        }
        const again = await restoreLatest(dir, path.join(dir, 'restored-again'));
        expect(again.sequence).toBeGreaterThanOrEqual(sequence);
      },
    });
  });
});
