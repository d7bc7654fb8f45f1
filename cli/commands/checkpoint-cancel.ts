import { defineCommand } from '../command.js';
import { plural, printJson, printLines } from '../output.js';

export const checkpointCancelCommand = defineCommand({
  command: 'cancel',
  describe: 'Stop the running checkpoint creation and drop the queued ones',
  builder: (y) => y,
  run: async (_argv, ctx) => {
    const client = await ctx.agent();
    const result = await client.cancel();
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, [result.cancelled === 0 ? 'nothing to cancel' : `cancelled ${plural(result.cancelled, 'checkpoint creation')}`]);
  },
});
