import '../shared/threadpool.js'; // as the example node does: the agent shares libuv's pool with classic-level
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { createAgent, type Agent } from '../agent/index.js';
import { cloneDbSync } from '../agent/checkpoint/checkpoint-dir.js';
import type { BackupPace } from '../shared/api.js';
import { ROOT } from './backup-bench-config.js';
import { benchPasswordFile } from './bench-password.js';
import { benchKey, openBenchDb, prepareBenchDb, type BenchLevel } from './bench-db.js';
import { dropPageCache } from './backup-timed.js';
import { envNumber } from './env-number.js';
import { goalTable, type GoalRow } from './goal-table.js';
import { progress, sleep } from './progress.js';
import { median, summarize } from './stats.js';
import { cpuSecondsOf, statFields } from './proc-stat.js';
import { ThreadCensus } from './thread-census.js';

/**
 * Where a backup's cost to the node goes (issue 22, item 1): the node's process hosts the agent, so a
 * backup competes with the node's own reads for the event loop, libuv's thread pool, the disk and the
 * page cache. This bench runs the agent in its own process beside the benchmark's database, as the
 * example node does, and measures each of those over a quiet window and over a backup, side by side:
 *
 *   - KV GET latency (random existing keys): one at a time, and an open-loop rate
 *     (BENCH_BREAKDOWN_GET_RATE, 2000/s; latency counted from each GET's due time, so that a stall
 *     counts for every GET it delayed);
 *   - the event loop: how late a 10 ms timer runs (monitorEventLoopDelay), and the main thread's CPU
 *     (its /proc/self/task/<pid>/stat) against every other thread's (libuv's pool, the agent's worker
 *     threads, V8's helpers), and how long each side was runnable but waiting for a core (schedstat);
 *   - libuv's pool: the latency of an fs.stat every 10 ms (it runs on the pool: its wait is the pool's
 *     queue), and how many of the process's other threads (the pool's, the workers') are running or in
 *     uninterruptible (disk) sleep, from a census of /proc/self/task every 10 ms (in a thread of its
 *     own, thread-census.ts: not the main thread's time);
 *   - the disk: /proc/diskstats of the database's device (MB/s read and written, utilization, average
 *     queue, average read wait);
 *   - the page cache: how much of the database's tables is resident (fincore) after each window.
 *
 * Rounds: for each GET mode, the quiet window then BENCH_BREAKDOWN_BACKUPS (3) full backups one after
 * the other, each of a fresh checkpoint into a fresh encrypted repository (file://, beside the
 * database), at each pace of BENCH_BREAKDOWN_PACES (auto,max) in turn, BENCH_BREAKDOWN_ROUNDS (3) times;
 * the page cache dropped before each window. Every figure of the first round is printed, each round's
 * GET ratios and times, and the goals from the medians. Several backups a window because one 1 GiB
 * backup lasts 2-4 s here: a round's p99 was then a few dozen GETs, and the rounds' spread larger than
 * any change measured with it (2026-12-06).
 *
 *   npm run bench:breakdown    (BENCH_DIR, BENCH_DB_GB (1), BENCH_BREAKDOWN_QUIET_S (10), BENCH_BREAKDOWN_ROUNDS (3),
 *                               BENCH_BREAKDOWN_BACKUPS (3))
 */

const TICK_MS = 10;

interface WindowFigures {
  seconds: number;
  gets: { n: number; p50: number; p99: number };
  loop: { p50: number; p99: number; max: number };
  cpu: { main: number; others: number };
  /** Time spent runnable but waiting for a core (schedstat), ms per second: the main thread, the others together. */
  runWait: { main: number; others: number };
  pool: { p50: number; p99: number };
  threads: { running: number; diskWait: number };
  disk: { readMBps: number; writeMBps: number; utilPercent: number; queue: number; readAwaitMs: number } | null;
  residentMiB: number;
}

