import { defineCommand, requireDir } from '../command.js';
import { clean, formatBytes, formatDuration, plural, printJson, printLines } from '../output.js';
import { progressBar } from './backup-format.js';
import { repoOptions, requireBackupId, withRepository } from './backup-repo.js';

export const backupRestoreCommand = defineCommand({
  command: 'restore <id>',
  describe: 'Download a backup into a new database directory (no agent needed: node stopped, or another machine)',
  builder: (y) =>
    repoOptions(y.positional('id', { type: 'string', demandOption: true, describe: 'Backup id' }), true).option('to', {
      type: 'string',
      demandOption: true,
      describe: 'The directory to create (must not exist, or be empty)',
    }),
  run: async (argv, ctx) => {
    const id = requireBackupId(argv.id);
    const to = requireDir('to', argv.to);
    const { restoreBackup } = await import('../../agent/backup/restore-backup.js');
    const bar = progressBar(ctx.io, 'restore');
    let result;
    try {
      result = await withRepository(argv, (repo) =>
        restoreBackup({ repo, id, to, onProgress: (p) => bar?.update(p.bytesDone, p.bytesTotal) }),
      );
    } finally {
      bar?.finish();
    }
    if (ctx.json) {
      printJson(ctx.io.stdout, result);
      return;
    }
    const dir = clean(result.path);
    printLines(ctx.io.stdout, [
      `restored backup ${clean(result.id)} into ${dir} (${plural(result.files, 'file')}, ${formatBytes(result.bytes)}) in ${formatDuration(result.durationMs)}`,
      'it is a complete database directory; to make it the node\'s database:',
      '  1. stop the node (systemctl stop <unit>, or Ctrl-C)',
      '  2. move its database directory aside:   mv <db> <db>.before-restore',
      `  3. move the restored one into place:     mv ${dir} <db>`,
      '  4. start the node; remove <db>.before-restore once you are satisfied',
      '(restore onto the same filesystem as <db> so that step 3 is a rename)',
    ]);
  },
});
