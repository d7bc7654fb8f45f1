import fs from 'node:fs';
import path from 'node:path';
import type { Agent } from '../agent/agent-types.js';
import { timeCommand } from './command-timer.js';
import { progress } from './progress.js';
import { summarize, type Summary } from './stats.js';
import { timedCreate } from './timed-checkpoint.js';

/**
 * Checkpoint time of the live, open, idle database against `cp -al` of the same directory: the least
 * a hard-link copy can cost (one process linking every file, no MANIFEST parsing, no copies, no
 * fsync). Runs alternate, so page cache and journal state drift affects both sides alike.
 */
export interface CheckpointVsCpResult {
  runs: number;
  /** Files in each checkpoint (tables + WAL + MANIFEST + CURRENT). */
  filesPerCheckpoint: number;
  /** The very first create: includes starting the agent's build worker thread. */
  coldFirstMs: number;
  /** agent.createCheckpoint() as the host sees it: queue, worker round trip, build, describe, retention. */
  checkpointMs: Summary;
  /** The build alone, timed inside the worker (checkpoint.json build.durationMs). */
  buildMs: Summary;
  cpAlMs: Summary;
}

export async function measureCheckpointVsCp(
  agent: Agent,
  options: { dbPath: string; checkpointDir: string; scratchDir: string; runs: number },
): Promise<CheckpointVsCpResult> {
  const copies = path.join(options.scratchDir, 'cp-al');
  fs.rmSync(copies, { recursive: true, force: true });
  fs.mkdirSync(copies, { recursive: true });

  const cold = await timedCreate(agent, options.checkpointDir);
  await agent.deleteCheckpoint(cold.id);
  progress(`  cold first checkpoint: ${cold.ms.toFixed(1)} ms (build ${cold.buildMs} ms, ${cold.files} files)`);

  const checkpointMs: number[] = [];
  const buildMs: number[] = [];
  const cpAlMs: number[] = [];
  let files = cold.files;
  for (let i = 0; i < options.runs; i++) {
    const c = await timedCreate(agent, options.checkpointDir);
    checkpointMs.push(c.ms);
    buildMs.push(c.buildMs);
    files = c.files;
    await agent.deleteCheckpoint(c.id);

    const dst = path.join(copies, `run-${i}`);
    cpAlMs.push(timeCommand('cp', ['-al', options.dbPath, dst]).ms);
    fs.rmSync(dst, { recursive: true, force: true });
    progress(`  run ${i + 1}/${options.runs}: checkpoint ${c.ms.toFixed(1)} ms (build ${c.buildMs} ms), cp -al ${cpAlMs[i]!.toFixed(1)} ms`);
  }
  fs.rmSync(copies, { recursive: true, force: true });
  return {
    runs: options.runs,
    filesPerCheckpoint: files,
    coldFirstMs: cold.ms,
    checkpointMs: summarize(checkpointMs),
    buildMs: summarize(buildMs),
    cpAlMs: summarize(cpAlMs),
  };
}
