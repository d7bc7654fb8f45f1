import { defineCommand } from '../command.js';
import { printJson, printLines } from '../output.js';
import { formatBackupTable } from './backup-format.js';
import { backupRecordOf } from '../../agent/backup/backup-record.js';
import { checkRepoFlags, repoOptions, withRepository } from './backup-repo.js';

export const backupListCommand = defineCommand({
  command: 'list',
  describe: 'List the backups, oldest first (through the agent, or --repo directly)',
  builder: (y) => repoOptions(y, false).conflicts('repo', 'socket'),
  run: async (argv, ctx) => {
    checkRepoFlags(argv);
    let records;
    if (argv.repo !== undefined) {
      records = await withRepository(argv, async (repo) => (await repo.listSnapshots()).map((s) => backupRecordOf(s, repo.codec.encrypted)));
    } else {
      const client = await ctx.agent();
      records = await client.listBackups();
    }
    if (ctx.json) printJson(ctx.io.stdout, records);
    else printLines(ctx.io.stdout, formatBackupTable(records));
  },
});
