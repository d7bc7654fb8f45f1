import { defineCommand, requireCheckpointId } from '../command.js';
import { formatBytes, printJson, printLines } from '../output.js';

export const checkpointDeleteCommand = defineCommand({
  command: 'delete <id>',
  describe: 'Delete a checkpoint (a pinned one only with --force)',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'Checkpoint id' })
      .option('force', { type: 'boolean', default: false, describe: 'Delete it even if pinned' }),
  run: async (argv, ctx) => {
    const id = requireCheckpointId(argv.id);
    const client = await ctx.agent();
    const result = await client.deleteCheckpoint(id, { force: argv.force });
    if (ctx.json) printJson(ctx.io.stdout, result);
    else printLines(ctx.io.stdout, [`deleted ${result.deleted}, freed ${formatBytes(result.freedBytes)}`]);
  },
});
