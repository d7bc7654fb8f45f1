/**
 * What an operator sees of the log archiver, through real parts: an embedded agent archiving a real
 * LevelDB to a file:// repository, asked over its real admin socket (status, metrics, backup timeline)
 * and through the real CLI. Status fields move as writes come and are shipped; a storage that refuses
 * the archiver's puts shows as `retrying` with the writes waiting and the failure counted, and the
 * archive catches up when it comes back; a rollback in place is a timeline break with its reason, in
 * status and in the break counter. Neither status nor a scrape makes a storage request (counted from
 * the storage layer's own debug line per call). `backup timeline` through the agent equals the offline
 * command's answer, in JSON and in text.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { cloneDbSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { SocketClient, type AgentStatus, type LogArchiveStatus, type LogArchiveTimelines } from '../dist/shared/index.js';
import { runCli, tempDir } from './support/processes.js';
import { storageCallLogger } from './support/storage-calls.js';
import { seriesValue } from './support/exposition.js';

const INTERVAL_MS = 200;

let dir: string;
let dbPath: string;
let repoDir: string;
let socketPath: string;
let db: ClassicLevel<string, string>;
let agent: Agent;
let client: SocketClient;
/** The agent's logger, and every storage call the agent made (LoggingStorage's debug line), in order. */
const { logger, calls } = storageCallLogger();

