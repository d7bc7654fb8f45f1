/**
 * Backup pacing through the agent, on a real classic-level database (~48 MiB of incompressible tables)
 * and a directory repository: a fixed rate holds over a 10 s window (reads from the metric counter,
 * uploads from the repository directory's growth); auto backs off while the host's event loop is made
 * busy and still finishes (never starves), where `max` never moves; the log archive keeps shipping
 * each write while a paced backup runs.
 *
 * Each test has an agent, a checkpoint directory, a hash cache and a repository of its own: a backup
 * of tables a cache or repository already knows would read or store nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent, type AgentStatus } from '../dist/agent/index.js';
import type { AgentOptions } from '../dist/agent/agent-types.js';
import { spawnSync } from 'node:child_process';
import { EXAMPLE_NODE, runCli, startExampleNode, tempDir, until } from './support/processes.js';
import { parseExposition, sampleValue } from './support/exposition.js';
import { TEST_KDF, TEST_PASSWORD_FILE } from './support/test-password.js';

const silent = pino({ level: 'silent' });
const MB = 1e6;
/** The fixed pace of the tests that need a long backup. */
const RATE = 4 * MB;
/** The fixed rate's window (the issue's 10 s; CI's smaller sample on the other Node versions: 5). */
const WINDOW_S = Number(process.env.NODE_ADMIN_PACE_WINDOW_S ?? 10);
/** The database: a quarter more than the window reads at RATE, so that the backup outlasts it. */
const DB_MIB = Math.ceil((WINDOW_S * RATE * 1.25) / (1024 * 1024));

let dir: string;
let dbPath: string;
let db: ClassicLevel<string, Buffer>;
const agents: Agent[] = [];

/** An agent of its own on the shared database: its own checkpoints, cache and repository. */
async function startAgent(name: string, backup: Partial<NonNullable<AgentOptions['backup']>>): Promise<{ agent: Agent; repoDir: string }> {
  const root = path.join(dir, name);
  const repoDir = path.join(root, 'repo');
  fs.mkdirSync(root);
  const agent = createAgent({
    dbPath,
    checkpointDir: path.join(root, 'checkpoints'),
    backup: { repository: pathToFileURL(repoDir).href, password: { file: TEST_PASSWORD_FILE }, kdfCost: TEST_KDF, cacheDir: path.join(root, 'cache'), ...backup },
    logger: silent,
  });
  agents.push(agent);
  await agent.start();
  return { agent, repoDir };
}

async function metric(agent: Agent, name: string): Promise<number | undefined> {
  return sampleValue(parseExposition(await agent.metrics()), name);
}

