import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import type { CheckpointRecord } from '../dist/shared/api.js';
import { cloneDbSync, listCheckpointsSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { CheckpointIndex } from '../dist/agent/checkpoint/checkpoint-index.js';
import { tempDir } from './support/processes.js';

/**
 * The differential test of the checkpoint index (agent/checkpoint/checkpoint-index.ts): random
 * sequences of creates, deletes, pins, compactions of the live database (which drop tables that
 * checkpoints still link), agent restarts, and changes made behind the agent's back (a checkpoint
 * directory appearing or vanishing, a stray hard link to one of its files, a verify's clone). After
 * each step, what the agent answers (list, status, one checkpoint, a delete's freedBytes) must equal a
 * full scan of the disk (listCheckpointsSync: lstat of every file, exclusive = nlink 1).
 *
 * Negative control: an index that never looks at the live database again (it misses every table the
 * compactions drop) goes through the same steps, and the same comparison must catch it.
 */

const STEPS = Number(process.env.NODE_ADMIN_INDEX_STEPS ?? 80);
const SEED = Number(process.env.NODE_ADMIN_INDEX_SEED ?? 20261123);
const KEYS = 12_000;

/** Never follows the tables the live database drops: what the comparison must catch. */
class StaleIndex extends CheckpointIndex {
  protected override refreshLive(): void {}
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1_664_525 + 1_013_904_223) >>> 0;
    return s / 2 ** 32;
  };
}

