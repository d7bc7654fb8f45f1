import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { kv, kvAll, runCli, startExampleNode, tempDir, type RunningNode } from './support/processes.js';
import type { CheckpointRecord, PruneResult, VerifyReport } from '../dist/shared/index.js';

/**
 * The operator's loop, through real processes only: the example node, the built CLI, the socket.
 * write -> checkpoint -> write more -> stop -> restore offline -> restart: exactly the checkpoint's keys.
 */
describe('end to end: checkpoint, upgrade gone wrong, restore', () => {
  const dir = tempDir('e2e');
  let node: RunningNode | null = null;

  afterAll(async () => {
    if (node) await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('restores exactly the checkpoint and keeps the replaced database aside', async () => {
    node = await startExampleNode(dir);
    const socket = ['--socket', node.socketPath];
    const before: Record<string, string> = {};
    for (let i = 0; i < 300; i++) {
      const key = `user/${i}`;
      const value = `v${i}-${'x'.repeat(i % 50)}`;
      expect((await kv(node.port, 'PUT', key, value)).status).toBe(204);
      before[key] = value;
    }

    const created = await runCli(['checkpoint', 'create', '--label', 'before-upgrade', '--pin', '--json', ...socket]);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const record = JSON.parse(created.stdout) as CheckpointRecord;
    expect(record).toMatchObject({ label: 'before-upgrade', pinned: true, trigger: 'manual' });

    // The "upgrade" rewrites, deletes and adds.
    for (let i = 0; i < 300; i += 3) await kv(node.port, 'PUT', `user/${i}`, 'corrupted by upgrade');
    for (let i = 1; i < 300; i += 3) await kv(node.port, 'DELETE', `user/${i}`);
    for (let i = 0; i < 50; i++) await kv(node.port, 'PUT', `new/${i}`, 'after');
    const after = await kvAll(node.port);
    expect(after).not.toEqual(before);

    const listed = await runCli(['checkpoint', 'list', '--json', ...socket]);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as CheckpointRecord[]).map((r) => r.id)).toEqual([record.id]);
    const shown = await runCli(['checkpoint', 'show', record.id, '--json', ...socket]);
    expect(JSON.parse(shown.stdout)).toEqual(JSON.parse(listed.stdout)[0]);
    const verified = await runCli(['checkpoint', 'verify', record.id, '--json', ...socket]);
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout) as VerifyReport).toMatchObject({ ok: true, entries: 300 });

    // Restore refuses while the node runs, and changes nothing.
    const db = path.join(dir, 'db');
    const checkpoints = path.join(dir, 'checkpoints');
    const refused = await runCli(['checkpoint', 'restore', record.id, '--db', db, '--checkpoint-dir', checkpoints]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/DATABASE_LOCKED/);
    expect(await kvAll(node.port)).toEqual(after);

    expect(await node.stop()).toBe(0);
    node = null;
    expect(fs.existsSync(path.join(dir, 'run', 'admin.sock'))).toBe(false);

    const restored = await runCli(['checkpoint', 'restore', record.id, '--db', db, '--checkpoint-dir', checkpoints, '--json']);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    const result = JSON.parse(restored.stdout) as { replacedPath: string };
    expect(path.dirname(result.replacedPath)).toBe(dir);

    // The replaced database is kept whole: it holds the post-upgrade state.
    const aside = new ClassicLevel<string, string>(result.replacedPath, { createIfMissing: false });
    await aside.open();
    const asideAll: Record<string, string> = {};
    for await (const [k, v] of aside.iterator()) asideAll[k] = v;
    await aside.close();
    expect(asideAll).toEqual(after);

    node = await startExampleNode(dir);
    expect(await kvAll(node.port)).toEqual(before);
    expect((await kv(node.port, 'GET', 'new/1')).status).toBe(404);

    // The checkpoint survived its own restore untouched and still verifies.
    const again = await runCli(['checkpoint', 'verify', record.id, '--json', '--socket', node.socketPath]);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, entries: 300 });
  });

  it('lists, pins, prunes and deletes through the CLI with --json documents', async () => {
    if (!node) node = await startExampleNode(dir);
    const socket = ['--socket', node.socketPath];
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      await kv(node.port, 'PUT', `k${i}`, String(i));
      const r = await runCli(['checkpoint', 'create', '--json', ...socket]);
      expect(r.code).toBe(0);
      ids.push((JSON.parse(r.stdout) as CheckpointRecord).id);
    }
    // keep-last 3 by default, the pinned one from the first test does not count: the oldest new one went.
    const list = JSON.parse((await runCli(['checkpoint', 'list', '--json', ...socket])).stdout) as CheckpointRecord[];
    expect(list.filter((r) => !r.pinned).map((r) => r.id)).toEqual(ids.slice(1));
    expect(list.filter((r) => r.pinned)).toHaveLength(1);

    const pinned = await runCli(['checkpoint', 'pin', ids[1]!, '--json', ...socket]);
    expect(JSON.parse(pinned.stdout)).toMatchObject({ id: ids[1], pinned: true });
    const refused = await runCli(['checkpoint', 'delete', ids[1]!, ...socket]);
    expect(refused.code).toBe(4);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect((await runCli(['checkpoint', 'unpin', ids[1]!, ...socket])).code).toBe(0);
    const deleted = await runCli(['checkpoint', 'delete', ids[1]!, '--json', ...socket]);
    expect(JSON.parse(deleted.stdout)).toMatchObject({ deleted: ids[1] });
    expect((await runCli(['checkpoint', 'show', ids[1]!, ...socket])).code).toBe(3);

    const dry = JSON.parse((await runCli(['checkpoint', 'prune', '--dry-run', '--json', ...socket])).stdout) as PruneResult;
    expect(dry).toMatchObject({ dryRun: true, removed: [] });

    const status = JSON.parse((await runCli(['status', '--json', ...socket])).stdout) as { checkpoints: { count: number }; inProgress: unknown };
    expect(status.checkpoints.count).toBe(3);
    expect(status.inProgress).toBeNull();
  });
});
