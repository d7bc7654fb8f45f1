/**
 * A break (the database directory replaced under the archiver) while a segment upload is in flight:
 * the old timeline's end is shipped once, after the upload, without overlapping it. Before the fix the
 * end was shipped again from the upload's first batch, the two segments overlapped, and the window
 * read as broken after the upload (`brokenAfter`), losing the batches after it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { LogArchiver, parseLogArchiveOptions } from '../dist/agent/log-archive/log-archiver.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { cloneDbSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { tempDir } from './support/processes.js';
import { until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

/** The repository's real storage, whose segment uploads can be held until released. */
class HeldStorage extends DirStorage {
  hold = false;
  held: (() => void)[] = [];
  segmentPuts = 0;
  override async put(name: string, data: Buffer): Promise<void> {
    if (name.includes('/seg/')) {
      this.segmentPuts++;
      if (this.hold) await new Promise<void>((r) => this.held.push(r));
    }
    return super.put(name, data);
  }
}

let dir: string;
let agent: Agent | null = null;
let archiver: LogArchiver | null = null;
let db: ClassicLevel<string, string> | null = null;

afterAll(async () => {
  await archiver?.stop();
  await agent?.stop();
  await db?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archive: a break during an upload', () => {
  it('ships the old timeline\'s end once, after the upload, and its window stays whole', async () => {
    dir = tempDir('archiver-break');
    const dbPath = path.join(dir, 'db');
    const repoDir = path.join(dir, 'repo');
    db = new ClassicLevel(dbPath);
    await db.open();
    for (let i = 0; i < 10; i++) await db.put(`before-${i}`, 'x');
    const silent = pino({ level: 'silent' });
    const messages: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) messages.push((JSON.parse(line) as { msg: string }).msg);
        done();
      },
    });
    agent = createAgent({ dbPath, checkpointDir: path.join(dir, 'checkpoints'), backup: { repository: pathToFileURL(repoDir).href }, logger: silent });
    await agent.start();
    const storage = new HeldStorage(repoDir);
    const host = { createCheckpoint: agent.createCheckpoint.bind(agent), createBackup: agent.createBackup.bind(agent), openRepository: () => Repository.open(storage, { create: true, ...TEST_REPO }) };
    archiver = new LogArchiver(dbPath, parseLogArchiveOptions({ intervalMs: 200, pollMs: 20 })!, host, pino({ level: 'info' }, sink));
    await archiver.start();
    await until('the first timeline', async () => (await readWindows(storage)).timelines.some((t) => t.from !== null));
    const checkpoint = await agent.createCheckpoint({ label: 'rollback-to' });

    // Writes whose upload is held; while it hangs, the node rolls back in place.
    storage.hold = true;
    const puts = storage.segmentPuts;
    for (let i = 0; i < 20; i++) await db.put(`change-${i}`, 'c');
    await until('an upload in flight', () => storage.held.length > 0 && storage.segmentPuts > puts);
    const beforeRollback = (await readWindows(storage)).timelines.find((t) => t.from !== null)!;
    await db.close();
    fs.renameSync(dbPath, `${dbPath}.replaced`);
    cloneDbSync(checkpoint.path, dbPath);
    db = new ClassicLevel(dbPath);
    await db.open();
    for (let i = 0; i < 5; i++) await db.put(`more-${i}`, 'c');
    // The follower's next pass sees the directory replaced: the timeline ends while the upload hangs.
    await until('the break', () => messages.some((m) => m.includes('continuity lost')));
    expect(storage.held.length).toBeGreaterThan(0);
    storage.hold = false;
    for (const release of storage.held.splice(0)) release();
    await until('a second timeline', async () => (await readWindows(storage)).timelines.filter((t) => t.from !== null).length === 2);
    await archiver.stop();
    archiver = null;

    const w = await readWindows(storage);
    const old = w.timelines.find((t) => t.id === beforeRollback.id)!;
    expect(old.brokenAfter).toBeNull();
    // Every write before the rollback is in the old window.
    expect(old.lastSequence).toBe(beforeRollback.bases[0]!.sequence + 20);
  }, 120_000);
});
