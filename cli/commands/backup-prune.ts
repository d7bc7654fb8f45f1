import { KEEP_RULES, parseCount, type KeepKey } from '../../shared/input-rules.js';
import { defineCommand } from '../command.js';
import { invalidArgument } from '../run-command.js';
import { printJson, printLines } from '../output.js';
import { formatBackupPrune } from './backup-format.js';
import { checkRepoFlags, repoOptions, withRepository } from './backup-repo.js';

export const backupPruneCommand = defineCommand({
  command: 'prune',
  describe: "Remove backups outside the retention policy and the data only they used (the agent's policy, or --repo with --keep-*)",
  builder: (y) => {
    let b = repoOptions(y.option('dry-run', { type: 'boolean', default: false, describe: 'Only show what would be removed' }), false);
    for (const rule of KEEP_RULES) b = b.option(rule.flag, { type: 'number', describe: `With --repo: keep ${rule.keeps}` });
    return b.conflicts('repo', 'socket');
  },
  run: async (argv, ctx) => {
    checkRepoFlags(argv);
    const values = argv as unknown as Record<string, unknown>;
    const policy: Partial<Record<KeepKey, number>> = {};
    for (const rule of KEEP_RULES) {
      const v = values[rule.key];
      if (v !== undefined) policy[rule.key] = parseCount(v, `--${rule.flag}`);
    }
    const given = Object.keys(policy).length > 0;
    let result;
    if (argv.repo !== undefined) {
      // No default policy here: a typo must not prune a repository down to three backups.
      if (!given) throw invalidArgument(`with --repo, say what to keep: at least one of ${KEEP_RULES.map((r) => `--${r.flag}`).join(', ')}`);
      const [{ pruneRepository }, { logArchivePruneClient }] = await Promise.all([
        import('../../agent/backup/prune-repository.js'),
        import('../../agent/log-archive/wal-prune.js'),
      ]);
      result = await withRepository(argv, (repo) => pruneRepository(repo, policy, { dryRun: argv.dryRun, logArchive: logArchivePruneClient }));
    } else {
      if (given) throw invalidArgument("--keep-* go with --repo; through the agent, its configured backup retention applies");
      const client = await ctx.agent();
      result = await client.pruneBackups(argv.dryRun ? { dryRun: true } : {});
    }
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, formatBackupPrune(result));
  },
});
