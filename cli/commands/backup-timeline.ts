import type { LogArchiveTimelines, ReplicaHoldings } from '../../shared/api.js';
import { defineCommand } from '../command.js';
import { clean, formatDuration, printJson, printLines } from '../output.js';
import { checkRepoFlags, repoOptions, withRepository } from './backup-repo.js';

export const backupTimelineCommand = defineCommand({
  command: 'timeline',
  describe: 'The moments the log archive can restore: per timeline its base backups, from and to, and the gaps; through the agent, what each replica holds too (or --repo)',
  builder: (y) => repoOptions(y, false).conflicts('repo', 'socket'),
  run: async (argv, ctx) => {
    checkRepoFlags(argv);
    let report: LogArchiveTimelines;
    if (argv.repo === undefined) {
      report = await (await ctx.agent()).backupTimeline();
    } else {
      const [{ readWindows }, { timelineReport }] = await Promise.all([
        import('../../agent/log-archive/restore-to-moment.js'),
        import('../../agent/log-archive/timeline-report.js'),
      ]);
      report = timelineReport(await withRepository(argv, (repo) => readWindows(repo)));
    }
    if (ctx.json) printJson(ctx.io.stdout, report);
    else printLines(ctx.io.stdout, [...formatTimelines(report), ...(report.replicas ?? []).flatMap(formatReplicaHoldings)]);
  },
});

/**
 * A time to the whole second, rounded `up` or `down`, as `2026-11-24T00:41:07Z`. The human output says
 * windows to the second, rounded inwards (from up, to down) so that every second it prints can be
 * restored; a gap rounded outwards. The JSON keeps the milliseconds.
 */
export function toSecond(iso: string, round: 'up' | 'down'): string {
  const ms = Date.parse(iso);
  const s = round === 'up' ? Math.ceil(ms / 1000) : Math.floor(ms / 1000);
  return new Date(s * 1000).toISOString().replace('.000Z', 'Z');
}

/** A window to the second (rounded inwards); one holding no whole second is said in ms. */
export function windowToSecond(from: string, to: string): string {
  const a = toSecond(from, 'up');
  const b = toSecond(to, 'down');
  return Date.parse(a) <= Date.parse(b) ? `${a} to ${b}` : `${from} to ${to}`;
}

export function formatTimelines(report: LogArchiveTimelines): string[] {
  if (report.timelines.length === 0) return ['no log archive in this repository'];
  const lines: string[] = [];
  for (const t of report.timelines) {
    const window = t.from === null ? 'nothing restorable' : `${windowToSecond(t.from, t.to!)} (sequences ${t.firstSequence}..${t.lastSequence})`;
    lines.push(`timeline ${clean(t.id)}: ${window}, ${t.segments} segments`);
    if (t.brokenAfterSequence !== null) lines.push(`  a segment after sequence ${t.brokenAfterSequence} is missing: nothing after it is claimed`);
    for (const b of t.bases) lines.push(`  base ${clean(b.backup)} at sequence ${b.sequence}, from ${toSecond(b.from, 'up')}${b.usable ? '' : ` — not usable: ${clean(b.problem ?? '')}`}`);
    for (const m of t.marks ?? []) {
      lines.push(m.kind === 'stop' ? `  stopped at ${toSecond(m.at, 'down')} at sequence ${m.sequence}` : `  went on through a restart at ${toSecond(m.at, 'up')}: the database proven still at sequence ${m.sequence}`);
    }
  }
  for (const g of report.gaps) lines.push(`gap: ${toSecond(g.from, 'down')} to ${toSecond(g.to, 'up')} (${formatDuration(Date.parse(g.to) - Date.parse(g.from))}) cannot be restored`);
  return lines;
}

/** A replica's lines: what it holds (newest snapshot, count, lag), then its windows indented. */
export function formatReplicaHoldings(r: ReplicaHoldings): string[] {
  const lag = r.lagSeconds !== null ? `; log archive lag ${formatDuration(r.lagSeconds * 1000)}` : '';
  const waiting = r.pendingSnapshots > 0 ? `, ${r.pendingSnapshots} more waiting for it` : '';
  if (r.error !== null) return [`replica ${clean(r.name)}: cannot be listed: ${clean(r.error)}${waiting}${lag}`];
  const newest = r.newestSnapshot === null ? 'no snapshot' : `newest snapshot ${clean(r.newestSnapshot.id)} (made ${toSecond(r.newestSnapshot.createdAt, 'down')})`;
  return [`replica ${clean(r.name)}: ${newest}, ${r.snapshots} in all${waiting}${lag}`, ...formatTimelines({ timelines: r.timelines, gaps: r.gaps }).map((l) => `  ${l}`)];
}
