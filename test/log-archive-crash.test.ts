/**
 * The log archive across a crash, through real processes: the example node (`--log-archive on`, a small
 * write buffer so logs rotate several times a second, its own `--load`) takes writes from model writers
 * over its KV API; it is killed with SIGKILL under that load, restarted, and written to again. Then:
 * - `backup timeline --json` shows two timelines with a gap; the second has its own base;
 * - restores to random moments in both windows are exact (the model of acknowledged writes), and so are
 *   restores at each window's `to` and just after its `from` (no window claims a moment it cannot restore);
 * - moments in the gap, before the first base, in the future, not a time, or with a backup id are
 *   refused by the CLI: one line, the right exit class, nothing at the target.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import type { Windows } from '../dist/agent/log-archive/timeline-windows.js';
import { runCli, startExampleNode, tempDir, type RunningNode } from './support/processes.js';
import { Writers, httpApply, readState, until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

const WRITERS = 4;
const NODE_ARGS = ['--log-archive', 'on', '--log-archive-interval', '200ms', '--write-buffer-size', '64KiB', '--max-file-size', '64KiB', '--load', '200'];
/** How long each run of the node archives under load before it is killed or stopped. */
const RUN_MS = 5000;
const RANDOM_RESTORES = 12;

let dir: string;
let dataDir: string;
let repoDir: string;
let node: RunningNode | null = null;
let storage: Storage;
let writers: Writers;
let killedAt = 0;
let restartedAt = 0;
let windows: Windows;

interface TimelineJson {
  id: string;
  from: string | null;
  to: string | null;
  lastSequence: number | null;
  bases: { backup: string; sequence: number; from: string; usable: boolean }[];
}

