import type { Agent } from '../agent/agent-types.js';
import { snapshotLevels, type BenchLevel, type LevelSnapshot } from './bench-db.js';
import { timedCreate } from './timed-checkpoint.js';
import { progress, sleep } from './progress.js';
import { summarize, type Summary } from './stats.js';
import { startWriteLoad, type WriteWindow } from './write-load.js';

/**
 * Write latency of the node with and without checkpoints: one continuous write load, measured in a
 * quiet window, then a window with a checkpoint about every second (by the agent in this process, its
 * build in a worker thread, as in production), then a second quiet window. The second quiet window
 * is there to tell drift (compaction debt piling up as the load goes on) from the checkpoints' cost.
 */
export interface WindowResult {
  seconds: number;
  puts: number;
  putsPerSecond: number;
  mbPerSecond: number;
  latencyMs: Summary;
  levelsBefore: LevelSnapshot;
  levelsAfter: LevelSnapshot;
}

export interface LatencyUnderCheckpointsResult {
  writers: number;
  warmupSeconds: number;
  quiet: WindowResult;
  checkpointing: WindowResult & {
    checkpoints: number;
    failures: string[];
    checkpointMs: Summary;
    buildMs: Summary;
  };
  quietAfter: WindowResult;
}

export async function measureLatencyUnderCheckpoints(
  agent: Agent,
  db: BenchLevel,
  options: {
    dbPath: string;
    checkpointDir: string;
    writers: number;
    keyCount: number;
    valueBytes: number;
    key: (i: number) => string;
    windowSeconds: number;
    warmupSeconds: number;
    intervalMs: number;
  },
): Promise<LatencyUnderCheckpointsResult> {
  const load = startWriteLoad(db, options);
  const snap = () => snapshotLevels(db, options.dbPath);
  try {
    // The first seconds of a load fill the memtable without a flush: not the steady state.
    await sleep(options.warmupSeconds * 1000);
    load.takeWindow();

    progress(`  quiet window: ${options.windowSeconds} s, ${options.writers} writers, no checkpoints`);
    let before = snap();
    await sleep(options.windowSeconds * 1000);
    const quiet = windowResult(load.takeWindow(), before, snap());
    logWindow('quiet', quiet);

    progress(`  checkpoint window: ${options.windowSeconds} s, a checkpoint every ${options.intervalMs} ms`);
    before = snap();
    const checkpointMs: number[] = [];
    const buildMs: number[] = [];
    const failures: string[] = [];
    const end = performance.now() + options.windowSeconds * 1000;
    while (performance.now() < end) {
      const started = performance.now();
      try {
        const c = await timedCreate(agent, options.checkpointDir);
        checkpointMs.push(c.ms);
        buildMs.push(c.buildMs);
      } catch (err) {
        // A failed checkpoint under load is a finding, not a reason to lose the whole run.
        failures.push((err as Error).message);
        progress(`  checkpoint failed: ${(err as Error).message}`);
      }
      const wait = Math.min(options.intervalMs - (performance.now() - started), end - performance.now());
      if (wait > 0) await sleep(wait);
    }
    const during = windowResult(load.takeWindow(), before, snap());
    logWindow('checkpointing', during);

    progress(`  quiet window again: ${options.windowSeconds} s`);
    before = snap();
    await sleep(options.windowSeconds * 1000);
    const quietAfter = windowResult(load.takeWindow(), before, snap());
    logWindow('quiet after', quietAfter);

    return {
      writers: options.writers,
      warmupSeconds: options.warmupSeconds,
      quiet,
      checkpointing: {
        ...during,
        checkpoints: checkpointMs.length,
        failures,
        checkpointMs: summarize(checkpointMs),
        buildMs: summarize(buildMs),
      },
      quietAfter,
    };
  } finally {
    await load.stop();
  }
}

function windowResult(w: WriteWindow, levelsBefore: LevelSnapshot, levelsAfter: LevelSnapshot): WindowResult {
  return {
    seconds: Math.round(w.seconds * 10) / 10,
    puts: w.latenciesMs.length,
    putsPerSecond: Math.round(w.latenciesMs.length / w.seconds),
    mbPerSecond: Math.round((w.bytes / w.seconds / (1 << 20)) * 10) / 10,
    latencyMs: summarize(w.latenciesMs),
    levelsBefore,
    levelsAfter,
  };
}

function logWindow(name: string, w: WindowResult): void {
  const l = w.latencyMs;
  progress(
    `  ${name}: ${w.puts} puts (${w.mbPerSecond} MB/s), p50 ${l.p50.toFixed(2)} p99 ${l.p99.toFixed(2)} max ${l.max.toFixed(1)} ms; ` +
      `tables ${w.levelsBefore.tables} -> ${w.levelsAfter.tables}, L0 ${w.levelsBefore.filesPerLevel[0]} -> ${w.levelsAfter.filesPerLevel[0]}, ` +
      `${w.levelsAfter.compactionWriteMB - w.levelsBefore.compactionWriteMB} MB flushed/compacted`,
  );
}
