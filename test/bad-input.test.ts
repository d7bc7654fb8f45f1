import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../dist/agent/index.js';
import type { AgentStatus, CheckpointRecord } from '../dist/shared/index.js';
import { EXAMPLE_NODE, kv, kvAll, runCli, startExampleNode, tempDir, type CliResult, type RunningNode } from './support/processes.js';

/**
 * Bad input and hostile conditions, through the real CLI process and the real example node: every
 * failure is the right exit code and ONE line on stderr (never a stack trace), and nothing is lost.
 */

const UNKNOWN_ID = '20200101T000000000Z-abcd';
const STACK = /\n\s+at /;

function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

/** The CLI failed with `exit` and printed exactly `node-admin: <message> (<code>)` on stderr, nothing on stdout. */
function expectCliError(r: CliResult, exit: number, code: string): string {
  expect(r.code, `stderr: ${r.stderr}\nstdout: ${r.stdout}`).toBe(exit);
  expect(r.stderr).not.toMatch(STACK);
  expect(lines(r.stderr)).toHaveLength(1);
  const m = /^node-admin: (.+) \(([A-Z_]+)\)$/.exec(lines(r.stderr)[0]!);
  expect(m, r.stderr).not.toBeNull();
  expect(m![2]).toBe(code);
  expect(r.stdout).toBe('');
  return m![1]!;
}

function expectCliOk(r: CliResult): void {
  expect(r.code, `stderr: ${r.stderr}`).toBe(0);
  expect(r.stderr).toBe('');
}

