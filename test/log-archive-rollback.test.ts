/**
 * A rollback and the log archive, through real processes: the example node (`--log-archive on`) takes
 * writes A, a checkpoint (CLI through the socket), writes B; it is stopped, the checkpoint restored
 * (`node-admin checkpoint restore`), and the node started again and given writes C. The archive then
 * holds two timelines: a restore to a moment after the rollback has A then C (never B), one to a moment
 * before it A then B (never C).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { kv, runCli, startExampleNode, tempDir, type RunningNode } from './support/processes.js';
import { until } from './support/pitr-writers.js';

const NODE_ARGS = ['--log-archive', 'on', '--log-archive-interval', '200ms'];

let dir: string;
let node: RunningNode | null = null;
let storage: Storage | null = null;

afterAll(async () => {
  if (node) await node.kill();
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function put(entries: Record<string, string>): Promise<void> {
  for (const [k, v] of Object.entries(entries)) expect((await kv(node!.port, 'PUT', k, v)).status).toBe(204);
}

async function del(keys: string[]): Promise<void> {
  for (const k of keys) expect((await kv(node!.port, 'DELETE', k)).status).toBe(204);
}

async function restoredAt(at: number | 'latest', repoDir: string, name: string): Promise<{ state: Record<string, string>; timeline: string }> {
  const to = path.join(dir, name);
  const r = await runCli(['backup', 'restore', '--at', at === 'latest' ? at : new Date(at).toISOString(), '--repo', repoDir, '--to', to, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const db = new ClassicLevel<string, string>(to, { createIfMissing: false });
  await db.open();
  const state: Record<string, string> = {};
  for await (const [k, v] of db.iterator()) state[k] = v;
  await db.close();
  return { state, timeline: (JSON.parse(r.stdout) as { timeline: string }).timeline };
}

const range = (p: string, n: number, v: string) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`${p}${i}`, v]));

describe('log archive: a checkpoint restore (rollback) and restart', () => {
  it('starts a new timeline; restores after the rollback have the post-rollback history, before it the old one', async () => {
    dir = tempDir('pitr-rollback');
    const dataDir = path.join(dir, 'node');
    const repoDir = path.join(dataDir, 'backups');
    node = await startExampleNode(dataDir, NODE_ARGS);
    storage = await openStorage(pathToFileURL(repoDir).href, {});
    const restorable = async () => (await readWindows(storage!)).timelines.filter((t) => t.from !== null);
    /** Waits until the newest timeline has archived `sequence`; returns its window's end. */
    const archived = async (sequence: number) => {
      await until(`sequence ${sequence} archived`, async () => ((await restorable()).at(-1)?.lastSequence ?? -1) >= sequence);
      return (await restorable()).at(-1)!;
    };
    await until('the first timeline', async () => (await restorable()).length === 1);
    const s0 = (await restorable())[0]!.lastSequence!;

    const A = range('a', 10, 'A');
    await put(A);
    const c = await runCli(['checkpoint', 'create', '--socket', node.socketPath, '--label', 'before-b', '--json']);
    expect(c.code, c.stderr).toBe(0);
    const checkpointId = (JSON.parse(c.stdout) as { id: string }).id;
    const B = { ...range('a', 5, 'B'), ...range('b', 10, 'B') };
    await put(B);
    await del(['a9']);
    const t1 = await archived(s0 + 10 + 15 + 1);
    const beforeRollback = { ...A, ...B };
    delete beforeRollback.a9;
    expect(await node.stop()).toBe(0);
    node = null;

    const r = await runCli(['checkpoint', 'restore', checkpointId, '--db', path.join(dataDir, 'db'), '--checkpoint-dir', path.join(dataDir, 'checkpoints')]);
    expect(r.code, r.stderr).toBe(0);
    const rolledBackAt = Date.now();
    node = await startExampleNode(dataDir, NODE_ARGS);
    await until('the second timeline', async () => (await restorable()).length === 2);
    const t2start = (await restorable())[1]!;
    // Its own base, at the checkpoint's sequence: below what the old timeline reached.
    expect(t2start.id).not.toBe(t1.id);
    expect(t2start.from!).toBeGreaterThan(rolledBackAt);
    expect(t2start.bases[0]!.sequence).toBeLessThan(t1.lastSequence!);
    const C = { ...range('c', 10, 'C'), a5: 'C' };
    await put(C);
    const t2 = await archived(t2start.bases[0]!.sequence + 11);
    expect(await node.stop()).toBe(0);
    node = null;

    const w = await readWindows(storage);
    expect(w.timelines.filter((t) => t.from !== null).map((t) => t.id)).toEqual([t1.id, t2.id]);
    const old = w.timelines[0]!;
    // Before the rollback: A then B, never C.
    const before = await restoredAt(old.to!, repoDir, 'before');
    expect(before.timeline).toBe(t1.id);
    expect(before.state).toEqual(beforeRollback);
    // Just after the new timeline's start: the checkpoint (A), never B.
    const start = await restoredAt(t2start.from! + 1, repoDir, 'rolled-back');
    expect(start.timeline).toBe(t2.id);
    expect(start.state).toEqual(A);
    // After the rollback and C: A then C, never B.
    const after = await restoredAt('latest', repoDir, 'after');
    expect(after.timeline).toBe(t2.id);
    expect(after.state).toEqual({ ...A, ...C });
    // Control: the three states differ, so each comparison above could fail.
    expect(new Set([before, start, after].map((x) => JSON.stringify(x.state))).size).toBe(3);
  }, 180_000);
});