function dirBytes(d: string): number {
  let total = 0;
  for (const e of fs.readdirSync(d, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    try {
      total += fs.statSync(path.join(e.parentPath, e.name)).size;
    } catch {
      // a temp file renamed away between the listing and the stat
    }
  }
  return total;
}

beforeAll(async () => {
  dir = tempDir('pace');
  dbPath = path.join(dir, 'db');
  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  for (let b = 0; b < DB_MIB; b++) {
    await db.batch(Array.from({ length: 1024 }, (_, i) => ({ type: 'put' as const, key: `base/${String(b).padStart(3, '0')}/${i}`, value: randomBytes(1024) })));
  }
  await db.compactRange('base/', 'base/~');
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.stop();
  await db?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('backup pacing', () => {
  it(`a fixed rate holds within 10 % over a ${WINDOW_S} s window, for the reads and the uploads`, async () => {
    const { agent, repoDir } = await startAgent('fixed', { pace: { bytesPerSecond: RATE } });
    const backup = agent.createBackup();
    backup.catch(() => {}); // awaited below; a failed check must not leave it unhandled
    const readBytes = async () => (await metric(agent, 'node_admin_backup_read_bytes_total')) ?? 0;
    // The window opens once reads are under way (the lock, the index and the listing are behind).
    await until('the first reads', async () => (await readBytes()) >= 2 * MB);
    expect(await metric(agent, 'node_admin_backup_pace_bytes_per_second')).toBe(RATE);
    const t0 = performance.now();
    const read0 = await readBytes();
    const stored0 = dirBytes(repoDir);
    // The window is the measurement itself: its end is a moment, not a condition to wait for.
    await until('the end of the window', () => performance.now() - t0 >= WINDOW_S * 1000);
    const seconds = (performance.now() - t0) / 1000;
    const readRate = ((await readBytes()) - read0) / seconds;
    const storedRate = (dirBytes(repoDir) - stored0) / seconds;
    const running = (await agent.status()).backup?.inProgress ?? null;
    console.log(`fixed pace ${RATE / MB} MB/s over ${seconds.toFixed(2)} s: read ${(readRate / MB).toFixed(2)} MB/s, repository grew ${(storedRate / MB).toFixed(2)} MB/s; waited ${running?.pacedSeconds?.toFixed(1)} s so far`);
    // Still running at the window's end: the window measured a paced backup, not its tail. Without this
    // the rate checks alone are weak: with pace max the whole database (~50 MB) fits in the window and
    // reads 4.4 MB/s averaged over 10 s (measured), barely outside the 10 %.
    expect(running).not.toBeNull();
    expect(running!.paceBytesPerSecond).toBe(RATE);
    expect((await agent.status()).backup?.pace).toEqual({ bytesPerSecond: RATE });
    expect(readRate / RATE).toBeGreaterThan(0.9);
    expect(readRate / RATE).toBeLessThan(1.1);
    expect(storedRate / RATE).toBeGreaterThan(0.9);
    expect(storedRate / RATE).toBeLessThan(1.1);
    const record = await backup;
    expect(record.pacedSeconds!).toBeGreaterThan(0);
    expect(await metric(agent, 'node_admin_backup_paced_seconds_total')).toBeCloseTo(record.pacedSeconds!, 6);
    // No backup running: no pace.
    expect(await metric(agent, 'node_admin_backup_pace_bytes_per_second')).toBeUndefined();
  }, 60_000);

  /**
   * The host's event loop blocked 30 ms of every 50 once the backup reads: auto must lower its pace
   * (the gauge below +Inf) and still finish. With `max` the same busy loop leaves the gauge at +Inf
   * and nothing waits: the check can fail. Uploads are capped at 10 MB/s (bandwidthLimit) so that the
   * backup lasts seconds whatever the disk; the busy loop starts once 5 MB were read (half a second
   * at that cap: auto has had its first, idle, tick, which sets its baseline).
   */
  it.each([
    { pace: 'auto' as const, backsOff: true },
    { pace: 'max' as const, backsOff: false },
  ])('a busy event loop: pace $pace, backs off: $backsOff, and the backup finishes', async ({ pace, backsOff }) => {
    const { agent } = await startAgent(`busy-${pace}`, { pace, bandwidthLimit: 10 * MB });
    const paces: number[] = [];
    let busy: NodeJS.Timeout | null = null;
    let sampling = true;
    const backup = agent.createBackup();
    backup.catch(() => {}); // awaited below
    const sampler = (async () => {
      while (sampling) {
        const p = await metric(agent, 'node_admin_backup_pace_bytes_per_second');
        if (p !== undefined) paces.push(p);
        if (busy === null && ((await agent.status()).backup?.inProgress?.bytesRead ?? 0) >= 5 * MB) {
          busy = setInterval(() => {
            const end = performance.now() + 30;
            while (performance.now() < end) {
              // the host's work, blocking its event loop
            }
          }, 20);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      const record = await backup;
      expect(record.bytesRead).toBeGreaterThanOrEqual(DB_MIB * 1024 * 1024);
      console.log(`busy loop, pace ${pace}: ${record.durationMs} ms, waited ${record.pacedSeconds!.toFixed(2)} s; pace seen ${[...new Set(paces.map((p) => (Number.isFinite(p) ? `${(p / MB).toFixed(1)} MB/s` : '+Inf')))].join(', ')}`);
      expect(busy).not.toBeNull();
      expect(paces.length).toBeGreaterThan(0);
      expect(paces.some((p) => Number.isFinite(p))).toBe(backsOff);
      expect(record.pacedSeconds! > 0).toBe(backsOff);
      // Never below the floor: a busy node's backup still moves.
      for (const p of paces) expect(p).toBeGreaterThanOrEqual(8 * 1024 * 1024);
    } finally {
      sampling = false;
      if (busy) clearInterval(busy);
      await sampler;
    }
  }, 90_000);

  it("the log archive keeps shipping each write while a paced backup runs (its own base is never paced)", async () => {
    const { agent } = await startAgent('archive', { pace: { bytesPerSecond: RATE }, logArchive: { intervalMs: 200 } });
    const archive = async () => (await agent.status()).logArchive!;
    // The archive's base backup (of the whole database) at full speed: a timeline within seconds.
    await until('the timeline', async () => ((await archive()).timeline !== null ? true : null));
    // The base backup was not held back by the pace (a paced base would delay the timeline by its
    // whole duration at 4 MB/s).
    expect(await metric(agent, 'node_admin_backup_paced_seconds_total')).toBe(0);
    // The base's tables are in the hash cache: without it the next backup reads the whole database
    // again (at the pace), where it would otherwise read nothing.
    fs.rmSync(path.join(dir, 'archive', 'cache'), { recursive: true, force: true });
    const backup = agent.createBackup();
    backup.catch(() => {}); // cancelled at the end
    await until('the paced backup reading', async () => (((await agent.status()).backup?.inProgress?.bytesRead ?? 0) > 0 ? true : null));
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = (await archive()).lastShipped?.sequence ?? 0;
      const at = performance.now();
      await db.put(`during-${i}`, randomBytes(100));
      await until(`write ${i} archived`, async () => (((await archive()).lastShipped?.sequence ?? 0) > before ? true : null));
      delays.push(performance.now() - at);
      // Shipped while the backup still runs at its pace: the archive did not wait for it.
      expect((await agent.status()).backup?.inProgress).not.toBeNull();
    }
    console.log(`log archive during a ${RATE / MB} MB/s backup: write to archived ${delays.map((d) => d.toFixed(0)).join(', ')} ms (interval 200 ms)`);
    await agent.cancelBackup();
    await backup.catch(() => {});
  }, 90_000);
});

describe('the pace setting', () => {
  it('backup.pace is checked when the agent is made: a clear INVALID_ARGUMENT', () => {
    for (const pace of ['fast', 0, { bytesPerSecond: -1 }, { bytesPerSecond: Infinity }, { rate: 5 }]) {
      expect(() =>
        createAgent({ dbPath: path.join(dir, 'db'), checkpointDir: path.join(dir, 'unused'), backup: { repository: 'file:///tmp/x', pace: pace as never }, logger: silent }),
      ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/^backup\.pace must be 'auto', 'max' or \{ bytesPerSecond/) }));
    }
  });

  it('the example node refuses a bad --backup-pace with one line, and shows the one given in status', async () => {
    for (const bad of ['fast', '0', '0.0', '10 parsecs']) {
      const d = tempDir('pace-bad');
      const r = spawnSync(process.execPath, [EXAMPLE_NODE, '--data-dir', d, '--port', '0', '--backup-pace', bad], { encoding: 'utf8', timeout: 30_000 });
      fs.rmSync(d, { recursive: true, force: true });
      expect(r.status, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(/^example-node: --backup-pace must be auto, max or a rate .* \(INVALID_ARGUMENT\)\n$/);
    }
    const d = tempDir('pace-node');
    const node = await startExampleNode(d, ['--backup-pace', '50']);
    try {
      const socket = ['--socket', node.socketPath];
      const status = JSON.parse((await runCli(['status', '--json', ...socket])).stdout) as AgentStatus;
      expect(status.backup?.pace).toEqual({ bytesPerSecond: 50 * MB });
      expect((await runCli(['status', ...socket])).stdout).toMatch(/backup pace:\s+47\.7 MiB\/s/);
    } finally {
      await node.stop();
      fs.rmSync(d, { recursive: true, force: true });
    }
  }, 60_000);
});
