/**
 * A restart whose archived tail is a deletion LevelDB has since dropped: the writer's last batch
 * deleted a key that had no older entry, and a compaction of the whole database before the next start
 * (as a node's own compactions may) left no trace of it. The last segment then proves nothing either
 * way; the proof compares the segments before it too, and the timeline goes on. Negative control: the
 * last segment alone finds no entry in the database (what the proof judged before, starting a new
 * timeline and a second base).
 *
 * A real classic-level database, closed and opened again as a node does; an embedded agent archiving to
 * a format 3 `file://` repository.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { checkTail } from '../dist/agent/log-archive/continuity-proof.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { decodeSegment, segmentName } from '../dist/agent/log-archive/segment.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { tempDir } from './support/processes.js';
import { until } from './support/pitr-writers.js';
import { TEST_KDF, TEST_REPO } from './support/test-password.js';

const dir = tempDir('proof-deletions');
const dbPath = path.join(dir, 'db');
const url = pathToFileURL(path.join(dir, 'repo')).href;
const messages: { msg: string; reason?: string }[] = [];
let storage: Storage | null = null;
let db: ClassicLevel<string, string> | null = null;
let agent: Agent | null = null;

afterAll(async () => {
  await agent?.stop().catch(() => {});
  await db?.close().catch(() => {});
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function startNode(): Promise<void> {
  db = new ClassicLevel<string, string>(dbPath);
  await db.open();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) messages.push(JSON.parse(line) as { msg: string; reason?: string });
      done();
    },
  });
  // No merging: a minute's merge falling between the deletion and the restart would fold its segment
  // into one with the puts, and the case would not be made.
  agent = createAgent({ dbPath, checkpointDir: path.join(dir, 'checkpoints'), backup: { repository: url, kdfCost: TEST_KDF, logArchive: { intervalMs: 100, merge: false } }, logger: pino({ level: 'info' }, sink) });
  await agent.start();
}

async function stopNode(): Promise<void> {
  await agent!.stop();
  await db!.close();
  agent = null;
  db = null;
}

const newest = async () => (await readWindows(storage!)).timelines.at(-1);

describe('log archive: a proof whose last segment is a dropped deletion', () => {
  it('compares the segments before it, and the timeline goes on', async () => {
    storage = await openStorage(url, {});
    await startNode();
    await until('the base', async () => (await newest())?.from != null);
    const base = (await newest())!.lastSequence!;
    await db!.batch(Array.from({ length: 20 }, (_, i) => ({ type: 'put' as const, key: `k${i}`, value: `v${i}` })));
    await until('the puts archived', async () => (await newest())!.lastSequence === base + 20);
    await db!.del('never-written');
    await until('the deletion archived', async () => (await newest())!.lastSequence === base + 21);
    await stopNode();

    // The node's compaction while it was down: the deletion, of a key with no older entry, is dropped.
    const offline = new ClassicLevel<string, string>(dbPath);
    await offline.open();
    await offline.compactRange('\x00', '\xff');
    await offline.close();

    const t = (await newest())!;
    const last = t.segments.at(-1)!;
    expect([last.first, last.last]).toEqual([base + 21, base + 21]); // the last segment holds the deletion alone
    const repo = await Repository.open(storage, TEST_REPO);
    try {
      const tail = await decodeSegment(segmentName(last), last, await repo.getObject(segmentName(last)));
      // The negative control: that segment alone finds nothing in the database.
      const alone = await checkTail(dbPath, tail);
      expect('found' in alone ? alone.found : 0).toBe(0);
    } finally {
      await repo.codec.close();
    }

    messages.length = 0; // the first start's verdict (no timeline yet) is not this one's
    await startNode();
    await until('the proof', () => messages.some((m) => /the timeline goes on|cannot be proven/.test(m.msg)));
    const why = JSON.stringify(messages.filter((m) => /cannot be proven|timeline goes on/.test(m.msg)));
    expect(messages.some((m) => m.msg.includes('the timeline goes on')), why).toBe(true);
    await db!.put('after', 'restart');
    await until('the write after the restart archived', async () => (await newest())!.lastSequence === base + 22);
    await stopNode();
    const w = await readWindows(storage);
    expect(w.timelines.map((x) => x.id)).toEqual([t.id]);
    expect(w.timelines[0]!.bases).toHaveLength(1);
    expect(w.gaps).toEqual([]);
  }, 120_000);
});
