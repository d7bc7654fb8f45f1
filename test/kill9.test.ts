import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { randomBytes } from 'node:crypto';
import { listCheckpointsOffline, verifyCheckpointOffline } from '../dist/agent/index.js';
import { kv, kvAll, startExampleNode, tempDir, type RunningNode } from './support/processes.js';

/**
 * kill -9 of the node while it builds a checkpoint under a write load, aimed at every step of the build
 * (docs/checkpoint-design.md): the test watches the checkpoint directory from outside and kills the
 * moment the step it aims at shows on disk, then reads from the disk where the build really was when the
 * node died. Every step must be hit (a kill that landed later is tried again). After every kill: nothing
 * partial is listed, a checkpoint renamed into place is listed and verifies, the next start removes the
 * leftovers, and in the end the database opens with every entry.
 */

/** The steps of a build, in order, as they show in the checkpoint directory. */
const STEPS = [
  'request', //  the create was sent; no staging directory yet
  'staging', //  .staging-<id>/ exists; no table linked yet (WALs pinned, MANIFEST read)
  'tables', //   tables being hard-linked into .staging-<id>/db/
  'logs', //     the pinned WALs being copied
  // The MANIFEST copy, CURRENT and checkpoint.json are written one right after the other (microseconds:
  // no kill from outside can aim between them), then all are fsynced at once, with both directories.
  'written', //  some or all of them written, the fsyncs in flight; not yet renamed
  'renamed', //  renamed into place: a whole checkpoint
] as const;
type Step = (typeof STEPS)[number];

/** How often each step must be hit, and how many kills one step may take to be hit that often. */
const HITS_PER_STEP = 3;
const MAX_KILLS_PER_STEP = 15;

function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

function leftovers(checkpointDir: string): string[] {
  return readdirOrEmpty(checkpointDir).filter((n) => n.startsWith('.'));
}

/**
 * Where the build of the one new checkpoint is, from what is on disk; null if the staging directory went
 * away while it was being read (renamed or removed): look again.
 */
function stepOnDisk(checkpointDir: string, before: Set<string>): { step: Step; id: string | null } | null {
  const names = readdirOrEmpty(checkpointDir);
  const fresh = names.filter((n) => !n.startsWith('.') && !before.has(n));
  if (fresh.length > 0) return { step: 'renamed', id: fresh[0]! };
  const staging = names.find((n) => n.startsWith('.staging-'));
  if (staging === undefined) return { step: 'request', id: null };
  const id = staging.slice('.staging-'.length);
  let inStaging: string[];
  let db: string[];
  try {
    inStaging = fs.readdirSync(path.join(checkpointDir, staging));
    db = inStaging.includes('db') ? fs.readdirSync(path.join(checkpointDir, staging, 'db')) : [];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (inStaging.includes('checkpoint.json') || db.includes('CURRENT') || db.some((n) => n.startsWith('MANIFEST-'))) return { step: 'written', id };
  if (db.some((n) => n.endsWith('.log'))) return { step: 'logs', id };
  if (db.some((n) => /\.(ldb|sst)$/.test(n))) return { step: 'tables', id };
  return { step: 'staging', id };
}

/** Sends POST /v1/checkpoints and resolves once the request is written to the socket. */
function postCreate(socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: '/v1/checkpoints', headers: { 'content-type': 'application/json' } });
    req.on('error', () => {}); // the node dies under it: expected
    req.on('finish', () => resolve());
    req.on('close', () => reject(new Error('the create request closed before it was sent')));
    req.end('{}');
  });
}

