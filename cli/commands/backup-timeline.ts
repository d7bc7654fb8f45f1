import { defineCommand } from '../command.js';
import { clean, formatDuration, printJson, printLines } from '../output.js';
import { invalidArgument } from '../run-command.js';
import { repoOptions, withRepository } from './backup-repo.js';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export const backupTimelineCommand = defineCommand({
  command: 'timeline',
  describe: 'The moments the log archive can restore: per timeline its base backups, from and to, and the gaps',
  builder: (y) => repoOptions(y, false),
  run: async (argv, ctx) => {
    if (argv.repo === undefined) throw invalidArgument('backup timeline needs --repo <url> for now (the agent does not serve it yet)');
    const { readWindows } = await import('../../agent/log-archive/restore-to-moment.js');
    const windows = await withRepository(argv, (repo) => readWindows(repo.storage));
    const timelines = windows.timelines.map((t) => ({
      id: t.id,
      from: iso(t.from),
      to: iso(t.to),
      lastSequence: t.lastSequence,
      segments: t.segments.length,
      brokenAfterSequence: t.brokenAfter,
      bases: t.bases.map((b) => ({ backup: b.backup, sequence: b.sequence, from: iso(b.from), usable: b.usable, problem: b.problem })),
    }));
    const gaps = windows.gaps.map((g) => ({ from: iso(g.from), to: iso(g.to) }));
    if (ctx.json) {
      printJson(ctx.io.stdout, { timelines, gaps });
      return;
    }
    if (timelines.length === 0) {
      printLines(ctx.io.stdout, ['no log archive in this repository']);
      return;
    }
    const lines: string[] = [];
    for (const t of timelines) {
      const window = t.from === null ? 'nothing restorable' : `${t.from} to ${t.to} (up to sequence ${t.lastSequence})`;
      lines.push(`timeline ${clean(t.id)}: ${window}, ${t.segments} segments`);
      if (t.brokenAfterSequence !== null) lines.push(`  a segment after sequence ${t.brokenAfterSequence} is missing: nothing after it is claimed`);
      for (const b of t.bases) lines.push(`  base ${clean(b.backup)} at sequence ${b.sequence}, from ${b.from}${b.usable ? '' : ` — not usable: ${clean(b.problem ?? '')}`}`);
    }
    for (const g of windows.gaps) lines.push(`gap: ${iso(g.from)} to ${iso(g.to)} (${formatDuration(g.to - g.from)}) cannot be restored`);
    printLines(ctx.io.stdout, lines);
  },
});
