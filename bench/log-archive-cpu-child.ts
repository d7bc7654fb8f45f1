import '../shared/threadpool.js'; // as the example node does: the archiver shares libuv's pool with classic-level
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent } from '../agent/index.js';
import { openStorage } from '../agent/storage/open-storage.js';
import { indexerWrites, load, untilFirstBase } from './log-archive-load.js';
import { threadCpuSeconds } from './proc-stat.js';

/**
 * One side of the log archive bench's CPU pairs (log-archive-cpu-pairs.ts), as a process of its own: a
 * database and an agent, archiving (`archive`) or not (`plain`), that runs the load each time its parent
 * says so and answers with what it cost. A process each, so that neither side's window carries the
 * other's work: in one process, both agents' garbage, LevelDB's one compaction thread and libuv's pool
 * are shared, and the same load without archiving measured 17.2 % of a core in the first window and
 * 25.1-27.2 % in the later ones (one run, 2026-12-07).
 *
 *   node dist/bench/log-archive-cpu-child.js '<json: ChildArgs>'   (forked with an IPC channel)
 *
 * Messages: it sends {ready: true} once warmed up; on {run: true} it runs the load and sends a
 * ChildWindow; on {after: true} it sends a ChildAfter (what it used since its last window ended); on
 * {stop: true} it stops its agent and exits.
 */

export interface ChildArgs {
  mode: 'plain' | 'archive';
  dir: string;
  passwordFile: string;
  rate: number;
  seconds: number;
  /** Keys and values per write (the bench's WRITE_BYTES: both sides and the bench's own windows write alike). */
  writeBytes: number;
  warmUpSeconds: number;
}

/** What one window cost, as the child measured it. */
export interface ChildWindow {
  cpuPercent: number;
  /** How long the window ran, s. */
  seconds: number;
  /** % of one core: the main thread; the threads alive before the agent started (V8's, libuv's pool); the ones started since (the agent's workers, LevelDB's compaction thread). */
  threads: { main: number; node: number; started: number };
  p50: number;
  p99: number;
  rate: number;
}

/**
 * The process's CPU (user + system, every thread) from the end of its last window until asked: its idle
 * time, while the other side runs. What a window's writes leave for later is in it: the archive merges
 * a finished minute's segments once a minute, and that merge lands inside a window or after it as the
 * minute falls (2026-12-07: the minute's bulk, 40-46 segments, fell in the idle minute in one run and
 * in the windows in the next).
 */
export interface ChildAfter {
  cpuSeconds: number;
  seconds: number;
}

async function main(): Promise<void> {
  const a = JSON.parse(process.argv[2] ?? '') as ChildArgs;
  const send = (m: unknown) => process.send!(m);
  const writes = indexerWrites(1, Math.round(a.rate * a.seconds), a.writeBytes);
  const dbPath = path.join(a.dir, 'db');
  const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  const nodeThreads = new Set(threadCpuSeconds().keys());
  const repository = pathToFileURL(path.join(a.dir, 'repo')).href;
  const agent = createAgent({
    dbPath,
    checkpointDir: path.join(a.dir, 'checkpoints'),
    retention: { keepLast: 5 },
    backup: { repository, password: { file: a.passwordFile }, ...(a.mode === 'archive' ? { logArchive: { intervalMs: 1000 } } : {}) },
    logger: pino({ level: 'silent' }),
  });
  await agent.start();
  if (a.mode === 'archive') {
    const storage = await openStorage(repository, {});
    await untilFirstBase(storage, 60_000);
    await storage.close();
  }
  await load(db, writes, a.rate, a.warmUpSeconds, () => {});
  let ended: { cpu: NodeJS.CpuUsage; at: number } | null = null;
  process.on('message', (m: { run?: true; after?: true; stop?: true }) => {
    void (async () => {
      if (m.run) {
        // Unobserved: the RPO's windows sample the status every 10 ms (a files-worker call each, and
        // the open log's fstat with archiving), a cost no node pays and that would weigh on both sides.
        const r = await load(db, writes, a.rate, a.seconds, () => {});
        ended = { cpu: process.cpuUsage(), at: performance.now() };
        const threads = { main: 0, node: 0, started: 0 };
        for (const [tid, pct] of r.threadCpuPercent) threads[tid === process.pid ? 'main' : nodeThreads.has(tid) ? 'node' : 'started'] += pct;
        const window: ChildWindow = { cpuPercent: r.cpuPercent, seconds: r.seconds, threads, p50: r.latency.p50, p99: r.latency.p99, rate: r.rate };
        send(window);
      } else if (m.after) {
        if (!ended) throw new Error('asked for the time after a window before any window ran');
        const used = process.cpuUsage(ended.cpu);
        const after: ChildAfter = { cpuSeconds: (used.user + used.system) / 1e6, seconds: (performance.now() - ended.at) / 1000 };
        send(after);
      } else if (m.stop) {
        await agent.stop();
        await db.close();
        process.disconnect();
      }
    })().catch((err: unknown) => {
      process.stderr.write(`log archive cpu child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    });
  });
  send({ ready: true });
}

main().catch((err: unknown) => {
  process.stderr.write(`log archive cpu child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
