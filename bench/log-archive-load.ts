import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { ClassicLevel } from 'classic-level';
import type { Agent } from '../agent/index.js';
import { readWindows } from '../agent/log-archive/restore-to-moment.js';
import type { Storage } from '../agent/storage/storage.js';
import { IndexerRecords, type IndexerOp } from './indexer-records.js';
import { threadCpuSeconds } from './proc-stat.js';
import { sleep } from './progress.js';
import { summarize, type Summary } from './stats.js';

/**
 * The log archive bench's load and its observers (log-archive-bench.ts, and its replica rounds in
 * log-archive-replica-rounds.ts): the writes, made before a run; a paced load of them; the agent's
 * shipments sampled as they happen; and each write's lag to where a sample first saw it stored.
 */

const LOOP_TICK_MS = 10;
export interface LoadResult {
  /** Per write, ms (performance.now). */
  ackAt: number[];
  /** Per write, the number of entries written so far (each takes one sequence number). */
  entriesAfter: number[];
  latency: Summary;
  /** Process CPU over the load, % of one core. */
  cpuPercent: number;
  /** Each thread's CPU over the load, % of one core, by thread id (threads alive at its end; /proc's 10 ms ticks). */
  threadCpuPercent: Map<number, number>;
  /** How late the host's event loop ran a 10 ms timer over the load, ms (monitorEventLoopDelay, less its interval). */
  loopDelay: { p99: number; max: number };
  seconds: number;
  rate: number;
}

export type Op = { type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string };

/**
 * The load's writes, made before it starts (making them costs CPU the measurement must not see): the
 * indexer's records from `seed`, cut into batches of at least `bytes` of keys and values.
 */
export function indexerWrites(seed: number, count: number, bytes: number): Op[][] {
  const records = new IndexerRecords(seed);
  const queue: IndexerOp[] = [];
  const out: Op[][] = [];
  while (out.length < count) {
    const batch: Op[] = [];
    let size = 0;
    while (size < bytes) {
      if (queue.length === 0) queue.push(...records.nextBlock());
      const op = queue.shift()!;
      batch.push(op);
      size += op.key.length + (op.type === 'put' ? op.value.length : 0);
    }
    out.push(batch);
  }
  return out;
}

/** `rate` writes a second (batches of the indexer's records), one at a time, for `seconds`. */
export async function load(db: ClassicLevel<string, Buffer>, writes: Op[][], rate: number, seconds: number, onTick: () => void): Promise<LoadResult> {
  const n = Math.min(writes.length, Math.round(rate * seconds));
  const ackAt: number[] = new Array<number>(n);
  const entriesAfter: number[] = new Array<number>(n);
  let entries = 0;
  const latencies = new Float64Array(n);
  const cpu0 = process.cpuUsage();
  const threads0 = threadCpuSeconds();
  const loop = monitorEventLoopDelay({ resolution: LOOP_TICK_MS });
  loop.enable();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / rate;
    const ahead = due - performance.now();
    if (ahead >= 1) await sleep(Math.floor(ahead));
    const start = performance.now();
    await db.batch(writes[i]!);
    const end = performance.now();
    latencies[i] = end - start;
    ackAt[i] = end;
    entries += writes[i]!.length;
    entriesAfter[i] = entries;
    if (i % 50 === 0) onTick();
  }
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const threadCpuPercent = new Map([...threadCpuSeconds()].map(([tid, s]) => [tid, ((s - (threads0.get(tid) ?? 0)) / wall) * 100]));
  loop.disable();
  // The histogram holds the time between ticks: the tick's own interval is not lateness.
  const late = (ns: number) => Math.max(0, ns / 1e6 - LOOP_TICK_MS);
  const loopDelay = { p99: late(loop.percentile(99)), max: late(loop.max) };
  return { ackAt, entriesAfter, latency: summarize(latencies), cpuPercent: ((cpu.user + cpu.system) / 1e6 / wall) * 100, threadCpuPercent, loopDelay, seconds: wall, rate: n / wall };
}

export interface Shipped {
  /** performance.now() when seen. */
  at: number;
  sequence: number;
}

/** Samples the agent's status every 10 ms (both runs alike: its cost is in both CPU figures), reporting each new shipment. */
export function sampleStatus(agent: Agent, onShipped: (s: Shipped) => void): { stop(): Promise<void> } {
  let running = true;
  let last = -1;
  const loop = (async () => {
    while (running) {
      const s = (await agent.status()).logArchive?.lastShipped;
      if (s && s.sequence !== last) {
        last = s.sequence;
        onShipped({ at: performance.now(), sequence: s.sequence });
      }
      await sleep(10);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}

export async function until(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Until the repository at `storage` holds a timeline with a base (an archiving agent's windows start there). */
export function untilFirstBase(storage: Storage, timeoutMs: number, what = 'the first base'): Promise<void> {
  return until(async () => (await readWindows(storage)).timelines.some((t) => t.from !== null), timeoutMs, what);
}

/**
 * Per write of `run`, ms from its acknowledgment to the first sample (of `seen`, in order) showing its
 * last sequence number stored; `s0` is the database's sequence before the run's first write.
 */
export function lagPerWrite(run: LoadResult, s0: number, seen: readonly Shipped[]): Float64Array {
  const n = run.ackAt.length;
  const lag = new Float64Array(n);
  let j = 0;
  for (let i = 0; i < n; i++) {
    const last = s0 + run.entriesAfter[i]!;
    while (j < seen.length && seen[j]!.sequence < last) j++;
    if (j === seen.length) throw new Error(`write ${i} (sequence ${last}) never seen stored`);
    lag[i] = Math.max(0, seen[j]!.at - run.ackAt[i]!);
  }
  return lag;
}

