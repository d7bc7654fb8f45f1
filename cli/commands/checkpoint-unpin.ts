import { defineCommand, requireCheckpointId } from '../command.js';
import { printJson, printLines } from '../output.js';

export const checkpointUnpinCommand = defineCommand({
  command: 'unpin <id>',
  describe: 'Unpin a checkpoint: retention may remove it again',
  builder: (y) => y.positional('id', { type: 'string', demandOption: true, describe: 'Checkpoint id' }),
  run: async (argv, ctx) => {
    const id = requireCheckpointId(argv.id);
    const client = await ctx.agent();
    const record = await client.unpin(id);
    if (ctx.json) printJson(ctx.io.stdout, record);
    else printLines(ctx.io.stdout, [`unpinned ${record.id}`]);
  },
});
