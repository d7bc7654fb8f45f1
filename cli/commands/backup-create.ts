import type { BackupProgress } from '../../shared/api.js';
import { cancelOnInterrupt } from '../cancel-on-interrupt.js';
import { defineCommand, requireCheckpointId } from '../command.js';
import { formatBytes, printJson, printLines } from '../output.js';
import { formatBackupCreated, progressBar } from './backup-format.js';

export const backupCreateCommand = defineCommand({
  command: 'create',
  describe: 'Back a checkpoint up to the remote repository (through the agent; default: the newest checkpoint)',
  builder: (y) =>
    y
      .option('checkpoint', { type: 'string', describe: 'The checkpoint to back up (default: the newest; one is taken if there is none)' })
      .option('pin', { type: 'boolean', default: false, describe: 'Pin the backup: backup retention never removes it' }),
  run: async (argv, ctx) => {
    const checkpointId = argv.checkpoint !== undefined ? requireCheckpointId(argv.checkpoint) : undefined;
    const client = await ctx.agent();
    const bar = progressBar(ctx.io, 'backup');
    const onProgress = (p: BackupProgress) => bar?.update(p.bytesDone, p.bytesTotal, `uploaded ${formatBytes(p.bytesUploaded)}`);
    // Ctrl-C asks the agent to cancel (the stream then ends with CANCELLED, exit 130); a second one leaves at once.
    let record;
    try {
      record = await cancelOnInterrupt(
        () => client.cancelBackup(),
        () => client.createBackup({ ...(checkpointId !== undefined ? { checkpointId } : {}), ...(argv.pin ? { pin: true } : {}) }, onProgress),
      );
    } finally {
      bar?.finish();
    }
    if (ctx.json) printJson(ctx.io.stdout, record);
    else printLines(ctx.io.stdout, [formatBackupCreated(record)]);
  },
});
