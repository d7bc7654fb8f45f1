import { defineCommand, loadOffline, requireDir } from '../command.js';
import { printJson, printLines } from '../output.js';
import { formatCheckpointTable } from './checkpoint-format.js';

export const checkpointListCommand = defineCommand({
  command: 'list',
  describe: 'List the checkpoints, oldest first',
  builder: (y) =>
    y
      .option('checkpoint-dir', { type: 'string', describe: 'Read this checkpoint directory directly, without the agent' })
      .conflicts('checkpoint-dir', 'socket'),
  run: async (argv, ctx) => {
    let records;
    if (argv.checkpointDir !== undefined) {
      const dir = requireDir('checkpoint-dir', argv.checkpointDir);
      const { listCheckpointsOffline } = await loadOffline();
      records = await listCheckpointsOffline(dir);
    } else {
      const client = await ctx.agent();
      records = await client.listCheckpoints();
    }
    if (ctx.json) printJson(ctx.io.stdout, records);
    else printLines(ctx.io.stdout, formatCheckpointTable(records));
  },
});
