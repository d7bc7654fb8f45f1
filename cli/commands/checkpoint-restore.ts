import { defineCommand, loadOffline, requireCheckpointId, requireDir } from '../command.js';
import { clean, printJson, printLines } from '../output.js';

export const checkpointRestoreCommand = defineCommand({
  command: 'restore <id>',
  describe: 'Make a checkpoint the database again (offline: the node must be stopped); the old database is kept aside',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'Checkpoint id' })
      .option('db', { type: 'string', demandOption: true, describe: 'The database directory to replace' })
      .option('checkpoint-dir', { type: 'string', demandOption: true, describe: 'The checkpoint directory' })
      .conflicts('checkpoint-dir', 'socket'),
  run: async (argv, ctx) => {
    const id = requireCheckpointId(argv.id);
    const dbPath = requireDir('db', argv.db);
    const checkpointDir = requireDir('checkpoint-dir', argv.checkpointDir);
    const { restoreCheckpoint } = await loadOffline();
    const result = await restoreCheckpoint({ id, dbPath, checkpointDir });
    if (ctx.json) printJson(ctx.io.stdout, result);
    else {
      printLines(ctx.io.stdout, [
        `restored checkpoint ${result.id} into ${clean(result.dbPath)}`,
        `the replaced database was kept at ${clean(result.replacedPath)}`,
      ]);
    }
  },
});
