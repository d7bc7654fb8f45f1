import path from 'node:path';
import { measureAgentBackup, type AgentBackupResult } from './agent-backup.js';
import { progress } from './progress.js';
import { mib, RSS_GOAL_BYTES, type Row } from './backup-rows.js';
import type { BenchContext } from './backup-bench-kit.js';

/** Phase 4 of the backup benchmark, measured and in rows. */
export interface AgentPhase {
  /** backup-results.json's `agent`. */
  result: AgentBackupResult;
  rows: Row[];
}

/**
 * 4. The agent as a node runs it (agent-backup.ts): a backup through the example node on a copy of the
 * database, and what it costs the node's process (memory, KV latency).
 */
export async function agentPhase(ctx: BenchContext): Promise<AgentPhase> {
  progress('4/5 a backup through the agent: the example node on a copy of the database, node-admin backup create');
  const a = await measureAgentBackup(ctx.db0.dbPath, ctx.db0.keyCount, path.join(ctx.work, 'agent'));
  progress(
    `  ${a.seconds.toFixed(2)} s; node RSS idle ${mib(a.idle.rss)} (anonymous ${mib(a.idle.anon)}), ` +
      `peak ${mib(a.peakRssBytes)} (anonymous ${mib(a.peakSampled.anon)}); KV GET p50/p99 ${a.kvIdle.p50Ms}/${a.kvIdle.p99Ms} ms idle, ` +
      `${a.kvDuring.p50Ms}/${a.kvDuring.p99Ms} ms during`,
  );
  const rows: Row[] = [
    {
      metric: 'agent process (example node) during a backup through it: peak RSS, anonymous (heaps, buffers) / all',
      ours: `${mib(a.peakSampled.anon)} / ${mib(a.peakRssBytes)} (idle ${mib(a.idle.anon)} / ${mib(a.idle.rss)})`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '<= 128 MiB',
      // "All" adds the pages of LevelDB's memory-mapped tables that the node's own reads touched: the
      // kernel's to drop, and the same with or without a backup. The goal is the agent's own memory.
      met: a.peakSampled.anon <= RSS_GOAL_BYTES,
    },
    {
      metric: 'agent process: KV GET latency p50 / p99, idle -> during that backup (info)',
      ours: `${a.kvIdle.p50Ms} / ${a.kvIdle.p99Ms} ms -> ${a.kvDuring.p50Ms} / ${a.kvDuring.p99Ms} ms`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '-',
      met: null,
    },
  ];
  return { result: a, rows };
}
