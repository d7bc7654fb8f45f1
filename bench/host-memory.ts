import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { envNumber } from './env-number.js';
import { startExampleNode } from './example-node.js';
import { goalTable, type GoalRow } from './goal-table.js';
import { progress } from './progress.js';
import { cpuSecondsOf, statFields } from './proc-stat.js';

/**
 * What the agent's backups cost the host's memory over a long steady run (issue 22): the example node
 * at 800 writes/s with a checkpoint every 20 s, first without backups (`--backup-repo none`), then
 * with them as a new user would run it: the default repository, the log archive (merging on), a
 * promotion every minute (`--promote-min-interval 60s`) and `node-admin backup prune` every 5 minutes.
 * The node's anonymous RSS (RssAnon: heaps, buffers, glibc's arenas; not the pages of LevelDB's mapped
 * tables, which the kernel drops at will) is sampled every 5 s. Prints the peak of each run, the
 * difference, and the trend of the run with backups: the slope of a least-squares line through the
 * samples of its second half (the first half holds the warm-up: the first merges, the first prune).
 *
 * Goals: the difference at most 64 MiB; a trend under 1 MiB a minute (a leak of a few hundred bytes a
 * write would show there). Also the node's CPU over each run.
 *
 * The node runs as shipped: with the settings of the systemd unit and `npm start` (SHIPPED_NODE).
 * BENCH_MEMORY_SETTINGS=young-capped adds a cap on V8's young generation, =default runs with neither.
 *
 * Duration of each run: BENCH_MEMORY_MINUTES (default 15; the two runs one after the other).
 * Standalone: node dist/bench/host-memory.js
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const NODE_SCRIPT = path.join(ROOT, 'dist', 'agent', 'example-node', 'main.cjs');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.cjs');
const MiB = 2 ** 20;
const SAMPLE_MS = 5000;
const PRUNE_EVERY_MS = 5 * 60_000;
const DIFF_GOAL_BYTES = 64 * MiB;
const TREND_GOAL_BYTES_PER_MIN = 1 * MiB;

/** How a run starts the node: environment variables added, and Node's own options. */
export interface NodeSettings {
  env: Record<string, string>;
  nodeArgs: string[];
}

/**
 * The settings the shipped unit (systemd/node-admin-example.service) and `npm start` give the example
 * node (test/shipped-node-settings.test.ts holds both to these): glibc's mmap threshold fixed at its
 * initial 128 KiB. Unset, glibc raises it after the process frees a large block (up to 32 MiB, and its
 * trim threshold to twice that), and from then on keeps what was freed below it in its heaps: tens of
 * MiB held for nothing (docs/benchmarks.md, "Memory in the host").
 */
export const SHIPPED_NODE: NodeSettings = { env: { MALLOC_MMAP_THRESHOLD_: '131072' }, nodeArgs: [] };

/**
 * BENCH_MEMORY_SETTINGS: shipped; young-capped (shipped, and V8's young generation capped at 2 x 2 MiB:
 * measured, not shipped, docs/benchmarks.md "V8's young generation"); default (glibc's and V8's own).
 */
export function memorySettings(name: string): NodeSettings {
  if (name === 'shipped') return SHIPPED_NODE;
  if (name === 'young-capped') return { env: SHIPPED_NODE.env, nodeArgs: [...SHIPPED_NODE.nodeArgs, '--max-semi-space-size=2'] };
  if (name === 'default') return { env: {}, nodeArgs: [] };
  throw new Error(`BENCH_MEMORY_SETTINGS: "${name}" is none of shipped, young-capped, default`);
}

export interface MemoryRun {
  /** [seconds since start, RssAnon bytes] every SAMPLE_MS. */
  samples: [number, number][];
  /** The node's CPU over the run (user + system, every thread), % of one core. */
  cpuPercent: number;
  peak: number;
  /** Least-squares slope over the second half, bytes per minute. */
  trendPerMinute: number;
  prunes: number;
}

/** One run of the example node for `minutes`, its anonymous RSS sampled; `backups`: with them, as described above. */
export async function measureHostMemory(work: string, minutes: number, backups: boolean, settings: NodeSettings = SHIPPED_NODE): Promise<MemoryRun> {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const dataDir = path.join(work, 'node');
  const socketDir = path.join(work, 'run');
  fs.mkdirSync(socketDir, { mode: 0o700 });
  const socket = path.join(socketDir, 'admin.sock');
  const flags = ['--load', '800', '--checkpoint-interval', '20s'];
  const node = await startExampleNode(
    NODE_SCRIPT,
    dataDir,
    socket,
    backups ? [...flags, '--log-archive', 'on', '--promote-min-interval', '60s'] : [...flags, '--backup-repo', 'none'],
    settings.env,
    settings.nodeArgs,
  );
  const killOnExit = () => node.killNow();
  process.once('exit', killOnExit);
  const samples: [number, number][] = [];
  let prunes = 0;
  let cpuPercent = 0;
  try {
    const started = Date.now();
    const cpu0 = cpuSeconds(node.pid);
    const end = started + minutes * 60_000;
    let nextPrune = started + PRUNE_EVERY_MS;
    while (Date.now() < end) {
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
      samples.push([(Date.now() - started) / 1000, rssAnon(node.pid)]);
      if (backups && Date.now() >= nextPrune) {
        nextPrune += PRUNE_EVERY_MS;
        const r = await run(process.execPath, [CLI, 'backup', 'prune', '--json', '--socket', socket]);
        if (r.code !== 0) throw new Error(`node-admin backup prune failed (${r.code}): ${r.stderr.trim()}`);
        prunes++;
      }
    }
    cpuPercent = ((cpuSeconds(node.pid) - cpu0) / ((Date.now() - started) / 1000)) * 100;
  } finally {
    await node.stop();
    process.off('exit', killOnExit);
    fs.rmSync(work, { recursive: true, force: true });
  }
  const half = samples.slice(Math.floor(samples.length / 2));
  return { samples, cpuPercent, peak: Math.max(...samples.map((s) => s[1])), trendPerMinute: slope(half) * 60, prunes };
}

