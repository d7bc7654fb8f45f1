import { defineCommand } from '../command.js';
import { printJson, printLines } from '../output.js';

export const backupCancelCommand = defineCommand({
  command: 'cancel',
  describe: 'Stop the running backup (what it uploaded is reused by the next one)',
  builder: (y) => y,
  run: async (_argv, ctx) => {
    const client = await ctx.agent();
    const result = await client.cancelBackup();
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, [result.cancelled === 0 ? 'no backup running' : 'cancelled the running backup']);
  },
});