async function until<T>(what: string, get: () => Promise<T | null | false> | T | null | false, timeoutMs = 40_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the archiver: ${JSON.stringify((await client.status()).logArchive)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function archive(): Promise<LogArchiveStatus> {
  const s: AgentStatus = await client.status();
  expect(s.logArchive).toBeTruthy();
  return s.logArchive!;
}

/** The value of one series in a scrape (exact labels as written), or null when absent. */

beforeAll(async () => {
  dir = tempDir('archive-status');
  dbPath = path.join(dir, 'db');
  repoDir = path.join(dir, 'repo');
  socketPath = path.join(dir, 'admin.sock');
  db = new ClassicLevel(dbPath);
  await db.open();
  for (let i = 0; i < 100; i++) await db.put(`before-${i}`, 'x'.repeat(100));
  agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    socketPath,
    backup: { repository: pathToFileURL(repoDir).href, logArchive: { intervalMs: INTERVAL_MS } },
    logger,
  });
  await agent.start();
  client = new SocketClient({ socketPath });
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  await db?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the log archiver in status and metrics', () => {
  let timelineId: string;
  let baseSequence: number;

  it('follows a timeline whose base holds the writes before the start; a write is shipped and status says so', async () => {
    const following = await until('a timeline', async () => {
      const a = await archive();
      return a.state === 'following' && a.timeline !== null && a.lastError === null ? a : null;
    });
    timelineId = following.timeline!.id;
    baseSequence = following.timeline!.sequence;
    expect(baseSequence).toBe(100);
    expect(following.intervalMs).toBe(INTERVAL_MS);
    expect(following.breaks).toBe(0);
    expect(following.lastBreak).toBeNull();

    const before = following.shippedSegments;
    for (let i = 0; i < 30; i++) await db.put(`a-${i}`, 'y'.repeat(200));
    const shipped = await until('the 30 writes shipped', async () => {
      const a = await archive();
      return a.lastShipped?.sequence === baseSequence + 30 ? a : null;
    });
    expect(shipped.lastShipped!.timeline).toBe(timelineId);
    expect(shipped.shippedSegments).toBeGreaterThan(before);
    expect(shipped.shippedBytes).toBeGreaterThan(30 * 200);
    expect(Date.parse(shipped.lastShipped!.at)).toBeLessThanOrEqual(Date.now());
    // Up to date: nothing waits, nothing left unread, the lag is about one poll.
    const settled = await until('nothing waiting', async () => {
      const a = await archive();
      return a.lag.batches === 0 && a.lag.unreadBytes === 0 ? a : null;
    });
    expect(settled.lag.bytes).toBe(0);
    expect(settled.lag.seconds).toBeLessThan(30);
  }, 60_000);

  it('the metrics say the same as status; neither status nor a scrape asks storage', async () => {
    const start = calls.length;
    const a = await archive();
    const scrape = await client.metrics();
    const again = await client.metrics();
    await archive();
    expect(calls.slice(start)).toEqual([]);
    expect(again).toContain('node_admin_log_archive_lag_seconds');

    expect(seriesValue(scrape, 'node_admin_log_archive_timeline_breaks_total{reason="start"}')).toBe(1);
    expect(scrape).not.toMatch(/^node_admin_log_archive_timeline_breaks_total\{reason="(?!start)/m);
    expect(seriesValue(scrape, 'node_admin_log_archive_last_shipped_timestamp_seconds')).toBeCloseTo(Date.parse(a.lastShipped!.at) / 1000, 3);
    expect(seriesValue(scrape, 'node_admin_log_archive_shipped_segments_total')).toBe(a.shippedSegments);
    expect(seriesValue(scrape, 'node_admin_log_archive_shipped_bytes_total')).toBe(a.shippedBytes);
    const lag = seriesValue(scrape, 'node_admin_log_archive_lag_seconds');
    expect(lag).not.toBeNull();
    expect(lag!).toBeGreaterThanOrEqual(0);
    expect(lag!).toBeLessThan(30);
    expect(seriesValue(scrape, 'node_admin_log_archive_lag_bytes')).toBe(0);
    expect(scrape).not.toContain('node_admin_log_archive_ship_failures_total{');
  }, 30_000);

  it('storage refusing the segments: retrying, the writes wait and the lag grows, the failure is counted; then it catches up', async () => {
    const segDir = path.join(repoDir, 'wal', timelineId, 'seg');
    const aside = `${segDir}.aside`;
    // A file where the segments' directory was: every segment put fails, base records aside.
    fs.renameSync(segDir, aside);
    fs.writeFileSync(segDir, 'not a directory');
    let restored = false;
    try {
      for (let i = 0; i < 10; i++) await db.put(`b-${i}`, 'z'.repeat(100));
      const failing = await until('the archiver retrying with the writes waiting', async () => {
        const a = await archive();
        return a.state === 'retrying' && a.lastError !== null && a.lag.batches === 10 ? a : null;
      });
      expect(failing.lag.bytes).toBeGreaterThan(10 * 100);
      expect(failing.lastShipped!.sequence).toBe(baseSequence + 30);
      expect(failing.lastError!.error).toMatch(/^[A-Z_]+: /);
      const code = failing.lastError!.error.split(':')[0]!;
      // The lag grows while the writes wait (well past a poll interval).
      await until('the lag past one second', async () => ((await archive()).lag.seconds > 1 ? true : null));
      const scrape = await client.metrics();
      expect(seriesValue(scrape, `node_admin_log_archive_ship_failures_total{code="${code}"}`)).toBeGreaterThanOrEqual(1);
      expect(seriesValue(scrape, 'node_admin_log_archive_lag_seconds')).toBeGreaterThan(1);
      expect(seriesValue(scrape, 'node_admin_log_archive_lag_bytes')).toBeGreaterThan(10 * 100);
      const human = await runCli(['status', '--socket', socketPath]);
      expect(human.code, human.stderr).toBe(0);
      expect(human.stdout).toMatch(/log archive:\s+retrying, timeline /);
      expect(human.stdout).toMatch(/archive lag:\s+.*10 batches/);
      expect(human.stdout).toMatch(new RegExp(`archive error:\\s+.*${code}: `));

      fs.rmSync(segDir);
      fs.renameSync(aside, segDir);
      restored = true;
      const caught = await until('the archive caught up', async () => {
        const a = await archive();
        return a.state === 'following' && a.lastShipped?.sequence === baseSequence + 40 && a.lag.batches === 0 ? a : null;
      });
      expect(caught.timeline!.id).toBe(timelineId);
      expect(caught.breaks).toBe(0);
    } finally {
      if (!restored) {
        fs.rmSync(segDir, { force: true });
        fs.renameSync(aside, segDir);
      }
    }
  }, 60_000);

  it('a rollback in place: a timeline break with its reason in status and in the break counter, then a new timeline', async () => {
    const checkpoint = await agent.createCheckpoint({ label: 'before-rollback' });
    // Writes after the checkpoint, archived: the rollback then goes back in the history.
    const shippedTo = (await archive()).lastShipped!.sequence;
    for (let i = 0; i < 20; i++) await db.put(`change-${i}`, 'c');
    await until('the change shipped', async () => ((await archive()).lastShipped?.sequence === shippedTo + 20 ? true : null));
    await db.close();
    fs.renameSync(dbPath, `${dbPath}.replaced`);
    cloneDbSync(checkpoint.path, dbPath);
    db = new ClassicLevel(dbPath);
    await db.open();
    for (let i = 0; i < 5; i++) await db.put(`rolled-${i}`, 'r');
    const started = await until('a new timeline', async () => {
      const a = await archive();
      return a.state === 'following' && a.timeline !== null && a.timeline.id !== timelineId ? a : null;
    });
    // Its base may hold the writes after the rollback: one more is shipped in the new timeline.
    await db.put('after-rollback', 'n');
    const next = await until('a write shipped in the new timeline', async () => {
      const a = await archive();
      return a.lastShipped?.timeline === started.timeline!.id ? a : null;
    });
    expect(next.timeline!.id).toBe(started.timeline!.id);
    expect(next.breaks).toBe(1);
    expect(next.lastBreak).not.toBeNull();
    const reason = next.lastBreak!.reason;
    expect(['replaced', 'fork', 'gap']).toContain(reason);
    const scrape = await client.metrics();
    expect(seriesValue(scrape, `node_admin_log_archive_timeline_breaks_total{reason="${reason}"}`)).toBe(1);
    expect(seriesValue(scrape, 'node_admin_log_archive_timeline_breaks_total{reason="start"}')).toBe(1);
    const human = await runCli(['status', '--socket', socketPath]);
    expect(human.stdout).toMatch(new RegExp(`timeline breaks:\\s+1, last .*: ${reason} \\(`));
  }, 120_000);
});

describe('backup timeline through the agent', () => {
  it('answers what the offline command prints (JSON and text), and makes only listings', async () => {
    // The last test's new timeline stores its base record after its first segment: measured once that
    // record is listed, its put is not counted as this request's.
    await until("the new timeline's base listed", async () => ((await client.backupTimeline()).timelines.at(-1)?.bases.length ?? 0) > 0);
    const start = calls.length;
    const viaAgent: LogArchiveTimelines = await client.backupTimeline();
    // Two listings (wal/, snapshots/), never an object read.
    expect(calls.slice(start).map((c) => c.op), JSON.stringify(calls.slice(start))).toEqual(['list', 'list']);
    expect(viaAgent.timelines.length).toBe(2);
    const offline = await runCli(['backup', 'timeline', '--json', '--repo', repoDir]);
    expect(offline.code, offline.stderr).toBe(0);
    expect(JSON.parse(offline.stdout)).toEqual(viaAgent);
    const cliAgent = await runCli(['backup', 'timeline', '--json', '--socket', socketPath]);
    expect(cliAgent.code, cliAgent.stderr).toBe(0);
    expect(JSON.parse(cliAgent.stdout)).toEqual(viaAgent);

    const text = await runCli(['backup', 'timeline', '--socket', socketPath]);
    const textOffline = await runCli(['backup', 'timeline', '--repo', repoDir]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe(textOffline.stdout);
    expect(text.stdout).toMatch(/^timeline \S+: \S+ to \S+ \(sequences \d+\.\.\d+\), \d+ segments$/m);
    // The timelines may have moved on between the two runs only if the node wrote: it did not.
    expect(text.stdout.split('\n').filter((l) => l.startsWith('timeline ')).length).toBe(2);
  }, 60_000);

  it('--repo and --socket together are refused; an agent without backups answers BACKUP_NOT_CONFIGURED', async () => {
    const both = await runCli(['backup', 'timeline', '--repo', repoDir, '--socket', socketPath]);
    expect(both.code).not.toBe(0);
    expect(both.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    const plainDir = tempDir('no-backup');
    const plainDb = new ClassicLevel(path.join(plainDir, 'db'));
    await plainDb.open();
    const plain = createAgent({ dbPath: path.join(plainDir, 'db'), checkpointDir: path.join(plainDir, 'cp'), socketPath: path.join(plainDir, 's.sock'), logger: pino({ enabled: false }) });
    await plain.start();
    try {
      const r = await runCli(['backup', 'timeline', '--socket', path.join(plainDir, 's.sock')]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/\(BACKUP_NOT_CONFIGURED\)\n$/);
      const s = await new SocketClient({ socketPath: path.join(plainDir, 's.sock') }).status();
      expect(s.logArchive).toBeNull();
      const human = await runCli(['status', '--socket', path.join(plainDir, 's.sock')]);
      expect(human.stdout).toMatch(/log archive:\s+off/);
      expect(await plain.metrics()).not.toContain('node_admin_log_archive_');
    } finally {
      await plain.stop();
      await plainDb.close();
      fs.rmSync(plainDir, { recursive: true, force: true });
    }
  }, 60_000);
});