async function main(): Promise<void> {
  const benchDir = path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench'));
  const gb = envNumber('BENCH_DB_GB', 1, false);
  const quietS = envNumber('BENCH_BREAKDOWN_QUIET_S', 10, false);
  const rate = envNumber('BENCH_BREAKDOWN_GET_RATE', 2000, true);
  const paces = (process.env.BENCH_BREAKDOWN_PACES ?? 'auto,max').split(',').map(parsePace);
  const rounds = envNumber('BENCH_BREAKDOWN_ROUNDS', 3, true);
  const backups = envNumber('BENCH_BREAKDOWN_BACKUPS', 3, true);
  const info = await prepareBenchDb(path.join(benchDir, 'data'), Math.round(gb * 2 ** 30), false);
  const work = path.join(benchDir, 'breakdown');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const dbPath = path.join(work, 'db');
  cloneDbSync(info.dbPath, dbPath); // tables hard-linked: nothing here changes the bench's database
  if (!dropPageCache()) progress('breakdown: cannot drop the page cache (not root?): windows start warm');
  const device = deviceOf(dbPath);
  const db = openBenchDb(dbPath);
  await db.open();
  // The clone compacted whole first (into new tables: the bench's database keeps its own). Its tables
  // otherwise overlap across levels, and the random GETs start LevelDB's seek compactions, at random
  // times, in either window: a core's worth of compaction and 100 MB/s of writes in one quiet window
  // of a run (2026-12-07). After a full compaction a GET reads one table, and nothing starts one.
  const compacting = performance.now();
  await db.compactRange(benchKey(0), benchKey(info.keyCount));
  progress(`breakdown: the clone compacted in ${((performance.now() - compacting) / 1000).toFixed(1)} s`);
  const lines: string[] = [];
  const goals: GoalRow[] = [];
  const census = new ThreadCensus(TICK_MS);
  try {
    await census.ready();
    for (const mode of ['one at a time', `${rate}/s`] as const) {
      const getLoad = mode === 'one at a time' ? serialGets : openLoopGets(rate);
      const byPace = new Map<string, Pair[]>();
      // Rounds of every pace in turn (not all of one pace, then the next): drift in the machine's load
      // falls on every pace alike.
      for (let r = 1; r <= rounds; r++) for (const pace of paces) {
        const label = typeof pace === 'string' ? pace : `${pace.bytesPerSecond / 1e6} MB/s`;
        const round = path.join(work, `round-${label.replace(/\W+/g, '_')}`);
        fs.mkdirSync(round);
        // An agent a backup, each with its own repository and checkpoint, all started and checkpointed
        // before the windows: each backup in the window is a full one (a second backup into one
        // repository would find every file already stored), and no agent's start falls in a window.
        const agents: Agent[] = [];
        try {
          const ready: { agent: Agent; checkpointId: string }[] = [];
          for (let b = 0; b < backups; b++) {
            const agent = createAgent({
              dbPath,
              checkpointDir: path.join(round, `checkpoints-${b}`),
              // No log archive: its base backup would run in the quiet window (it has its own bench).
              backup: { repository: pathToFileURL(path.join(round, `repo-${b}`)).href, password: { file: benchPasswordFile(benchDir) }, pace, logArchive: null },
              logger: pino({ level: 'silent' }),
            });
            agents.push(agent);
            await agent.start();
            ready.push({ agent, checkpointId: (await agent.createCheckpoint({ label: 'breakdown' })).id });
          }
          progress(`breakdown: GETs ${mode}, pace ${label}, round ${r} of ${rounds}: ${quietS} s quiet`);
          dropPageCache();
          const quiet = await measure(db, info.keyCount, dbPath, device, census, getLoad, () => sleep(quietS * 1000));
          progress(`breakdown: GETs ${mode}, pace ${label}: ${backups} full backup${backups === 1 ? '' : 's'}, one after the other`);
          dropPageCache();
          const during = await measure(db, info.keyCount, dbPath, device, census, getLoad, async () => {
            for (const { agent, checkpointId } of ready) await agent.createBackup({ checkpointId });
          });
          // Every figure of the first round; the others' GET ratios and times in the summary below.
          if (r === 1) lines.push(...report(`GETs ${mode}, pace ${label}`, quiet, during, backups));
          byPace.set(label, [...(byPace.get(label) ?? []), { quiet, during }]);
        } finally {
          for (const agent of agents) await agent.stop();
          fs.rmSync(round, { recursive: true, force: true });
        }
      }
      for (const [label, pairs] of byPace) lines.push(roundsLine(`GETs ${mode}, pace ${label}`, pairs));
      lines.push('');
      goals.push(...paceGoals(mode, byPace.get('auto'), byPace.get('max')));
    }
  } finally {
    await census.stop();
    await db.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(
    `\nWhere a backup's cost to the node goes: ${(info.bytes / 2 ** 30).toFixed(2)} GiB database, encrypted file:// repository on the same disk ` +
      `(Node ${process.version}, ${os.cpus().length} cores, UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE}; load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')})\n\n` +
      lines.join('\n') +
      '\n' +
      (goals.length > 0 ? goalTable("Issue 22's goals for the default pace (auto), from the rounds above", goals) : ''),
  );
}

/** A quiet window and the backup window after it, one round of one pace. */
interface Pair {
  quiet: WindowFigures;
  during: WindowFigures;
}

const ratioP50 = (p: Pair) => p.during.gets.p50 / p.quiet.gets.p50;
const ratioP99 = (p: Pair) => p.during.gets.p99 / p.quiet.gets.p99;

/** Each round's GET ratios and backup time, one line, so that the spread between rounds is in sight. */
function roundsLine(title: string, pairs: readonly Pair[]): string {
  const each = pairs.map((p) => `${ratioP50(p).toFixed(2)}x / ${ratioP99(p).toFixed(2)}x in ${p.during.seconds.toFixed(1)} s`).join('; ');
  return `${title}: GET p50 / p99 during / quiet, and the backups' time, by round: ${each}`;
}

/**
 * Issue 22's goals: during a backup at the default pace, KV GET p50 <= 1.5x and p99 <= 2x quiet, in <=
 * 2x max's time. Medians over the rounds (each ratio within its own round), the rounds' range beside.
 */
function paceGoals(mode: string, auto: readonly Pair[] | undefined, max: readonly Pair[] | undefined): GoalRow[] {
  if (!auto || auto.length === 0) return [];
  const range = (v: number[]) => (v.length > 1 ? ` (rounds ${Math.min(...v).toFixed(2)}-${Math.max(...v).toFixed(2)}x)` : '');
  const p50s = auto.map(ratioP50);
  const p99s = auto.map(ratioP99);
  const p50 = median(p50s);
  const p99 = median(p99s);
  const rows: GoalRow[] = [
    { metric: `KV GET (${mode}) p50 during a backup at pace auto / quiet, median of ${auto.length}`, value: `${p50.toFixed(2)}x${range(p50s)}`, goal: '<= 1.5x', met: p50 <= 1.5 },
    { metric: `KV GET (${mode}) p99 during a backup at pace auto / quiet, median of ${auto.length}`, value: `${p99.toFixed(2)}x${range(p99s)}`, goal: '<= 2x', met: p99 <= 2 },
  ];
  if (max && max.length > 0) {
    const ta = median(auto.map((p) => p.during.seconds));
    const tm = median(max.map((p) => p.during.seconds));
    rows.push({ metric: `backup time at pace auto / max (GETs ${mode}), medians`, value: `${(ta / tm).toFixed(2)}x (${ta.toFixed(1)} / ${tm.toFixed(1)} s)`, goal: '<= 2x', met: ta / tm <= 2 });
  }
  return rows;
}

function parsePace(s: string): BackupPace {
  if (s === 'auto' || s === 'max') return s;
  const mb = Number(s);
  if (!(mb > 0)) throw new Error(`BENCH_BREAKDOWN_PACES: "${s}" is neither auto, max nor MB/s`);
  return { bytesPerSecond: mb * 1e6 };
}

type GetLoad = (db: BenchLevel, keyCount: number, running: () => boolean) => Promise<number[]>;

/** GETs one at a time: each one's own latency. */
const serialGets: GetLoad = async (db, keyCount, running) => {
  const out: number[] = [];
  while (running()) {
    const t0 = performance.now();
    await db.get(benchKey(Math.floor(Math.random() * keyCount)));
    out.push(performance.now() - t0);
  }
  return out;
};

/** GETs at `rate` a second whatever the answers do, each timed from when it was due. */
function openLoopGets(rate: number): GetLoad {
  return async (db, keyCount, running) => {
    const out: number[] = [];
    const inFlight = new Set<Promise<void>>();
    const t0 = performance.now();
    for (let i = 0; running(); i++) {
      const due = t0 + (i * 1000) / rate;
      const ahead = due - performance.now();
      if (ahead >= 1) await sleep(Math.floor(ahead));
      const from = Math.min(due, performance.now()); // a GET sent early (timers are coarse) counts from when it went
      const p: Promise<void> = db.get(benchKey(Math.floor(Math.random() * keyCount))).then(() => {
        out.push(performance.now() - from);
        inFlight.delete(p);
      });
      inFlight.add(p);
    }
    await Promise.all(inFlight);
    return out;
  };
}

async function measure(db: BenchLevel, keyCount: number, dbPath: string, device: string | null, census: ThreadCensus, getLoad: GetLoad, work: () => Promise<unknown>): Promise<WindowFigures> {
  let running = true;
  const loop = monitorEventLoopDelay({ resolution: TICK_MS });
  const pool: number[] = [];
  const probeFile = path.join(dbPath, 'CURRENT');
  const probes = (async () => {
    while (running) {
      const t0 = performance.now();
      await fs.promises.stat(probeFile);
      pool.push(performance.now() - t0);
      await sleep(TICK_MS);
    }
  })();
  const census0 = census.snapshot();
  const disk0 = device ? diskStats(device) : null;
  const cpu0 = threadCpu(census.tid);
  loop.enable();
  const t0 = performance.now();
  const gets = getLoad(db, keyCount, () => running);
  await work();
  const seconds = (performance.now() - t0) / 1000;
  running = false;
  loop.disable();
  const cpu1 = threadCpu(census.tid);
  const census1 = census.snapshot();
  const samples = Math.max(1, census1.samples - census0.samples);
  const disk1 = device ? diskStats(device) : null;
  const [latencies] = await Promise.all([gets, probes]);
  const g = summarize(latencies);
  const p = summarize(pool);
  const late = (ns: number) => Math.max(0, ns / 1e6 - TICK_MS);
  return {
    seconds,
    gets: { n: g.n, p50: g.p50, p99: g.p99 },
    loop: { p50: late(loop.percentile(50)), p99: late(loop.percentile(99)), max: late(loop.max) },
    cpu: { main: ((cpu1.main - cpu0.main) / seconds) * 100, others: ((cpu1.others - cpu0.others) / seconds) * 100 },
    runWait: { main: (cpu1.mainWaitMs - cpu0.mainWaitMs) / seconds, others: (cpu1.othersWaitMs - cpu0.othersWaitMs) / seconds },
    pool: { p50: p.p50, p99: p.p99 },
    threads: { running: (census1.running - census0.running) / samples, diskWait: (census1.diskWait - census0.diskWait) / samples },
    disk: disk0 && disk1 ? diskRates(disk0, disk1, seconds) : null,
    residentMiB: residentBytes(dbPath) / 2 ** 20,
  };
}

/**
 * CPU seconds so far, and ms spent runnable but waiting for a core (schedstat's second field): this
 * process's main thread, and every other thread together. A thread that ended between two readings
 * takes its figures with it (the agent's threads live as long as the backup: read within one).
 */
function threadCpu(censusTid: number): { main: number; others: number; mainWaitMs: number; othersWaitMs: number } {
  let main = 0;
  let others = 0;
  let mainWaitMs = 0;
  let othersWaitMs = 0;
  for (const tid of fs.readdirSync('/proc/self/task')) {
    if (Number(tid) === censusTid) continue; // the bench's own
    const f = statFields(`/proc/self/task/${tid}/stat`);
    if (!f) continue;
    const s = cpuSecondsOf(f);
    const wait = runQueueWaitMs(tid);
    if (Number(tid) === process.pid) {
      main += s;
      mainWaitMs += wait;
    } else {
      others += s;
      othersWaitMs += wait;
    }
  }
  return { main, others, mainWaitMs, othersWaitMs };
}

/** A thread's time runnable but not running (ns in /proc/.../schedstat's second field), in ms; 0 where unreadable. */
function runQueueWaitMs(tid: string): number {
  try {
    const wait = Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[1]);
    return Number.isFinite(wait) ? wait / 1e6 : 0;
  } catch {
    return 0;
  }
}