/** Every file under `dir` with its size (and the content of checkpoint.json files): what "unchanged" means. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!fs.existsSync(dir)) return out;
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = path.join(rel, name);
      const st = fs.lstatSync(path.join(dir, r));
      if (st.isDirectory()) {
        out[`${r}/`] = 'dir';
        walk(r);
      } else {
        out[r] = name === 'checkpoint.json' ? fs.readFileSync(path.join(dir, r), 'utf8') : `${st.size} bytes, ino ${st.ino}`;
      }
    }
  };
  walk('.');
  return out;
}

describe('bad input against a running example node', () => {
  const dataDir = tempDir('bad-input');
  const scratch = tempDir('bad-input-scratch');
  let node: RunningNode;
  let sock: string;
  let checkpointDir: string;
  let checkpoint: CheckpointRecord;
  const expected: Record<string, string> = {};
  const nodes: RunningNode[] = [];

  beforeAll(async () => {
    node = await startExampleNode(dataDir);
    nodes.push(node);
    sock = node.socketPath;
    checkpointDir = path.join(dataDir, 'checkpoints');
    for (let i = 0; i < 200; i++) {
      const key = `acct/${String(i).padStart(3, '0')}`;
      const value = `balance-${i}-${'z'.repeat(i % 40)}`;
      expect((await kv(node.port, 'PUT', key, value)).status).toBe(204);
      expected[key] = value;
    }
    const created = await runCli(['checkpoint', 'create', '--label', 'bad-input', '--json', '--socket', sock]);
    expectCliOk(created);
    checkpoint = JSON.parse(created.stdout) as CheckpointRecord;
  });

  afterAll(async () => {
    for (const n of nodes) {
      if (n.child.exitCode === null && n.child.signalCode === null) await n.stop();
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  it('checkpoint ids: unknown -> exit 3; a/b, .. and other non-ids -> exit 2; nothing deleted', async () => {
    const before = snapshot(checkpointDir);
    expect(expectCliError(await runCli(['checkpoint', 'show', UNKNOWN_ID, '--socket', sock]), 3, 'NOT_FOUND')).toContain(UNKNOWN_ID);
    expectCliError(await runCli(['checkpoint', 'delete', UNKNOWN_ID, '--socket', sock]), 3, 'NOT_FOUND');
    expectCliError(await runCli(['checkpoint', 'show', 'a/b', '--socket', sock]), 2, 'INVALID_ARGUMENT');
    expectCliError(await runCli(['checkpoint', 'delete', '..', '--socket', sock]), 2, 'INVALID_ARGUMENT');
    expectCliError(await runCli(['checkpoint', 'delete', '--force', `${checkpoint.id}/..`, '--socket', sock]), 2, 'INVALID_ARGUMENT');
    expectCliError(await runCli(['checkpoint', 'pin', '../../etc/passwd', '--socket', sock]), 2, 'INVALID_ARGUMENT');
    expectCliError(await runCli(['checkpoint', 'verify', `${checkpoint.id}%2F..`, '--socket', sock]), 2, 'INVALID_ARGUMENT');
    expectCliError(await runCli(['checkpoint', 'show', UNKNOWN_ID, '--checkpoint-dir', checkpointDir]), 3, 'NOT_FOUND');

    const list = await runCli(['checkpoint', 'list', '--json', '--socket', sock]);
    expectCliOk(list);
    expect((JSON.parse(list.stdout) as CheckpointRecord[]).map((r) => r.id)).toEqual([checkpoint.id]);
    expect(snapshot(checkpointDir)).toEqual(before);
    expect(await kvAll(node.port)).toEqual(expected);
  });

  it('restore while the node runs -> exit 4 DATABASE_LOCKED, and the node and its data are untouched', async () => {
    const before = snapshot(checkpointDir);
    const r = await runCli(['checkpoint', 'restore', checkpoint.id, '--db', path.join(dataDir, 'db'), '--checkpoint-dir', checkpointDir]);
    expect(expectCliError(r, 4, 'DATABASE_LOCKED')).toContain(path.join(dataDir, 'db'));
    // No half-done swap beside the database.
    expect(fs.readdirSync(dataDir).filter((n) => n.startsWith('db.'))).toEqual([]);
    expect(snapshot(checkpointDir)).toEqual(before);
    expect(await kvAll(node.port)).toEqual(expected);
    // Still the live database: the node writes and reads it.
    expect((await kv(node.port, 'PUT', 'after-restore-attempt', 'still here')).status).toBe(204);
    expected['after-restore-attempt'] = 'still here';
    expect(await kvAll(node.port)).toEqual(expected);
  });

  it('restore into a missing directory or of an unknown id -> exit 3; bad id -> exit 2; nothing created, checkpoints unchanged', async () => {
    const before = snapshot(checkpointDir);
    expect(fs.existsSync('/nonexistent')).toBe(false);
    const missing = await runCli(['checkpoint', 'restore', checkpoint.id, '--db', '/nonexistent/x/db', '--checkpoint-dir', checkpointDir]);
    expect(expectCliError(missing, 3, 'NOT_FOUND')).toContain('/nonexistent/x');
    expect(fs.existsSync('/nonexistent')).toBe(false);

    const target = path.join(scratch, 'restored-db');
    expectCliError(await runCli(['checkpoint', 'restore', UNKNOWN_ID, '--db', target, '--checkpoint-dir', checkpointDir]), 3, 'NOT_FOUND');
    expectCliError(await runCli(['checkpoint', 'restore', '../x', '--db', target, '--checkpoint-dir', checkpointDir]), 2, 'INVALID_ARGUMENT');
    expectCliError(
      await runCli(['checkpoint', 'restore', checkpoint.id, '--db', target, '--checkpoint-dir', path.join(scratch, 'no-such-checkpoints')]),
      3,
      'NOT_FOUND',
    );
    expect(fs.readdirSync(scratch)).toEqual([]);
    expect(snapshot(checkpointDir)).toEqual(before);
    expect(await kvAll(node.port)).toEqual(expected);
  });

  it('a second example node on the same socket exits non-zero with SOCKET_IN_USE; the first keeps answering', async () => {
    const otherData = path.join(scratch, 'second-node');
    const child = spawn(process.execPath, [EXAMPLE_NODE, '--data-dir', otherData, '--port', '0', '--socket', sock, '--log-archive', 'off'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // A safety valve against a hung process, not a timing assertion.
    const valve = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (c, s) => resolve({ code: c, signal: s })),
    );
    clearTimeout(valve);
    expect(signal, `the second node did not exit by itself:\n${stdout}${stderr}`).toBeNull();
    expect(code).not.toBe(0);
    expect(stderr).not.toMatch(STACK);
    expect(lines(stderr)).toHaveLength(1);
    expect(stderr).toMatch(/SOCKET_IN_USE/);
    expect(stdout).not.toMatch(/"node ready"/);

    expect(fs.lstatSync(sock).isSocket()).toBe(true);
    const status = await runCli(['status', '--json', '--socket', sock]);
    expectCliOk(status);
    const s = JSON.parse(status.stdout) as AgentStatus;
    expect(s.pid).toBe(node.child.pid);
    expect(s.dbPath).toBe(path.join(dataDir, 'db'));
    const human = await runCli(['status', '--socket', sock]);
    expectCliOk(human);
    expect(human.stdout).toContain(`pid ${node.child.pid}`);
    expect(await kvAll(node.port)).toEqual(expected);
  });

  it('the CLI against no agent -> exit 5 AGENT_UNAVAILABLE', async () => {
    const nowhere = path.join(scratch, 'nothing-here.sock');
    expectCliError(await runCli(['status', '--socket', nowhere]), 5, 'AGENT_UNAVAILABLE');
    expectCliError(await runCli(['checkpoint', 'list', '--socket', nowhere]), 5, 'AGENT_UNAVAILABLE');
    expectCliError(await runCli(['checkpoint', 'create', '--socket', nowhere]), 5, 'AGENT_UNAVAILABLE');
    // With --json the one line is the error body.
    const asJson = await runCli(['status', '--json', '--socket', nowhere]);
    expect(asJson.code).toBe(5);
    expect(asJson.stdout).toBe('');
    expect(lines(asJson.stderr)).toHaveLength(1);
    const body = JSON.parse(asJson.stderr) as { error: { code: string; message: string } };
    expect(Object.keys(body)).toEqual(['error']);
    expect(body.error.code).toBe('AGENT_UNAVAILABLE');
    // The environment variable counts as --socket.
    expectCliError(await runCli(['status'], { env: { NODE_ADMIN_SOCKET: nowhere } }), 5, 'AGENT_UNAVAILABLE');
  });

  it('after kill -9 the CLI says unavailable (exit 5); a restarted node replaces the stale socket and has every key', async () => {
    await node.kill();
    expect(fs.lstatSync(sock).isSocket()).toBe(true);
    expect(expectCliError(await runCli(['status', '--socket', sock]), 5, 'AGENT_UNAVAILABLE')).toMatch(/stale socket|nothing listens/);

    node = await startExampleNode(dataDir);
    nodes.push(node);
    expect(await kvAll(node.port)).toEqual(expected);
    const list = await runCli(['checkpoint', 'list', '--json', '--socket', sock]);
    expectCliOk(list);
    expect((JSON.parse(list.stdout) as CheckpointRecord[]).map((r) => r.id)).toEqual([checkpoint.id]);
  });
});

describe('a checkpoint directory on a full filesystem (2 MiB tmpfs)', () => {
  const base = tempDir('full-fs');
  const full = path.join(base, 'cp-full');
  const bigDbPath = path.join(base, 'big-db');
  const smallDbPath = path.join(base, 'small-db');
  const bigExpected = new Map<string, string>();
  const agents: Agent[] = [];
  const dbs: ClassicLevel<string, Buffer>[] = [];
  let mounted = false;

  function digest(b: Buffer): string {
    return crypto.createHash('sha256').update(b).digest('hex');
  }

  async function readAll(db: ClassicLevel<string, Buffer>): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for await (const [k, v] of db.iterator()) out.set(k, digest(v));
    return out;
  }

  async function expectBigDbWhole(db: ClassicLevel<string, Buffer>): Promise<void> {
    const got = await readAll(db);
    expect(got.size).toBe(bigExpected.size);
    expect(got).toEqual(bigExpected);
  }

  function expectFullFsEmpty(): void {
    expect(fs.readdirSync(full)).toEqual([]);
    // Every byte copied before ENOSPC was given back.
    const st = fs.statfsSync(full);
    expect(st.bfree).toBe(st.blocks);
  }

  function agentOn(dbPath: string, name: string, minFreeBytes = 0): { agent: Agent; socket: string } {
    const socket = path.join(base, `run-${name}`, 'admin.sock');
    const agent = createAgent({
      dbPath,
      checkpointDir: full,
      socketPath: socket,
      logger: pino({ level: 'silent' }),
      retention: { keepLast: 10, minFreeBytes },
    });
    agents.push(agent);
    return { agent, socket };
  }

  beforeAll(async () => {
    // About 10 MiB of incompressible values, flushed to tables in part: five times what the tmpfs holds.
    const big = new ClassicLevel<string, Buffer>(bigDbPath, { valueEncoding: 'buffer', writeBufferSize: 2 * 1024 * 1024 });
    await big.open();
    for (let i = 0; i < 40; i++) {
      const batch = big.batch();
      for (let j = 0; j < 16; j++) {
        const key = `blob/${i}/${j}`;
        const value = crypto.randomBytes(16 * 1024);
        batch.put(key, value);
        bigExpected.set(key, digest(value));
      }
      await batch.write();
    }
    await big.close();
    const small = new ClassicLevel<string, Buffer>(smallDbPath, { valueEncoding: 'buffer' });
    await small.open();
    for (let i = 0; i < 20; i++) await small.put(`k${i}`, Buffer.from(`v${i}`));
    await small.close();

    fs.mkdirSync(full);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', full]);
    mounted = true;
    const st = fs.statfsSync(full);
    expect(st.blocks * st.bsize).toBe(2 * 1024 * 1024);
    // The database is on the normal disk: links to the tmpfs fail with EXDEV and files are copied.
    expect(fs.statSync(full).dev).not.toBe(fs.statSync(bigDbPath).dev);
  });

  afterAll(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    for (const d of dbs) await d.close().catch(() => {});
    try {
      if (mounted) execFileSync('umount', [full]);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('offline create -> exit 6 INSUFFICIENT_SPACE, no partial checkpoint, no staging left, the database whole', async () => {
    const r = await runCli(['checkpoint', 'create', '--offline', '--db', bigDbPath, '--checkpoint-dir', full]);
    expect(expectCliError(r, 6, 'INSUFFICIENT_SPACE')).toMatch(/no space left/);
    const list = await runCli(['checkpoint', 'list', '--json', '--checkpoint-dir', full]);
    expectCliOk(list);
    expect(JSON.parse(list.stdout)).toEqual([]);
    expectFullFsEmpty();

    const db = new ClassicLevel<string, Buffer>(bigDbPath, { valueEncoding: 'buffer' });
    await db.open();
    try {
      await expectBigDbWhole(db);
    } finally {
      await db.close();
    }
  });

  it('an agent create (CLI over the socket) -> exit 6 INSUFFICIENT_SPACE, nothing listed or left, the open database whole', async () => {
    const db = new ClassicLevel<string, Buffer>(bigDbPath, { valueEncoding: 'buffer' });
    dbs.push(db);
    await db.open();
    const { agent, socket } = agentOn(bigDbPath, 'agent');
    await agent.start();

    expectCliError(await runCli(['checkpoint', 'create', '--label', 'too big', '--socket', socket]), 6, 'INSUFFICIENT_SPACE');
    const list = await runCli(['checkpoint', 'list', '--json', '--socket', socket]);
    expectCliOk(list);
    expect(JSON.parse(list.stdout)).toEqual([]);
    expectFullFsEmpty();

    // The agent is fine and the node's database too, open and closed.
    const status = await runCli(['status', '--json', '--socket', socket]);
    expectCliOk(status);
    expect((JSON.parse(status.stdout) as AgentStatus).inProgress).toBeNull();
    await expectBigDbWhole(db);
    await agent.stop();
    await db.close();
    const again = new ClassicLevel<string, Buffer>(bigDbPath, { valueEncoding: 'buffer' });
    await again.open();
    try {
      await expectBigDbWhole(again);
    } finally {
      await again.close();
    }
  });

  it('the min-free guard refuses a create that would fit, before doing anything (exit 6); without it the create succeeds', async () => {
    const db = new ClassicLevel<string, Buffer>(smallDbPath, { valueEncoding: 'buffer' });
    dbs.push(db);
    await db.open();

    const guarded = agentOn(smallDbPath, 'guarded', 64 * 1024 * 1024);
    await guarded.agent.start();
    const refused = await runCli(['checkpoint', 'create', '--socket', guarded.socket]);
    expect(expectCliError(refused, 6, 'INSUFFICIENT_SPACE')).toMatch(/below the minimum/);
    // Not even a staging directory was made.
    expectFullFsEmpty();
    await guarded.agent.stop();

    // The same create without the guard: it fits, so the refusal above was the guard's.
    const plain = agentOn(smallDbPath, 'plain');
    await plain.agent.start();
    const ok = await runCli(['checkpoint', 'create', '--json', '--socket', plain.socket]);
    expectCliOk(ok);
    const record = JSON.parse(ok.stdout) as CheckpointRecord;
    expect(fs.readdirSync(full)).toEqual([record.id]);
    await plain.agent.stop();
  });
});
