import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { defineCommand, loadOffline, requireCheckpointId, requireDir } from '../command.js';
import { printJson, printLines } from '../output.js';
import { formatCheckpoint } from './checkpoint-format.js';

export const checkpointShowCommand = defineCommand({
  command: 'show <id>',
  describe: 'Show one checkpoint',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'Checkpoint id' })
      .option('checkpoint-dir', { type: 'string', describe: 'Read this checkpoint directory directly, without the agent' })
      .conflicts('checkpoint-dir', 'socket'),
  run: async (argv, ctx) => {
    const id = requireCheckpointId(argv.id);
    let record;
    if (argv.checkpointDir !== undefined) {
      const dir = requireDir('checkpoint-dir', argv.checkpointDir);
      const { listCheckpointsOffline } = await loadOffline();
      record = (await listCheckpointsOffline(dir)).find((r) => r.id === id);
      if (record === undefined) throw new AdminError(ErrorCodes.NOT_FOUND, `no checkpoint ${id} in ${dir}`);
    } else {
      const client = await ctx.agent();
      record = await client.getCheckpoint(id);
    }
    if (ctx.json) printJson(ctx.io.stdout, record);
    else printLines(ctx.io.stdout, formatCheckpoint(record));
  },
});