async function timelineJson(): Promise<{ timelines: TimelineJson[]; gaps: { from: string; to: string }[] }> {
  const r = await runCli(['backup', 'timeline', '--repo', repoDir, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { timelines: TimelineJson[]; gaps: { from: string; to: string }[] };
}

/** Restores through the CLI and checks the state against the model; returns the point reached. */
async function cliRestore(at: number, name: string): Promise<{ sequence: number; time: string }> {
  const to = path.join(dir, name);
  const r = await runCli(['backup', 'restore', '--at', new Date(at).toISOString(), '--repo', repoDir, '--to', to, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const reached = (JSON.parse(r.stdout) as { reached: { sequence: number; time: string } }).reached;
  expect(Date.parse(reached.time)).toBeLessThanOrEqual(at);
  const problem = writers.mismatch(await readState(to, WRITERS, 'load/'), writers.bounds(at), true);
  expect(problem, `CLI restore to ${new Date(at).toISOString()}`).toBeNull();
  fs.rmSync(to, { recursive: true });
  return reached;
}

beforeAll(async () => {
  dir = tempDir('pitr-crash');
  dataDir = path.join(dir, 'node');
  repoDir = path.join(dataDir, 'backups');
  writers = new Writers(
    httpApply(() => node!.port),
    { writers: WRITERS, keysPerWriter: 200, batches: false, pauseMs: 5 },
  );
});

afterAll(async () => {
  await writers?.stop();
  if (node) await node.kill();
  await storage?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('log archive: kill -9 under load, restart, load again', () => {
  it('archives, is killed under load, and starts a new timeline with its own base after the restart', async () => {
    node = await startExampleNode(dataDir, NODE_ARGS);
    storage = await openStorage(pathToFileURL(repoDir).href, {});
    writers.start();
    const restorable = async (n: number, minMs: number) => {
      const w = await readWindows(storage);
      const t = w.timelines.filter((x) => x.from !== null);
      return t.length >= n && t[n - 1]!.to! - t[n - 1]!.from! >= minMs;
    };
    await until('the first timeline to span the run', () => restorable(1, RUN_MS));
    const ackedBeforeKill = writers.acked;
    await node.kill();
    killedAt = Date.now();
    node = null;
    // The writers keep going (their ops fail and are retried) while the node is down.
    restartedAt = Date.now();
    node = await startExampleNode(dataDir, NODE_ARGS);
    await until('the second timeline to span the run', () => restorable(2, RUN_MS / 2));
    await writers.stop();
    expect(await node.stop()).toBe(0);
    node = null;
    // The kill hit writes in flight: some failed and were retried after the restart.
    expect(writers.failures).toBeGreaterThan(0);
    expect(writers.acked).toBeGreaterThan(ackedBeforeKill + 100);

    windows = await readWindows(storage);
    const [t1, t2] = windows.timelines.filter((t) => t.from !== null);
    expect(windows.timelines.filter((t) => t.from !== null).length).toBe(2);
    // The old window ends before the kill; the new one begins after the restart, with its own base.
    expect(t1!.to!).toBeLessThan(killedAt);
    expect(t2!.from!).toBeGreaterThanOrEqual(restartedAt);
    expect(t2!.bases[0]!.usable).toBe(true);
    expect(t1!.bases.map((b) => b.backup)).not.toContain(t2!.bases[0]!.backup);
    expect(t2!.bases[0]!.sequence).toBeGreaterThanOrEqual(t1!.lastSequence!);
    expect(t1!.brokenAfter).toBeNull();
    expect(t2!.brokenAfter).toBeNull();
    expect(windows.gaps).toEqual([{ from: t1!.to, to: t2!.from }]);

    // The CLI says the same.
    const json = await timelineJson();
    expect(json.timelines.filter((t) => t.from !== null).map((t) => [t.id, Date.parse(t.from!), Date.parse(t.to!)])).toEqual([
      [t1!.id, t1!.from, t1!.to],
      [t2!.id, t2!.from, t2!.to],
    ]);
    expect(json.gaps.map((g) => [Date.parse(g.from), Date.parse(g.to)])).toEqual([[t1!.to, t2!.from]]);
  }, 180_000);

  it('restores exactly to random moments in both windows, and at every window edge it claims', async () => {
    const [t1, t2] = windows.timelines.filter((t) => t.from !== null) as [NonNullable<Windows['timelines'][0]>, NonNullable<Windows['timelines'][0]>];
    const repo = await Repository.open(storage, TEST_REPO);
    const random = (t: typeof t1, n: number) => Array.from({ length: n }, () => t.from! + 1 + Math.floor(Math.random() * (t.to! - t.from! - 1)));
    const moments: { at: number; cli: boolean }[] = [
      ...random(t1, Math.ceil((RANDOM_RESTORES * 2) / 3)).map((at) => ({ at, cli: false })),
      ...random(t2, Math.floor(RANDOM_RESTORES / 3)).map((at) => ({ at, cli: false })),
      // Every window's edges, through the CLI: just after `from`, and `to` itself.
      ...[t1, t2].flatMap((t) => [
        { at: t.from! + 1, cli: true },
        { at: t.to!, cli: true },
      ]),
    ].sort((a, b) => a.at - b.at);
    let batches = 0;
    for (const [i, m] of moments.entries()) {
      if (m.cli) {
        await cliRestore(m.at, `edge-${i}`);
        continue;
      }
      const to = path.join(dir, `restored-${i}`);
      const r = await restoreToMoment({ repo, at: m.at, to });
      batches += r.batches;
      expect(r.reached.time).toBeLessThanOrEqual(m.at);
      expect(r.timeline).toBe(m.at <= t1.to! ? t1.id : t2.id);
      const problem = writers.mismatch(await readState(to, WRITERS, 'load/'), writers.bounds(m.at), true);
      expect(problem, `restore to ${new Date(m.at).toISOString()} (${r.batches} batches on backup ${r.backup})`).toBeNull();
      fs.rmSync(to, { recursive: true });
    }
    expect(batches).toBeGreaterThan(RANDOM_RESTORES);

    // Negative control: the check tells moments apart (a restore at the old window's end is not the
    // state of a moment just after its start): it is not satisfied by any state.
    const to = path.join(dir, 'control');
    await restoreToMoment({ repo, at: t1.to!, to });
    expect(writers.mismatch(await readState(to, WRITERS, 'load/'), writers.bounds(t1.from! + 1), true)).not.toBeNull();
    fs.rmSync(to, { recursive: true });
  }, 300_000);

  it('refuses bad moments through the CLI: one line, its exit class, nothing at the target', async () => {
    const [t1, t2] = windows.timelines.filter((t) => t.from !== null) as [NonNullable<Windows['timelines'][0]>, NonNullable<Windows['timelines'][0]>];
    const target = path.join(dir, 'refused');
    const refused = async (args: string[], code: string, exit: number, json = false) => {
      const x = await runCli(['backup', 'restore', ...args, '--repo', repoDir, '--to', target, ...(json ? ['--json'] : [])]);
      expect(x.code, x.stderr).toBe(exit);
      // With --json the error is one JSON record; without, a line ending in its code.
      if (json) expect((JSON.parse(x.stderr) as { error: { code: string } }).error.code).toBe(code);
      else expect(x.stderr).toContain(`(${code})`);
      expect(x.stderr.trim().split('\n').length, x.stderr).toBe(1);
      expect(x.stderr).not.toMatch(/\n\s+at /);
      expect(x.stdout).toBe('');
      expect(fs.existsSync(target)).toBe(false);
      expect(fs.readdirSync(dir).filter((n) => n.includes('refused'))).toEqual([]);
      return x.stderr;
    };
    const iso = (ms: number) => new Date(ms).toISOString();
    // Inside the gap the crash left: its middle and both its edges.
    for (const at of [Math.floor((t1.to! + t2.from!) / 2), t1.to! + 1, t2.from! - 1]) {
      expect(await refused(['--at', iso(at)], 'MOMENT_NOT_RESTORABLE', 3)).toMatch(/gap.*restorable windows: /);
    }
    expect(await refused(['--at', iso(t1.from! - 1)], 'MOMENT_NOT_RESTORABLE', 3)).toMatch(/before the first base/);
    expect(await refused(['--at', iso(Date.now() + 3_600_000)], 'INVALID_ARGUMENT', 2)).toMatch(/in the future/);
    expect(await refused(['--at', 'yesterday'], 'INVALID_ARGUMENT', 2)).toMatch(/not a moment/);
    expect(await refused(['--at', 'yesterday'], 'INVALID_ARGUMENT', 2, true)).toMatch(/not a moment/);
    expect(await refused([t2.bases[0]!.backup, '--at', iso(t2.to!)], 'INVALID_ARGUMENT', 2)).toMatch(/not both/);
    // A target that exists (empty) is left as it was.
    fs.mkdirSync(target);
    const x = await runCli(['backup', 'restore', '--at', iso(Math.floor((t1.to! + t2.from!) / 2)), '--repo', repoDir, '--to', target]);
    expect(x.code).toBe(3);
    expect(fs.readdirSync(target)).toEqual([]);
    expect(fs.readdirSync(dir).filter((n) => n.includes('refused'))).toEqual(['refused']);
    fs.rmdirSync(target);
    // Control: the same target and a moment inside a window restore fine.
    await cliRestore(t2.to!, 'refused');
  }, 120_000);
});
