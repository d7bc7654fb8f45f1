import { defineCommand, requireCheckpointId } from '../command.js';
import { printJson, printLines } from '../output.js';

export const checkpointPinCommand = defineCommand({
  command: 'pin <id>',
  describe: 'Pin a checkpoint: retention never removes it, delete needs --force',
  builder: (y) => y.positional('id', { type: 'string', demandOption: true, describe: 'Checkpoint id' }),
  run: async (argv, ctx) => {
    const id = requireCheckpointId(argv.id);
    const client = await ctx.agent();
    const record = await client.pin(id);
    if (ctx.json) printJson(ctx.io.stdout, record);
    else printLines(ctx.io.stdout, [`pinned ${record.id}`]);
  },
});
