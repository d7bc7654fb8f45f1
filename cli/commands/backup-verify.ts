import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { defineCommand } from '../command.js';
import { plural, printJson, printLines } from '../output.js';
import { formatBackupVerify } from './backup-format.js';
import { checkRepoFlags, EARLY_THREADS, repoOptions, requireBackupId, withRepository } from './backup-repo.js';

export const backupVerifyCommand = defineCommand({
  command: 'verify [id]',
  describe: 'Check the repository (or one backup): every chunk indexed and stored; exit 7 on any error',
  builder: (y) =>
    repoOptions(
      y
        .positional('id', { type: 'string', describe: 'Only this backup (default: all)' })
        .option('read-data', { type: 'boolean', default: false, describe: 'Download every pack and re-hash every chunk, and read back every log archive segment (reads the whole repository)' }),
      false,
    ).conflicts('repo', 'socket'),
  run: async (argv, ctx) => {
    const id = argv.id !== undefined ? requireBackupId(argv.id) : undefined;
    checkRepoFlags(argv);
    const req = { ...(id !== undefined ? { id } : {}), readData: argv.readData };
    let report;
    if (argv.repo !== undefined) {
      const [{ verifyRepository }, { verifyArchive }] = await Promise.all([
        import('../../agent/backup/verify-repository.js'),
        import('../../agent/log-archive/archive-verify.js'),
      ]);
      report = await withRepository(argv, (repo) => verifyRepository(repo, { ...req, logArchive: verifyArchive }), EARLY_THREADS);
    } else {
      const client = await ctx.agent();
      report = await client.verifyBackups(req);
    }
    // The report (each error naming its object) goes to stdout whatever it says; a failure is then also the error line.
    if (ctx.json) printJson(ctx.io.stdout, report);
    else printLines(ctx.io.stdout, formatBackupVerify(report, id));
    if (!report.ok) {
      const first = report.errors[0] ?? 'no reason given';
      const more = report.errors.length > 1 ? ` (and ${plural(report.errors.length - 1, 'more error')})` : '';
      throw new AdminError(ErrorCodes.CORRUPT, `${id !== undefined ? `backup ${id}` : 'the repository'} failed verification: ${first}${more}`);
    }
  },
});
