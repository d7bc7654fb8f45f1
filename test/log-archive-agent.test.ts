/**
 * The archiver inside an agent: it starts a timeline with a base of its own, ships a write within its
 * interval, and an idle node costs no storage request at all (not even a LIST) — counted from the
 * storage layer's own debug line per call, while the archiver is seen to be alive before and after.
 * A rollback in place under the running agent ends the timeline and starts a new one; restores on
 * either side of it give either history.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { cloneDbSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { tempDir } from './support/processes.js';
import { storageCallLogger } from './support/storage-calls.js';
import { TEST_REPO } from './support/test-password.js';

const INTERVAL_MS = 200;

let dir: string;
let dbPath: string;
let db: ClassicLevel<string, string>;
let agent: Agent;
let storage: Storage;
/** The agent's logger, and every storage call the agent made (LoggingStorage's debug line), in order. */
const { logger, calls } = storageCallLogger();

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const segmentsPut = () => calls.filter((c) => c.op === 'put' && c.name.includes('/seg/')).length;

beforeAll(async () => {
  dir = tempDir('archiver');
  dbPath = path.join(dir, 'db');
  const repoUrl = pathToFileURL(path.join(dir, 'repo')).href;
  db = new ClassicLevel(dbPath);
  await db.open();
  for (let i = 0; i < 100; i++) await db.put(`before-${i}`, 'x'.repeat(100));
  agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    backup: { repository: repoUrl, logArchive: { intervalMs: INTERVAL_MS } },
    logger,
  });
  await agent.start();
  storage = await openStorage(repoUrl, {});
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  await db?.close();
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archiver in the agent', () => {
  it('starts a timeline with a base backup of its own, and ships a write within its interval', async () => {
    await until('the base', () => calls.some((c) => c.op === 'put' && c.name.includes('/base/')));
    const windows = await readWindows(storage);
    expect(windows.timelines.length).toBe(1);
    const base = windows.timelines[0]!.bases[0]!;
    // The 100 writes before the start are in the base: its sequence is exactly theirs.
    expect(base.sequence).toBe(100);
    const before = segmentsPut();
    await db.put('after', 'y');
    await until('a segment', () => segmentsPut() > before);
    const after = await readWindows(storage);
    expect(after.timelines[0]!.lastSequence).toBe(101);
  }, 60_000);

  it('an idle node makes no storage request at all, not even a LIST', async () => {
    // Whatever was in flight lands first: a segment for the last write, then quiet.
    const start = calls.length;
    const idleFor = 10 * INTERVAL_MS;
    await new Promise((r) => setTimeout(r, idleFor));
    expect(calls.slice(start)).toEqual([]);
    // ...and the archiver was alive all along: the next write is shipped.
    const before = segmentsPut();
    await db.put('wake', 'z');
    await until('a segment after the idle time', () => segmentsPut() > before);
    expect(calls.slice(start).map((c) => c.op)).toEqual(['put']);
  }, 60_000);

  it('a rollback in place under the running agent starts a new timeline; each history stays restorable', async () => {
    const first = (await readWindows(storage)).timelines[0]!;
    const checkpoint = await agent.createCheckpoint({ label: 'before-change' });
    const segments = segmentsPut();
    for (let i = 0; i < 20; i++) await db.put(`change-${i}`, 'c');
    await until('the change shipped', () => segmentsPut() > segments);
    const changed = await readWindows(storage);
    const beforeRollback = changed.timelines[0]!.to!;
    expect(changed.timelines[0]!.lastSequence).toBe(first.lastSequence! + 20);

    // Roll back: the node closes its database, swaps in the checkpoint, opens it, writes on.
    await db.close();
    fs.renameSync(dbPath, `${dbPath}.replaced`);
    cloneDbSync(checkpoint.path, dbPath);
    db = new ClassicLevel(dbPath);
    await db.open();
    for (let i = 0; i < 5; i++) await db.put(`rolled-${i}`, 'r');
    await until('a second timeline covering the writes after the rollback', async () => {
      const w = await readWindows(storage);
      // The checkpoint held everything up to the first timeline's end before the change: 5 writes on.
      return w.timelines.length === 2 && w.timelines[1]!.from !== null && w.timelines[1]!.lastSequence! >= first.lastSequence! + 5;
    });
    // The old timeline claims nothing past the rollback.
    const after = await readWindows(storage);
    expect(after.timelines[0]!.id).toBe(first.id);
    expect(after.timelines[0]!.to).toBeLessThan(after.timelines[1]!.from!);

    const repo = await Repository.open(storage, TEST_REPO);
    const keys = async (to: string) => {
      const r = new ClassicLevel(to, { createIfMissing: false });
      await r.open();
      const k = await r.keys().all();
      await r.close();
      return k;
    };
    await restoreToMoment({ repo, at: beforeRollback, to: path.join(dir, 'old-history') });
    const old = await keys(path.join(dir, 'old-history'));
    expect(old.filter((k) => k.startsWith('change-')).length).toBe(20);
    expect(old.some((k) => k.startsWith('rolled-'))).toBe(false);
    await restoreToMoment({ repo, at: 'latest', to: path.join(dir, 'new-history') });
    const now = await keys(path.join(dir, 'new-history'));
    expect(now.some((k) => k.startsWith('change-'))).toBe(false);
    expect(now.filter((k) => k.startsWith('rolled-')).length).toBe(5);
    expect(now).toEqual(await db.keys().all());
  }, 120_000);
});