/** The /proc/diskstats name of the block device holding `file`, or null (not a plain block device). */
function deviceOf(file: string): string | null {
  const dev = fs.statSync(file).dev;
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | ((Math.floor(dev / 4096) & 0xfff00));
  for (const line of fs.readFileSync('/proc/diskstats', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (Number(f[0]) === major && Number(f[1]) === minor) return f[2] ?? null;
  }
  return null;
}

interface DiskCounters {
  reads: number;
  sectorsRead: number;
  msReading: number;
  sectorsWritten: number;
  msIo: number;
  msWeighted: number;
}

function diskStats(device: string): DiskCounters {
  for (const line of fs.readFileSync('/proc/diskstats', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/).map(Number);
    if (line.trim().split(/\s+/)[2] !== device) continue;
    return { reads: f[3]!, sectorsRead: f[5]!, msReading: f[6]!, sectorsWritten: f[9]!, msIo: f[12]!, msWeighted: f[13]! };
  }
  throw new Error(`${device} is not in /proc/diskstats`);
}

function diskRates(a: DiskCounters, b: DiskCounters, seconds: number): NonNullable<WindowFigures['disk']> {
  const reads = b.reads - a.reads;
  return {
    readMBps: ((b.sectorsRead - a.sectorsRead) * 512) / 1e6 / seconds,
    writeMBps: ((b.sectorsWritten - a.sectorsWritten) * 512) / 1e6 / seconds,
    utilPercent: ((b.msIo - a.msIo) / (seconds * 1000)) * 100,
    queue: (b.msWeighted - a.msWeighted) / (seconds * 1000),
    readAwaitMs: reads > 0 ? (b.msReading - a.msReading) / reads : 0,
  };
}

/** Bytes of the database's tables in the page cache (util-linux fincore); 0 where fincore is missing. */
function residentBytes(dbPath: string): number {
  const tables = fs.readdirSync(dbPath).filter((n) => /\.(ldb|sst)$/.test(n)).map((n) => path.join(dbPath, n));
  let total = 0;
  for (let i = 0; i < tables.length; i += 500) {
    let out: string;
    try {
      out = execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', ...tables.slice(i, i + 500)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch (err) {
      // A table compacted away since the listing (the GETs' seeks start compactions): fincore names it
      // and exits 1 after the lines of the others, which count. (It read 0 MiB for the window before.)
      const partial = (err as { stdout?: unknown }).stdout;
      if (typeof partial !== 'string' || partial === '') return 0;
      out = partial;
    }
    for (const line of out.split('\n')) if (line.trim()) total += Number(line.trim());
  }
  return total;
}

function report(title: string, quiet: WindowFigures, during: WindowFigures, backups: number): string[] {
  const x = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}x` : '-');
  const ms = (v: number) => `${v < 10 ? v.toFixed(3) : v.toFixed(1)} ms`;
  const rows: [string, string, string, string][] = [
    ['window', `${quiet.seconds.toFixed(1)} s`, `${during.seconds.toFixed(1)} s (${backups === 1 ? 'the backup' : `${backups} backups`})`, ''],
    ['KV GET p50 / p99', `${ms(quiet.gets.p50)} / ${ms(quiet.gets.p99)}`, `${ms(during.gets.p50)} / ${ms(during.gets.p99)}`, `${x(during.gets.p50, quiet.gets.p50)} / ${x(during.gets.p99, quiet.gets.p99)}`],
    ['GETs served a second', (quiet.gets.n / quiet.seconds).toFixed(0), (during.gets.n / during.seconds).toFixed(0), x(during.gets.n / during.seconds, quiet.gets.n / quiet.seconds)],
    ['event loop late, p50 / p99 / max', `${ms(quiet.loop.p50)} / ${ms(quiet.loop.p99)} / ${ms(quiet.loop.max)}`, `${ms(during.loop.p50)} / ${ms(during.loop.p99)} / ${ms(during.loop.max)}`, x(during.loop.p99, quiet.loop.p99)],
    ['CPU: main thread (the event loop) / all other threads, % of a core', `${quiet.cpu.main.toFixed(0)} / ${quiet.cpu.others.toFixed(0)}`, `${during.cpu.main.toFixed(0)} / ${during.cpu.others.toFixed(0)}`, ''],
    ['waiting for a core, ms a second: main thread / all other threads', `${quiet.runWait.main.toFixed(1)} / ${quiet.runWait.others.toFixed(1)}`, `${during.runWait.main.toFixed(1)} / ${during.runWait.others.toFixed(1)}`, ''],
    ['other threads running / in disk wait (census, mean)', `${quiet.threads.running.toFixed(2)} / ${quiet.threads.diskWait.toFixed(2)}`, `${during.threads.running.toFixed(2)} / ${during.threads.diskWait.toFixed(2)}`, ''],
    ["libuv pool: an fs.stat's latency p50 / p99 (its queue)", `${ms(quiet.pool.p50)} / ${ms(quiet.pool.p99)}`, `${ms(during.pool.p50)} / ${ms(during.pool.p99)}`, x(during.pool.p99, quiet.pool.p99)],
    [
      'disk: read / write MB/s, utilization, queue, read wait',
      disk(quiet.disk),
      disk(during.disk),
      '',
    ],
    ["page cache: the tables' resident MiB after the window", quiet.residentMiB.toFixed(0), during.residentMiB.toFixed(0), ''],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length), 'quiet'.length);
  const w2 = Math.max(...rows.map((r) => r[2].length), 'during a backup'.length);
  const line = (r: readonly string[]) => `  ${r[0]!.padEnd(w0)}  ${r[1]!.padEnd(w1)}  ${r[2]!.padEnd(w2)}  ${r[3]}`.trimEnd();
  return [title, line(['', 'quiet', 'during a backup', 'during / quiet']), ...rows.map(line), ''];
}

function disk(d: WindowFigures['disk']): string {
  return d ? `${d.readMBps.toFixed(0)} / ${d.writeMBps.toFixed(0)}, ${d.utilPercent.toFixed(0)}%, ${d.queue.toFixed(2)}, ${d.readAwaitMs.toFixed(2)} ms` : '- (not a block device)';
}

main().catch((err: unknown) => {
  process.stderr.write(`breakdown bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
