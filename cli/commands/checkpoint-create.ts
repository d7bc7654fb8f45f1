import { defineCommand, loadOffline, requireDir, requireLabel } from '../command.js';
import { invalidArgument } from '../run-command.js';
import { formatBytes, plural, printJson, printLines } from '../output.js';

export const checkpointCreateCommand = defineCommand({
  command: 'create',
  describe: 'Take a checkpoint now (through the agent, or --offline of a database no process has open)',
  builder: (y) =>
    y
      .option('label', { type: 'string', describe: 'A note kept with the checkpoint (at most 200 characters)' })
      .option('pin', { type: 'boolean', default: false, describe: 'Pin it: retention never removes it' })
      .option('offline', {
        type: 'boolean',
        // No default: yargs' conflicts() treats a defaulted flag as given.
        describe: 'Do it without the agent (needs --db and --checkpoint-dir; the database must be closed)',
      })
      .option('db', { type: 'string', describe: 'With --offline: the database directory' })
      .option('checkpoint-dir', { type: 'string', describe: 'With --offline: the checkpoint directory' })
      .conflicts('offline', 'socket'),
  run: async (argv, ctx) => {
    const label = requireLabel(argv.label);
    let record;
    if (argv.offline) {
      if (argv.db === undefined || argv.checkpointDir === undefined) {
        throw invalidArgument('--offline needs both --db and --checkpoint-dir');
      }
      const dbPath = requireDir('db', argv.db);
      const checkpointDir = requireDir('checkpoint-dir', argv.checkpointDir);
      const { createOfflineCheckpoint } = await loadOffline();
      record = await createOfflineCheckpoint({ dbPath, checkpointDir, label: label ?? null, pin: argv.pin });
    } else {
      if (argv.db !== undefined || argv.checkpointDir !== undefined) {
        throw invalidArgument('--db and --checkpoint-dir only go with --offline');
      }
      const client = await ctx.agent();
      record = await client.createCheckpoint({ ...(label !== undefined ? { label } : {}), ...(argv.pin ? { pin: true } : {}) });
    }
    if (ctx.json) printJson(ctx.io.stdout, record);
    else printLines(ctx.io.stdout, [`created checkpoint ${record.id} (${plural(record.files, 'file')}, ${formatBytes(record.bytes)})`]);
  },
});