describe('kill -9 during checkpoint creation', () => {
  const dir = tempDir('kill9');
  const checkpointDir = path.join(dir, 'checkpoints');
  let node: RunningNode | null = null;

  beforeAll(async () => {
    // A database of many small tables, so that the linking step is long enough to be aimed at.
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

  it(`leaves no partial checkpoint after kills aimed at each step of the build (${STEPS.join(', ')})`, async () => {
    const nodeArgs = ['--load', '500', '--write-buffer-size', '256KiB', '--max-file-size', '128KiB', '--keep-last', '5'];
    const hits = new Map<Step, number>(STEPS.map((s) => [s, 0]));
    const kills = new Map<Step, number>(STEPS.map((s) => [s, 0]));
    let killedInsideBuild = 0;
    let cleanedAtStart = 0;
    let previousLeftStaging = false;

    for (const target of STEPS) {
      while (hits.get(target)! < HITS_PER_STEP) {
        expect(kills.get(target)!, `kills aimed at step "${target}" never landed there often enough: ${JSON.stringify(Object.fromEntries(hits))}`).toBeLessThan(MAX_KILLS_PER_STEP);
        // Copying the WALs takes as long as they are big: for that step, a memtable that holds 8 MiB of
        // fresh writes (one WAL of that size to copy), so that the step lasts long enough to be aimed at.
        node = await startExampleNode(dir, target === 'logs' ? [...nodeArgs, '--write-buffer-size', '16MiB'] : nodeArgs);
        if (target === 'logs') {
          for (let i = 0; i < 8; i++) expect((await kv(node.port, 'PUT', `wal-filler/${i}`, randomBytes(768 * 1024).toString('base64'))).status).toBe(204);
        }
        // The previous kill's leftovers are gone once the agent has started, and it says so.
        expect(leftovers(checkpointDir)).toEqual([]);
        const cleaned = node.output().includes('removed leftovers of interrupted checkpoint work');
        if (previousLeftStaging) expect(cleaned, 'the agent must remove the staging directory a kill left').toBe(true);
        if (cleaned) cleanedAtStart++;

        const before = new Set(readdirOrEmpty(checkpointDir));
        const pid = node.child.pid!;
        await postCreate(node.socketPath);
        // From here to the kill this thread never yields: it looks at the directory as fast as it can
        // and kills the moment the build has reached the target step.
        const deadline = Date.now() + 30_000;
        for (;;) {
          const seen = stepOnDisk(checkpointDir, before);
          if (seen !== null && STEPS.indexOf(seen.step) >= STEPS.indexOf(target)) break;
          if (Date.now() > deadline) throw new Error(`the build never reached step "${target}" within 30 s`);
        }
        process.kill(pid, 'SIGKILL');
        await node.exited;
        node = null;
        kills.set(target, kills.get(target)! + 1);

        // Where the build really was when the node died (nothing moves now).
        const landed = stepOnDisk(checkpointDir, before)!;
        if (landed.step === target) hits.set(target, hits.get(target)! + 1);
        const insideBuild = landed.step !== 'request' && landed.step !== 'renamed';
        if (insideBuild) killedInsideBuild++;
        previousLeftStaging = insideBuild;

        // Either a whole checkpoint or nothing: a build cut short is not listed; one renamed into place
        // is, and verifies; nothing else new is listed.
        const listed = await listCheckpointsOffline(checkpointDir);
        const fresh = listed.filter((r) => !before.has(r.id));
        if (landed.step === 'renamed') expect(fresh.map((r) => r.id)).toEqual([landed.id]);
        else expect(fresh, `a kill at step "${landed.step}" must leave no new checkpoint listed`).toEqual([]);
        for (const r of fresh) {
          const report = await verifyCheckpointOffline(checkpointDir, r.id);
          expect(report, `checkpoint ${r.id} listed after a kill must be whole`).toMatchObject({ ok: true });
        }
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
    const totalKills = [...kills.values()].reduce((a, b) => a + b, 0);
    console.log(
      `kill -9: ${totalKills} kills, ${killedInsideBuild} inside a build; hits/kills per step: ` +
        STEPS.map((s) => `${s} ${hits.get(s)}/${kills.get(s)}`).join(', ') +
        `; ${cleanedAtStart} starts cleaned leftovers`,
    );
    for (const s of STEPS) expect(hits.get(s), `step "${s}" hit`).toBeGreaterThanOrEqual(HITS_PER_STEP);
    expect(killedInsideBuild).toBeGreaterThanOrEqual(5);
    expect(cleanedAtStart).toBeGreaterThanOrEqual(1);
  });
});
