import type { LogArchiveTimelines } from '../../shared/api.js';
import { defineCommand } from '../command.js';
import { clean, formatDuration, printJson, printLines } from '../output.js';
import { checkRepoFlags, repoOptions, withRepository } from './backup-repo.js';

export const backupTimelineCommand = defineCommand({
  command: 'timeline',
  describe: 'The moments the log archive can restore: per timeline its base backups, from and to, and the gaps (through the agent, or --repo)',
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
      report = timelineReport(await withRepository(argv, (repo) => readWindows(repo.storage)));
    }
    if (ctx.json) printJson(ctx.io.stdout, report);
    else printLines(ctx.io.stdout, formatTimelines(report));
  },
});

export function formatTimelines(report: LogArchiveTimelines): string[] {
  if (report.timelines.length === 0) return ['no log archive in this repository'];
  const lines: string[] = [];
  for (const t of report.timelines) {
    const window = t.from === null ? 'nothing restorable' : `${t.from} to ${t.to} (up to sequence ${t.lastSequence})`;
    lines.push(`timeline ${clean(t.id)}: ${window}, ${t.segments} segments`);
    if (t.brokenAfterSequence !== null) lines.push(`  a segment after sequence ${t.brokenAfterSequence} is missing: nothing after it is claimed`);
    for (const b of t.bases) lines.push(`  base ${clean(b.backup)} at sequence ${b.sequence}, from ${b.from}${b.usable ? '' : ` — not usable: ${clean(b.problem ?? '')}`}`);
  }
  for (const g of report.gaps) lines.push(`gap: ${g.from} to ${g.to} (${formatDuration(Date.parse(g.to) - Date.parse(g.from))}) cannot be restored`);
  return lines;
}
