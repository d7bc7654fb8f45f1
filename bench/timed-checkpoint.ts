import fs from 'node:fs';
import path from 'node:path';
import type { Agent } from '../agent/agent-types.js';
import type { CheckpointMeta } from '../agent/checkpoint/checkpoint-dir.js';

/**
 * One checkpoint through the agent, timed twice: as the host awaits it (queue, worker round trip,
 * build, describe, retention) and as the build worker measured itself (what the agent stores in
 * checkpoint.json), so a gap between the two points at the agent's plumbing rather than the build.
 */
export interface TimedCheckpoint {
  id: string;
  ms: number;
  buildMs: number;
  files: number;
}

export async function timedCreate(agent: Agent, checkpointDir: string): Promise<TimedCheckpoint> {
  const t0 = performance.now();
  const record = await agent.createCheckpoint({ label: 'bench' });
  const ms = performance.now() - t0;
  return { id: record.id, ms, buildMs: readBuildMs(checkpointDir, record.id), files: record.files };
}

function readBuildMs(checkpointDir: string, id: string): number {
  const meta = JSON.parse(fs.readFileSync(path.join(checkpointDir, id, 'checkpoint.json'), 'utf8')) as CheckpointMeta;
  return meta.build?.durationMs ?? Number.NaN;
}
