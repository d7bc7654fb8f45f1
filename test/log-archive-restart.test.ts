/**
 * Restarts of a real node process (the example node, `--log-archive on`), model writes over its KV API:
 * - killed with SIGKILL once everything it wrote was archived, and started again: the timeline goes on
 *   (one window, no gap, no second base), and the moments while it was down restore exactly the state
 *   at the kill, through the CLI too;
 * - killed with SIGKILL with batches written and not archived yet (a shipping interval of an hour), and
 *   started again: a new timeline with its own base; the old window ends where its archive does, and
 *   never claims (or splices in) the batches it lacked.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import type { Windows } from '../dist/agent/log-archive/timeline-windows.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { runCli, startExampleNode, tempDir, type RunningNode } from './support/processes.js';
import { Writers, httpApply, readState, until } from './support/pitr-writers.js';
import { WriterModel } from './support/write-model.js';
import { TEST_REPO } from './support/test-password.js';

const ARGS = ['--log-archive', 'on', '--log-archive-interval', '200ms'];
const OPS = 60;

let dir: string;
let dataDir: string;
let repoDir: string;
let node: RunningNode | null = null;
let storage: Storage;
let repo: Repository;
const writers = new Writers(
  httpApply(() => node!.port),
  { writers: 1, keysPerWriter: 40, batches: false, pauseMs: 2 },
);
const model = () => writers.models[0]!;
let S0 = 0;

const restorable = (w: Windows) => w.timelines.filter((t) => t.from !== null);
const resumes = (w: Windows) => w.timelines.flatMap((t) => t.marks).filter((m) => m.kind === 'resume').length;

/** Runs the writer until `n` more ops are acknowledged; each op is one put or delete: one sequence number. */
async function write(n: number): Promise<void> {
  const target = model().acked + n;
  writers.start();
  await until(`${n} writes`, () => model().acked >= target);
  await writers.stop();
}

function exactlyAfter(seen: Map<number, number>[], j: number): boolean {
  return Object.assign(new WriterModel(0), { ops: model().ops }).matchPrefix(seen[0]!, j, j) === j;
}

beforeAll(async () => {
  dir = tempDir('restart');
  dataDir = path.join(dir, 'node');
  repoDir = path.join(dataDir, 'backups');
});

afterAll(async () => {
  await writers.stop();
  if (node) await node.kill();
  await repo?.codec.close();
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archive: restarts of a node process', () => {
  it('kill -9 with everything archived, then a start: the timeline goes on, the time it was down restores', async () => {
    node = await startExampleNode(dataDir, ARGS);
    storage = await openStorage(pathToFileURL(repoDir).href, {});
    await until('the base', async () => restorable(await readWindows(storage)).length === 1);
    S0 = (await readWindows(storage)).timelines[0]!.lastSequence!;
    await write(OPS);
    const atKill = model().acked;
    await until('everything archived', async () => (await readWindows(storage)).timelines[0]!.lastSequence === S0 + atKill);
    await node.kill();
    node = null;
    const killedAt = Date.now();
    await new Promise((r) => setTimeout(r, 500)); // the node is down for this long
    const restartedAt = Date.now();
    node = await startExampleNode(dataDir, ARGS);
    await until('the proof', async () => resumes(await readWindows(storage)) === 1);
    expect(node.output()).toContain('the timeline goes on');
    await write(OPS);
    await until('everything archived', async () => (await readWindows(storage)).timelines[0]!.lastSequence === S0 + model().acked);
    expect(await node.stop()).toBe(0);
    node = null;

    const w = await readWindows(storage);
    const [t] = restorable(w);
    expect(w.timelines.length).toBe(1);
    expect(w.gaps).toEqual([]);
    expect(t!.bases.length).toBe(1);
    expect(t!.marks.map((m) => m.kind)).toEqual(['resume', 'stop']);
    expect(t!.marks[0]!.last).toBe(S0 + atKill);

    // The moments while it was down: exactly the state at the kill (library and CLI).
    repo = await Repository.open(storage, TEST_REPO);
    const middle = Math.floor((killedAt + restartedAt) / 2);
    const down = path.join(dir, 'down');
    const r = await restoreToMoment({ repo, at: middle, to: down });
    expect(r.reached.sequence).toBe(S0 + atKill);
    expect(exactlyAfter(await readState(down, 1), atKill)).toBe(true);
    const cli = path.join(dir, 'down-cli');
    const x = await runCli(['backup', 'restore', '--at', new Date(restartedAt).toISOString(), '--repo', repoDir, '--to', cli, '--json']);
    expect(x.code, x.stderr).toBe(0);
    expect(exactlyAfter(await readState(cli, 1), atKill)).toBe(true);
    // Control: the latest state is not the one at the kill.
    const latest = path.join(dir, 'latest');
    await restoreToMoment({ repo, at: 'latest', to: latest });
    expect(exactlyAfter(await readState(latest, 1), atKill)).toBe(false);
    expect(exactlyAfter(await readState(latest, 1), model().acked)).toBe(true);
    // `backup timeline` says it went on through the restart.
    const shown = await runCli(['backup', 'timeline', '--repo', repoDir]);
    expect(shown.stdout).toMatch(/went on through a restart at .*: the database proven still at sequence \d+/);
  }, 180_000);

  it('kill -9 with batches not archived, then a start: a new timeline, the old one never claims them', async () => {
    node = await startExampleNode(dataDir, ['--log-archive', 'on', '--log-archive-interval', '1h']);
    await until('the proof', async () => resumes(await readWindows(storage)) === 2);
    const archived = model().acked;
    const L = (await readWindows(storage)).timelines[0]!.lastSequence!;
    await write(30); // an interval of an hour: none of it is shipped before the kill
    const written = model().acked - archived;
    await node.kill();
    node = null;
    node = await startExampleNode(dataDir, ARGS);
    await until('a second timeline', async () => restorable(await readWindows(storage)).length === 2);
    expect(node.output()).toContain(`the database is at sequence ${L + written}, timeline ${(await readWindows(storage)).timelines[0]!.id} ends at ${L} (batches written and never archived)`);
    expect(await node.stop()).toBe(0);
    node = null;

    const w = await readWindows(storage);
    const [t1, t2] = restorable(w);
    expect(t1!.lastSequence).toBe(L);
    expect(t2!.bases.map((b) => b.sequence)).toEqual([L + written]);
    expect(w.gaps).toEqual([{ from: t1!.to, to: t2!.from }]);
    const old = path.join(dir, 'old-end');
    await restoreToMoment({ repo, at: t1!.to!, to: old });
    expect(exactlyAfter(await readState(old, 1), archived)).toBe(true);
    const now = path.join(dir, 'new');
    await restoreToMoment({ repo, at: 'latest', to: now });
    expect(exactlyAfter(await readState(now, 1), model().acked)).toBe(true);
  }, 180_000);
});
