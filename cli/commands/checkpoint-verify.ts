import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { defineCommand, loadOffline, requireCheckpointId, requireDir } from '../command.js';
import { formatDuration, plural, printJson, printLines } from '../output.js';

export const checkpointVerifyCommand = defineCommand({
  command: 'verify <id>',
  describe: 'Read a checkpoint back in full (through a throwaway clone); exit 7 if it is corrupt',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'Checkpoint id' })
      .option('checkpoint-dir', { type: 'string', describe: 'Verify in this checkpoint directory directly, without the agent' })
      .conflicts('checkpoint-dir', 'socket'),
  run: async (argv, ctx) => {
    const id = requireCheckpointId(argv.id);
    let report;
    if (argv.checkpointDir !== undefined) {
      const dir = requireDir('checkpoint-dir', argv.checkpointDir);
      const { verifyCheckpointOffline } = await loadOffline();
      report = await verifyCheckpointOffline(dir, id);
    } else {
      const client = await ctx.agent();
      report = await client.verify(id);
    }
    // With --json the report goes to stdout whatever it says; a failure is then also the error line on stderr.
    if (ctx.json) printJson(ctx.io.stdout, report);
    if (!report.ok) {
      const e = report.error;
      const why = e ? (e.code === ErrorCodes.CORRUPT ? e.message : `${e.message} [${e.code}]`) : 'no reason given';
      throw new AdminError(ErrorCodes.CORRUPT, `checkpoint ${report.id} failed verification: ${why}`);
    }
    if (!ctx.json) {
      printLines(ctx.io.stdout, [
        `checkpoint ${report.id} ok: ${plural(report.entries, 'entry', 'entries')} read in ${formatDuration(report.durationMs)}`,
      ]);
    }
  },
});
