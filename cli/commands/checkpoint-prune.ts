import type { PruneResult } from '../../shared/api.js';
import { defineCommand } from '../command.js';
import { formatBytes, plural, printJson, printLines } from '../output.js';

export const checkpointPruneCommand = defineCommand({
  command: 'prune',
  describe: 'Apply the retention policy now',
  builder: (y) =>
    y.option('dry-run', { type: 'boolean', default: false, describe: 'Only show what would be removed' }),
  run: async (argv, ctx) => {
    const client = await ctx.agent();
    const result = await client.prune(argv.dryRun ? { dryRun: true } : {});
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, formatPrune(result));
  },
});

export function formatPrune(r: PruneResult): string[] {
  const kept = `${plural(r.kept.length, 'checkpoint')} kept`;
  if (r.removed.length === 0) return [r.dryRun ? `nothing would be removed; ${kept}` : `nothing removed; ${kept}`];
  const verb = r.dryRun ? 'would remove' : 'removed';
  return [
    ...r.removed.map((d) => `${verb} ${d.id} (${d.reason})`),
    `${r.dryRun ? 'would free' : 'freed'} ${formatBytes(r.freedBytes)}; ${kept}`,
  ];
}
