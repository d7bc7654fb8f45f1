/**
 * Restore to a moment from S3 (the Swift server the tests start), differentially: writers put, overwrite,
 * delete and write multi-key batches into a classic-level database with a small write buffer while an
 * embedded agent archives its log to an `s3://` repository, with a second base taken during the run.
 * Then restores to random moments across the window and at its edges, each checked against the model
 * of acknowledged writes (test/log-archive-differential.test.ts does the same on file://, at length),
 * and one through the CLI (`--repo s3://…`). Negative control: the check refuses a restore compared with
 * another moment's bounds.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import type { Windows } from '../dist/agent/log-archive/timeline-windows.js';
import { runCli, tempDir } from './support/processes.js';
import { emptyAndClose, s3ProcessEnv, s3Server } from './support/s3-server.js';
import { Writers, levelApply, readState, until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

const WRITERS = 4;
const RUN_MS = 8000;
const RESTORES = 12;
const silent = pino({ level: 'silent' });

let dir: string;
let dbPath: string;
let url: string;
let db: ClassicLevel<string, Buffer>;
let agent: Agent | null = null;
let storage: Storage;
let writers: Writers;
let windows: Windows;
let s3Env: NodeJS.ProcessEnv;

beforeAll(async () => {
  const server = s3Server();
  dir = tempDir('pitr-s3');
  dbPath = path.join(dir, 'db');
  url = `s3://${server.bucket}/pitr-${path.basename(dir)}`;
  // The agent and the CLI find credentials where the SDK looks for them.
  s3Env = s3ProcessEnv(server);
  Object.assign(process.env, s3Env);
  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024, maxFileSize: 256 * 1024 });
  await db.open();
  storage = await openStorage(url, { s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true } });
  writers = new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: 400, batches: true, pauseMs: 5 });
}, 60_000);

afterAll(async () => {
  await writers?.stop();
  await agent?.stop();
  await db?.close().catch(() => {});
  if (storage) await emptyAndClose(storage);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archive on S3: restore to a moment', () => {
  it('archives a database under writes to S3, with two bases in one timeline', async () => {
    const server = s3Server();
    writers.start();
    agent = createAgent({
      dbPath,
      checkpointDir: path.join(dir, 'checkpoints'),
      retention: { keepLast: 20 },
      backup: { repository: url, s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true }, logArchive: { intervalMs: 1000 } },
      logger: silent,
    });
    await agent.start();
    await until('the first base', async () => (await readWindows(storage)).timelines.some((t) => t.from !== null));
    const started = Date.now();
    await until('half the run', () => Date.now() >= started + RUN_MS / 2, RUN_MS);
    const checkpoint = await agent.createCheckpoint({ label: 'second-base' });
    await agent.createBackup({ checkpointId: checkpoint.id });
    await until('the whole run', () => Date.now() >= started + RUN_MS, RUN_MS);
    await writers.stop();
    await agent.stop();
    agent = null;
    windows = await readWindows(storage);
    expect(windows.timelines.length).toBe(1);
    const t = windows.timelines[0]!;
    expect(t.bases.filter((b) => b.usable).length, JSON.stringify(t.bases)).toBe(2);
    expect(t.brokenAfter).toBeNull();
    expect(t.segments.length).toBeGreaterThan(RUN_MS / 2000);
    await db.close();
    expect(t.lastSequence).toBe((await dbSequence(dbPath)).sequence);
  }, 180_000);

  it(`restores ${RESTORES} random moments and the window's edges exactly`, async () => {
    const t = windows.timelines[0]!;
    const repo = await Repository.open(storage, TEST_REPO);
    const moments = Array.from({ length: RESTORES }, () => t.from! + Math.floor(Math.random() * (t.to! - t.from!)));
    moments.push(...t.bases.map((b) => b.from), t.to!);
    moments.sort((a, b) => a - b);
    const used = new Set<string>();
    let batches = 0;
    for (const [i, at] of moments.entries()) {
      const to = path.join(dir, `restored-${i}`);
      const r = await restoreToMoment({ repo, at, to });
      used.add(r.backup);
      batches += r.batches;
      expect(r.reached.time).toBeLessThanOrEqual(at);
      const problem = writers.mismatch(await readState(to, WRITERS), writers.bounds(at), false);
      expect(problem, `restore to ${new Date(at).toISOString()} (${r.batches} batches on backup ${r.backup})`).toBeNull();
      fs.rmSync(to, { recursive: true });
    }
    expect(used.size).toBe(2);
    expect(batches).toBeGreaterThan(moments.length);

    // Negative control: the restore at the window's end does not pass as the first base's moment.
    const control = path.join(dir, 'control');
    await restoreToMoment({ repo, at: t.to!, to: control });
    expect(writers.mismatch(await readState(control, WRITERS), writers.bounds(t.from!), true)).not.toBeNull();
    fs.rmSync(control, { recursive: true });
  }, 300_000);

  it('restores through the CLI from s3://', async () => {
    const t = windows.timelines[0]!;
    const to = path.join(dir, 'cli');
    const r = await runCli(['backup', 'restore', '--at', 'latest', '--repo', url, '--s3-path-style', '--to', to, '--json'], { env: s3Env });
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { reached: { sequence: number; time: string }; timeline: string };
    expect(result.timeline).toBe(t.id);
    expect(result.reached.sequence).toBe(t.lastSequence);
    expect(writers.mismatch(await readState(to, WRITERS), writers.bounds(t.to!), true)).toBeNull();
  }, 120_000);
});
