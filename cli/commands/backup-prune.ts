import { defineCommand } from '../command.js';
import { invalidArgument } from '../run-command.js';
import { printJson, printLines } from '../output.js';
import { formatBackupPrune } from './backup-format.js';
import { checkRepoFlags, repoOptions, withRepository } from './backup-repo.js';

const KEEP_FLAGS = [
  ['keep-last', 'keepLast', 'Keep the newest N backups'],
  ['keep-hourly', 'keepHourly', 'Keep the newest backup of each of the last N hours that have one'],
  ['keep-daily', 'keepDaily', 'Likewise for days (UTC)'],
  ['keep-weekly', 'keepWeekly', 'Likewise for ISO weeks'],
  ['keep-monthly', 'keepMonthly', 'Likewise for calendar months (UTC)'],
] as const;

export const backupPruneCommand = defineCommand({
  command: 'prune',
  describe: "Remove backups outside the retention policy and the data only they used (the agent's policy, or --repo with --keep-*)",
  builder: (y) => {
    let b = repoOptions(y.option('dry-run', { type: 'boolean', default: false, describe: 'Only show what would be removed' }), false);
    for (const [flag, , describe] of KEEP_FLAGS) b = b.option(flag, { type: 'number', describe: `With --repo: ${describe}` });
    return b.conflicts('repo', 'socket');
  },
  run: async (argv, ctx) => {
    checkRepoFlags(argv);
    const values = argv as unknown as Record<string, unknown>;
    const policy: Record<string, number> = {};
    for (const [flag, key] of KEEP_FLAGS) {
      const v = values[key];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalidArgument(`--${flag} must be a whole number (0 or more)`);
      policy[key] = v;
    }
    const given = Object.keys(policy).length > 0;
    let result;
    if (argv.repo !== undefined) {
      // No default policy here: a typo must not prune a repository down to three backups.
      if (!given) throw invalidArgument('with --repo, say what to keep: at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly');
      const { pruneRepository } = await import('../../agent/backup/prune-repository.js');
      result = await withRepository(argv, (repo) => pruneRepository(repo, policy, { dryRun: argv.dryRun }));
    } else {
      if (given) throw invalidArgument("--keep-* go with --repo; through the agent, its configured backup retention applies");
      const client = await ctx.agent();
      result = await client.pruneBackups(argv.dryRun ? { dryRun: true } : {});
    }
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, formatBackupPrune(result));
  },
});
