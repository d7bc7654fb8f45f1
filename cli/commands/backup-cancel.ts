import { defineCommand } from '../command.js';
import { printJson, printLines } from '../output.js';

export const backupCancelCommand = defineCommand({
  command: 'cancel',
  describe: 'Stop the running backup, or with --copy the running copy (what either stored is reused by the next one)',
  builder: (y) => y.option('copy', { type: 'boolean', default: false, describe: 'Stop the copy the agent runs (backup copy without --from), not a backup' }),
  run: async (argv, ctx) => {
    const client = await ctx.agent();
    const what = argv.copy ? 'copy' : 'backup';
    const result = argv.copy ? await client.cancelCopy() : await client.cancelBackup();
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, [result.cancelled === 0 ? `no ${what} running` : `cancelled the running ${what}`]);
  },
});
