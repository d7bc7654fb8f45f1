import path from 'node:path';
import { measureAgentBackup, type AgentBackupResult } from './agent-backup.js';
import { progress } from './progress.js';
import { mib, RSS_GOAL_BYTES, type Row } from './backup-rows.js';
import { median } from './stats.js';
import type { BenchContext } from './backup-bench-kit.js';

/** The node's write p99 during a backup, at most this many times its quiet p99 (issue 18). */
const WRITE_P99_GOAL = 1.5;

/** Issue 22's goals for the default pace (auto): KV GET p50 and p99 during a backup / quiet, its time / max's. */
const PACE_GET_P50_GOAL = 1.5;
const PACE_GET_P99_GOAL = 2;
const PACE_TIME_GOAL = 2;

/** Phase 4 of the backup benchmark, measured and in rows. */
export interface AgentPhase {
  /** backup-results.json's `agent`: every round, the default pace (auto) then max in each. */
  result: AgentBackupResult[];
  rows: Row[];
}

/**
 * 4. The agent as a node runs it (agent-backup.ts): a backup through the example node on a copy of the
 * database, into an encrypted repository, and what it costs the node's process (memory, KV read and
 * write latency); `repeat` rounds, each on a fresh copy, the median round's figures shown.
 */
export async function agentPhase(ctx: BenchContext): Promise<AgentPhase> {
  progress('4/5 a backup through the agent: the example node on a copy of the database, node-admin backup create (encrypted)');
  const rounds: AgentBackupResult[] = [];
  const maxRounds: AgentBackupResult[] = [];
  for (let round = 1; round <= ctx.config.repeat; round++) {
    if (ctx.config.repeat > 1) progress(`  round ${round} of ${ctx.config.repeat}`);
    const a = await measureAgentBackup(ctx.db0.dbPath, ctx.db0.keyCount, path.join(ctx.work, 'agent'));
    rounds.push(a);
    // The same backup at full speed (the pace before pacing), in the same round: what auto costs in time.
    const m = await measureAgentBackup(ctx.db0.dbPath, ctx.db0.keyCount, path.join(ctx.work, 'agent'), 'max');
    maxRounds.push(m);
    progress(
      `  pace max: ${m.seconds.toFixed(2)} s; KV GET p50/p99 ${m.kvIdle.p50Ms}/${m.kvIdle.p99Ms} ms quiet, ${m.kvDuring.p50Ms}/${m.kvDuring.p99Ms} ms during`,
    );
    progress(
      `  pace auto: ${a.seconds.toFixed(2)} s (held back ${Number(a.record.pacedSeconds ?? 0).toFixed(2)} s); node RSS idle ${mib(a.idle.rss)} (anonymous ${mib(a.idle.anon)}), ` +
        `peak ${mib(a.peakRssBytes)} (anonymous ${mib(a.peakSampled.anon)}); KV GET p50/p99 ${a.kvIdle.p50Ms}/${a.kvIdle.p99Ms} ms quiet, ` +
        `${a.kvDuring.p50Ms}/${a.kvDuring.p99Ms} ms during; PUT p50/p99 ${a.putIdle.p50Ms}/${a.putIdle.p99Ms} ms quiet, ${a.putDuring.p50Ms}/${a.putDuring.p99Ms} ms during`,
    );
  }
  const putRatios = rounds.map((a) => a.putDuring.p99Ms / a.putIdle.p99Ms);
  const putRatio = median(putRatios);
  const byRatio = [...rounds].sort((x, y) => x.putDuring.p99Ms / x.putIdle.p99Ms - y.putDuring.p99Ms / y.putIdle.p99Ms);
  const a = byRatio[Math.floor((byRatio.length - 1) / 2)]!;
  const spread = rounds.length > 1 ? `; rounds ${putRatios.map((r) => `${r.toFixed(2)}x`).join(' ')}` : '';
  // Auto against quiet and against max, each round's own ratios (same database, same page cache state).
  const getP50 = rounds.map((r) => r.kvDuring.p50Ms / r.kvIdle.p50Ms);
  const getP99 = rounds.map((r) => r.kvDuring.p99Ms / r.kvIdle.p99Ms);
  const maxGetP50 = maxRounds.map((r) => r.kvDuring.p50Ms / r.kvIdle.p50Ms);
  const maxGetP99 = maxRounds.map((r) => r.kvDuring.p99Ms / r.kvIdle.p99Ms);
  const timeRatio = rounds.map((r, i) => r.seconds / maxRounds[i]!.seconds);
  const x = (v: number[]) => v.map((r) => `${r.toFixed(2)}x`).join(' ');
  const peakAnon = Math.max(...rounds.map((r) => r.peakSampled.anon));
  const peakAll = Math.max(...rounds.map((r) => r.peakRssBytes));
  const rows: Row[] = [
    {
      metric: 'agent process (example node) during a backup through it: peak RSS, anonymous (heaps, buffers) / all, max over rounds',
      ours: `${mib(peakAnon)} / ${mib(peakAll)} (idle ${mib(a.idle.anon)} / ${mib(a.idle.rss)})`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '<= 128 MiB',
      // "All" adds the pages of LevelDB's memory-mapped tables that the node's own reads touched: the
      // kernel's to drop, and the same with or without a backup. The goal is the agent's own memory.
      met: peakAnon <= RSS_GOAL_BYTES,
    },
    {
      metric: "agent process: the node's write (KV PUT, 1 KiB) p99 during the backup / quiet",
      ours: `${putRatio.toFixed(2)}x${spread} (${a.putIdle.p99Ms} ms quiet -> ${a.putDuring.p99Ms} ms during; p50 ${a.putIdle.p50Ms} -> ${a.putDuring.p50Ms} ms)`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: `<= ${WRITE_P99_GOAL}x`,
      met: putRatio <= WRITE_P99_GOAL,
    },
    {
      metric: 'agent process: KV GET latency p50 / p99, quiet -> during that backup (info)',
      ours: `${a.kvIdle.p50Ms} / ${a.kvIdle.p99Ms} ms -> ${a.kvDuring.p50Ms} / ${a.kvDuring.p99Ms} ms`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '-',
      met: null,
    },
    {
      metric: 'agent process: KV GET p50 / p99 during a backup at the default pace (auto) / quiet (median; rounds)',
      ours: `${median(getP50).toFixed(2)}x / ${median(getP99).toFixed(2)}x (rounds p50 ${x(getP50)}, p99 ${x(getP99)}); with pace max ${median(maxGetP50).toFixed(2)}x / ${median(maxGetP99).toFixed(2)}x`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: `<= ${PACE_GET_P50_GOAL}x / <= ${PACE_GET_P99_GOAL}x`,
      met: median(getP50) <= PACE_GET_P50_GOAL && median(getP99) <= PACE_GET_P99_GOAL,
    },
    {
      metric: 'agent process: backup time at the default pace (auto) / pace max, same round (median; rounds)',
      ours: `${median(timeRatio).toFixed(2)}x (${x(timeRatio)})`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: `<= ${PACE_TIME_GOAL}x`,
      met: median(timeRatio) <= PACE_TIME_GOAL,
    },
    {
      metric: 'agent process: backup create through the socket, wall (info; rounds, pace auto / max)',
      ours: rounds.map((r, i) => `${r.seconds.toFixed(2)} / ${maxRounds[i]!.seconds.toFixed(2)} s`).join(', '),
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '-',
      met: null,
    },
  ];
  return { result: [...rounds, ...maxRounds], rows };
}
