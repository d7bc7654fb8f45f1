import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, listCheckpointsOffline, verifyCheckpointOffline } from '../dist/agent/index.js';
import { mkdirDurable, mkdirDurableSync, writeFileAtomic } from '../dist/agent/fs/durable-fs.js';
import { EXAMPLE_NODE, startExampleNode, tempDir } from './support/processes.js';
import { mountPowercut } from './support/powercut-fs.js';
import { agentOperation, cleanUpCrashRoot, runCrashPoints, spawnOperation, type Ack, type CrashCase, type CrashReport, type OperationProcess } from './support/crash-points.js';
import { powercutSkip } from './support/powercut-suite.js';

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

async function crashPoints(c: CrashCase): Promise<CrashReport> {
  const root = tempDir('powercut');
  roots.push(root);
  const report = await runCrashPoints(root, c);
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

/** The database holds exactly the model's entries. */
async function expectModel(dbPath: string, what: string): Promise<void> {
  const entries = await readDb(dbPath);
  expect(entries.size, `${what}: entries`).toBe(MODEL_KEYS);
  for (let i = 0; i < MODEL_KEYS; i += 97) expect(entries.get(modelKey(i)), `${what}: ${modelKey(i)}`).toBe(modelValue(i));
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
});