/** A process's CPU so far (user + system, every thread). */
function cpuSeconds(pid: number): number {
  const fields = statFields(`/proc/${pid}/stat`);
  if (!fields) throw new Error(`cannot read /proc/${pid}/stat`);
  return cpuSecondsOf(fields);
}

/** Least-squares slope of y over x (bytes per second). */
export function slope(points: readonly [number, number][]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function rssAnon(pid: number): number {
  const m = /^RssAnon:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no RssAnon in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const mib = (b: number) => `${(b / MiB).toFixed(1)} MiB`;

/** "as shipped (MALLOC_MMAP_THRESHOLD_=131072)", and the like. */
export function describeSettings(name: string, settings: NodeSettings): string {
  const parts = [...Object.entries(settings.env).map(([k, v]) => `${k}=${v}`), ...(settings.nodeArgs.length > 0 ? [`node ${settings.nodeArgs.join(' ')}`] : [])];
  const what = parts.length > 0 ? parts.join(', ') : "glibc's and V8's defaults";
  return name === 'shipped' ? `as shipped (${what})` : `settings "${name}" (${what})`;
}

/** The bench's rows from the two runs. */
export function hostMemoryRows(without: MemoryRun, withBackups: MemoryRun, minutes: number, settings: string): GoalRow[] {
  const diff = withBackups.peak - without.peak;
  return [
    {
      metric: `example node (${settings}), 800 writes/s, checkpoints every 20 s, ${minutes} min: peak anonymous RSS without backups / with them (log archive, promotions every 60 s, prune every 5 min)`,
      value: `${mib(without.peak)} / ${mib(withBackups.peak)}`,
      goal: '-',
      met: null,
    },
    { metric: 'peak anonymous RSS with backups, above the same node without', value: mib(diff), goal: `<= ${mib(DIFF_GOAL_BYTES)}`, met: diff <= DIFF_GOAL_BYTES },
    { metric: "the node's CPU over each run, % of one core: without backups / with them", value: `${without.cpuPercent.toFixed(1)}% / ${withBackups.cpuPercent.toFixed(1)}%`, goal: '-', met: null },
    {
      metric: 'trend with backups: slope of a linear fit over the second half',
      value: `${(withBackups.trendPerMinute / MiB).toFixed(2)} MiB/min (without backups ${(without.trendPerMinute / MiB).toFixed(2)})`,
      goal: `< ${(TREND_GOAL_BYTES_PER_MIN / MiB).toFixed(0)} MiB/min`,
      met: withBackups.trendPerMinute < TREND_GOAL_BYTES_PER_MIN,
    },
  ];
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const minutes = envNumber('BENCH_MEMORY_MINUTES', 15, false);
  const name = process.env.BENCH_MEMORY_SETTINGS ?? 'shipped';
  const settings = memorySettings(name);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'node-admin-host-memory-'));
  (async () => {
    progress(`host memory: the example node without backups, ${minutes} min, ${describeSettings(name, settings)}`);
    const without = await measureHostMemory(path.join(work, 'without'), minutes, false, settings);
    progress(`  peak anonymous RSS ${mib(without.peak)}`);
    progress(`host memory: the example node with backups, ${minutes} min`);
    const withBackups = await measureHostMemory(path.join(work, 'with'), minutes, true, settings);
    progress(`  peak anonymous RSS ${mib(withBackups.peak)}, ${withBackups.prunes} prunes; samples (s: MiB): ${withBackups.samples.filter((_, i) => i % 12 === 11).map(([t, b]) => `${Math.round(t)}: ${Math.round(b / MiB)}`).join(', ')}`);
    process.stdout.write(goalTable('Memory in the host (issue 22): what the agent\'s backups add to the node\'s anonymous RSS', hostMemoryRows(without, withBackups, minutes, describeSettings(name, settings))));
  })().then(
    () => fs.rmSync(work, { recursive: true, force: true }),
    (err: unknown) => {
      process.stderr.write(`host-memory failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
