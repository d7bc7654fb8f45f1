import { defineCommand } from '../command.js';
import { printJson, printLines } from '../output.js';
import { formatBackup } from './backup-format.js';
import { backupRecordOf } from '../../agent/backup/backup-record.js';
import { checkRepoFlags, repoOptions, requireBackupId, withRepository } from './backup-repo.js';

export const backupShowCommand = defineCommand({
  command: 'show <id>',
  describe: 'Show one backup (through the agent, or --repo directly)',
  builder: (y) => repoOptions(y.positional('id', { type: 'string', demandOption: true, describe: 'Backup id' }), false).conflicts('repo', 'socket'),
  run: async (argv, ctx) => {
    const id = requireBackupId(argv.id);
    checkRepoFlags(argv);
    let record;
    if (argv.repo !== undefined) {
      record = await withRepository(argv, async (repo) => backupRecordOf(await repo.readSnapshot(id), repo.codec.encrypted));
    } else {
      const client = await ctx.agent();
      record = await client.getBackup(id);
    }
    if (ctx.json) printJson(ctx.io.stdout, record);
    else printLines(ctx.io.stdout, formatBackup(record));
  },
});