describe(`checkpoint index against full scans (${STEPS} random steps, seed ${SEED})`, () => {
  const dir = tempDir('index');
  const dbPath = path.join(dir, 'db');
  const checkpointDir = path.join(dir, 'checkpoints');
  const strays = path.join(dir, 'strays');
  let db: ClassicLevel<string, Buffer>;
  let agent: Agent;
  let generation = 0;

  const startAgent = async () => {
    // keepLast 6: some creates prune, so the retention pass after a create runs through the index too.
    agent = createAgent({ dbPath, checkpointDir, retention: { keepLast: 6 }, logger: pino({ level: 'silent' }) });
    await agent.start();
  };

  /**
   * Overwrites a share of the keys (incompressible values, ~8 MiB in all: about 8 tables of 1 MiB) and
   * compacts the range: the live database drops the tables it rewrote and keeps the rest.
   */
  const churn = async (share: number) => {
    generation++;
    const batch = db.batch();
    for (let k = 0; k < KEYS; k++) if (k % Math.max(1, Math.round(1 / share)) === 0) batch.put(`k${String(k).padStart(6, '0')}`, randomBytes(700));
    await batch.write();
    await db.compactRange('k', 'l');
  };

  beforeAll(async () => {
    fs.mkdirSync(strays);
    // A small memtable (writes become tables, and WALs roll, often) and the smallest tables LevelDB makes.
    db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 64 * 1024, maxFileSize: 1024 * 1024 });
    await db.open();
    await churn(1);
    await startAgent();
  });

  afterAll(async () => {
    await agent?.stop();
    await db?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A full scan that held still: the same twice in a row (the live database may still be settling). */
  function stableScan(): CheckpointRecord[] {
    for (;;) {
      const a = listCheckpointsSync(checkpointDir);
      const b = listCheckpointsSync(checkpointDir);
      if (JSON.stringify(a) === JSON.stringify(b)) return a;
    }
  }

  it('list, status, one checkpoint and freedBytes equal a full scan after every step; a stale index is caught', async () => {
    const rand = rng(SEED);
    const pick = <T,>(xs: T[]): T | undefined => (xs.length === 0 ? undefined : xs[Math.floor(rand() * xs.length)]);
    // In this process, beside the agent's: it sees the agent's creates and deletes as directories that
    // appear and vanish behind its back (not its pins: checkpoint.json is read when a checkpoint is first seen).
    const stale = new StaleIndex(checkpointDir, dbPath);
    const fresh = new CheckpointIndex(checkpointDir, dbPath);
    const unpinned = (records: CheckpointRecord[]) => records.map(({ pinned: _, ...rest }) => rest);
    const counts: Record<string, number> = {};
    let staleMismatches = 0;
    let exclusiveSeen = 0;
    let maxTables = 0;
    let strayLinks: string[] = [];
    let externalN = 0;
    const history: string[] = [];

    for (let step = 0; step < STEPS; step++) {
      const ids = listCheckpointsSync(checkpointDir).map((r) => r.id);
      const r = rand();
      let kind: string;
      let freed: { id: string; expected: number; got: number } | null = null;
      if (r < 0.3 || ids.length === 0) {
        kind = 'create';
        await agent.createCheckpoint({ label: `s${step}`, pin: rand() < 0.15 });
      } else if (r < 0.42) {
        kind = 'delete';
        const id = pick(ids)!;
        const expected = stableScan().find((c) => c.id === id)!.exclusiveBytes;
        freed = { id, expected, got: (await agent.deleteCheckpoint(id, { force: true })).freedBytes };
      } else if (r < 0.5) {
        kind = 'pin';
        const id = pick(ids)!;
        await (rand() < 0.5 ? agent.pin(id) : agent.unpin(id));
      } else if (r < 0.7) {
        kind = 'compact';
        await churn(rand() < 0.5 ? 1 : 0.3);
      } else if (r < 0.76) {
        kind = 'restart';
        await agent.stop();
        await startAgent();
      } else if (r < 0.82) {
        kind = 'external-create';
        // A checkpoint another process made: linked tables, copied rest, its own checkpoint.json.
        const from = pick(ids)!;
        const id = `20990101T000000${String(externalN++).padStart(3, '0')}Z-e${String(step % 1000).padStart(3, '0')}`;
        const tmp = path.join(dir, `external-${id}`);
        fs.mkdirSync(tmp);
        cloneDbSync(path.join(checkpointDir, from, 'db'), path.join(tmp, 'db'));
        const meta = JSON.parse(fs.readFileSync(path.join(checkpointDir, from, 'checkpoint.json'), 'utf8')) as Record<string, unknown>;
        fs.writeFileSync(path.join(tmp, 'checkpoint.json'), JSON.stringify({ ...meta, id, pinned: false }));
        fs.renameSync(tmp, path.join(checkpointDir, id));
      } else if (r < 0.86) {
        kind = 'external-remove';
        const id = pick(ids)!;
        fs.rmSync(path.join(checkpointDir, id), { recursive: true });
      } else if (r < 0.93) {
        kind = 'stray-link';
        // Someone hard-links a table of a checkpoint elsewhere: that file is nobody's alone any more. A
        // file the index already knows as exclusive is not lstat'ed again (that would be a full scan
        // at every read), so this is seen by a rescan, as after a restart; its removal is seen at once.
        const id = pick(ids)!;
        const table = pick(fs.readdirSync(path.join(checkpointDir, id, 'db')).filter((n) => /\.(ldb|sst)$/.test(n)));
        if (table) {
          const stray = path.join(strays, `${step}-${table}`);
          fs.linkSync(path.join(checkpointDir, id, 'db', table), stray);
          strayLinks.push(stray);
        }
        await agent.stop();
        await startAgent();
        fresh.reset();
        stale.reset();
      } else if (r < 0.97) {
        kind = 'stray-unlink';
        for (const s of strayLinks) fs.rmSync(s);
        strayLinks = [];
      } else {
        kind = 'verify';
        const id = pick(ids)!;
        expect((await agent.verify(id)).ok).toBe(true);
      }
      counts[kind] = (counts[kind] ?? 0) + 1;
      history.push(kind);

      // The trees a create's retention removed go after its answer, in the agent's fs worker: any
      // request queued behind them is a barrier, after which the disk holds still for the scan.
      await agent.listCheckpoints();
      const scan = stableScan();
      const where = `step ${step} (${history.slice(-12).join(', ')})`;
      expect(unpinned(fresh.list()), `${where}, in-process index`).toEqual(unpinned(scan));
      const agentList = await agent.listCheckpoints();
      expect(agentList, where).toEqual(scan);
      const status = await agent.status();
      expect(status.checkpoints, where).toEqual({
        count: scan.length,
        pinned: scan.filter((c) => c.pinned).length,
        bytes: scan.reduce((s, c) => s + c.bytes, 0),
        exclusiveBytes: scan.reduce((s, c) => s + c.exclusiveBytes, 0),
      });
      const one = pick(scan);
      if (one) expect(await agent.getCheckpoint(one.id), where).toEqual(one);
      if (freed) expect(freed.got, `${where}: freedBytes of ${freed.id}`).toBe(freed.expected);
      exclusiveSeen += scan.filter((c) => c.exclusiveBytes > c.bytes / 2).length;
      maxTables = Math.max(maxTables, ...scan.map((c) => c.files - 3));
      if (JSON.stringify(unpinned(stale.list())) !== JSON.stringify(unpinned(scan))) staleMismatches++;
    }

    console.log(`index differential: ${JSON.stringify(counts)}; stale index caught at ${staleMismatches} of ${STEPS} steps`);
    // The sequence did what it is for: compactions ran, and checkpoints came to own files alone.
    expect(counts.compact ?? 0).toBeGreaterThanOrEqual(5);
    expect(exclusiveSeen).toBeGreaterThan(0);
    expect(maxTables).toBeGreaterThanOrEqual(6);
    // The negative control: the same comparison fails an index that misses what the live database drops.
    expect(staleMismatches).toBeGreaterThan(0);
  }, 600_000);
});
