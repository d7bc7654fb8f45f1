import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { randomBytes } from 'node:crypto';
import { listCheckpointsOffline, verifyCheckpointOffline } from '../dist/agent/index.js';
import { kvAll, startExampleNode, tempDir, type RunningNode } from './support/processes.js';

/**
 * kill -9 of the node at random moments while it builds a checkpoint under a write load. Afterwards:
 * nothing partial is listed, every listed checkpoint verifies, the database opens, and the next start
 * removes the leftovers. Half the kills aim at the moment a staging directory appears, so that many of
 * them land inside the build (counted, and required), not only before or after it.
 */

const ROUNDS = 20;

function post(socketPath: string, route: string): void {
  const req = http.request({ socketPath, method: 'POST', path: route, headers: { 'content-type': 'application/json' } });
  req.on('error', () => {}); // the node dies under it: expected
  req.end('{}');
}

function leftovers(checkpointDir: string): string[] {
  try {
    return fs.readdirSync(checkpointDir).filter((n) => n.startsWith('.'));
  } catch {
    return [];
  }
}

describe('kill -9 during checkpoint creation', () => {
  const dir = tempDir('kill9');
  const checkpointDir = path.join(dir, 'checkpoints');
  let node: RunningNode | null = null;

  beforeAll(async () => {
    // A database of many small tables so that a build takes long enough to be hit.
    const db = new ClassicLevel<string, Buffer>(path.join(dir, 'db'), { valueEncoding: 'buffer', writeBufferSize: 256 * 1024, maxFileSize: 128 * 1024 });
    await db.open();
    const value = randomBytes(1000);
    for (let b = 0; b < 60; b++) {
      await db.batch(Array.from({ length: 500 }, (_, i) => ({ type: 'put' as const, key: `seed/${b}/${i}`, value })));
    }
    await db.close();
  }, 120_000);

  afterAll(async () => {
    if (node) await node.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`leaves no partial checkpoint after ${ROUNDS} kills`, async () => {
    const nodeArgs = ['--load', '500', '--write-buffer-size', '256KiB', '--max-file-size', '128KiB', '--keep-last', '5'];
    let hitInside = 0;
    let cleanedAtStart = 0;
    for (let round = 0; round < ROUNDS; round++) {
      node = await startExampleNode(dir, nodeArgs);
      // Previous round's leftovers are gone once the agent has started.
      expect(leftovers(checkpointDir)).toEqual([]);
      if (node.output().includes('removed leftovers of interrupted checkpoint work')) cleanedAtStart++;

      const before = new Set(fs.existsSync(checkpointDir) ? fs.readdirSync(checkpointDir) : []);
      post(node.socketPath, '/v1/checkpoints');
      if (round % 2 === 0) {
        // Aim inside the build: wait for its staging directory, then a random few milliseconds more
        // (a build here takes about 5-10 ms: its fsyncs are issued at once).
        const deadline = Date.now() + 5_000;
        while (Date.now() < deadline && !leftovers(checkpointDir).some((n) => n.startsWith('.staging-'))) {
          await new Promise((r) => setImmediate(r));
        }
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 5)));
      } else {
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 120)));
      }
      const stagingAtKill = leftovers(checkpointDir).some((n) => n.startsWith('.staging-'));
      await node.kill();
      node = null;
      if (stagingAtKill) hitInside++;

      // Nothing that is not whole may be listed.
      const listed = await listCheckpointsOffline(checkpointDir);
      for (const r of listed) {
        if (before.has(r.id)) continue;
        const report = await verifyCheckpointOffline(checkpointDir, r.id);
        expect(report, `checkpoint ${r.id} listed after a kill must be whole`).toMatchObject({ ok: true });
      }
    }

    // The database opens (a node starts on it and reads every entry), and the leftovers are cleaned.
    node = await startExampleNode(dir, ['--keep-last', '5']);
    const all = await kvAll(node.port);
    expect(Object.keys(all).filter((k) => k.startsWith('seed/')).length).toBe(30_000);
    expect(leftovers(checkpointDir)).toEqual([]);
    await node.stop();
    node = null;
    for (const r of await listCheckpointsOffline(checkpointDir)) {
      expect(await verifyCheckpointOffline(checkpointDir, r.id)).toMatchObject({ ok: true });
    }
    console.log(`kill -9: ${ROUNDS} kills, ${hitInside} inside a build (staging directory present), ${cleanedAtStart} starts cleaned leftovers`);
    expect(hitInside).toBeGreaterThanOrEqual(5);
    expect(cleanedAtStart).toBeGreaterThanOrEqual(1);
  });
});
