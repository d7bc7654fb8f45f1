import { defineCommand, requireDir } from '../command.js';
import { clean, formatBytes, formatDuration, plural, printJson, printLines } from '../output.js';
import { invalidArgument } from '../run-command.js';
import { progressBar } from './backup-format.js';
import { repoOptions, requireBackupId, withRepository } from './backup-repo.js';
import { parseMoment } from './restore-moment.js';

/** Each read holds a buffer of up to a chunk (a few MiB): a bound that keeps a typo from exhausting memory. */
const MAX_CONCURRENCY = 64;

function parseConcurrency(value: string): number {
  const n = /^[0-9]{1,3}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= MAX_CONCURRENCY)) throw invalidArgument(`--concurrency must be a whole number from 1 to ${MAX_CONCURRENCY}, got ${JSON.stringify(value)}`);
  return n;
}

const NEXT_STEPS = (dir: string) => [
  'it is a complete database directory; to make it the node\'s database:',
  '  1. stop the node (systemctl stop <unit>, or Ctrl-C)',
  '  2. move its database directory aside:   mv <db> <db>.before-restore',
  `  3. move the restored one into place:     mv ${dir} <db>`,
  '  4. start the node; remove <db>.before-restore once you are satisfied',
  '(restore onto the same filesystem as <db> so that step 3 is a rename)',
];

export const backupRestoreCommand = defineCommand({
  command: 'restore [id]',
  describe: 'Download a backup, or the database as it was at a moment (--at), into a new directory (no agent needed)',
  builder: (y) =>
    repoOptions(y.positional('id', { type: 'string', describe: 'Backup id (or --at)' }), true)
      .option('to', {
        type: 'string',
        demandOption: true,
        describe: 'The directory to create (must not exist, or be empty)',
      })
      .option('at', {
        type: 'string',
        describe: 'Restore to this moment from the log archive: an ISO-8601 time with its zone, or "latest"',
      })
      .option('concurrency', {
        type: 'string', // parsed here: a number option would turn "abc" into NaN before the message could quote it
        describe: `Reads from the repository at once, 1-${MAX_CONCURRENCY} (default: 4 from S3, sized to keep memory under 128 MiB; 12 from a directory); more for a store far away`,
      }),
  run: async (argv, ctx) => {
    if (argv.at !== undefined && argv.id !== undefined) throw invalidArgument('give a backup id or --at, not both (--at picks the base backup itself)');
    if (argv.at === undefined && argv.id === undefined) throw invalidArgument('give a backup id, or --at <time|latest> to restore to a moment');
    const at = argv.at !== undefined ? parseMoment(argv.at) : null;
    const id = at === null ? requireBackupId(argv.id) : null;
    const to = requireDir('to', argv.to);
    const concurrency = argv.concurrency === undefined ? {} : { concurrency: parseConcurrency(argv.concurrency) };
    const bar = progressBar(ctx.io, 'restore');
    if (at !== null) {
      const { restoreToMoment } = await import('../../agent/log-archive/restore-to-moment.js');
      let result;
      try {
        result = await withRepository(argv, (repo) => restoreToMoment({ repo, at, to, ...concurrency, onProgress: (p) => bar?.update(p.bytesDone, p.bytesTotal) }));
      } finally {
        bar?.finish();
      }
      const reached = { time: new Date(result.reached.time).toISOString(), sequence: result.reached.sequence };
      if (ctx.json) {
        printJson(ctx.io.stdout, {
          path: result.path,
          requested: new Date(result.requested).toISOString(),
          reached,
          behindMs: result.requested - result.reached.time,
          timeline: result.timeline,
          backup: result.backup,
          batches: result.batches,
          segments: result.segments,
          durationMs: result.durationMs,
        });
        return;
      }
      const dir = clean(result.path);
      printLines(ctx.io.stdout, [
        `restored the database as of ${reached.time} (sequence ${reached.sequence}, ${formatDuration(result.requested - result.reached.time)} before the requested ${new Date(result.requested).toISOString()}) into ${dir}`,
        `from backup ${clean(result.backup)} and ${plural(result.batches, 'archived batch', 'archived batches')} of timeline ${clean(result.timeline)}, in ${formatDuration(result.durationMs)}`,
        ...NEXT_STEPS(dir),
      ]);
      return;
    }
    const { restoreBackup } = await import('../../agent/backup/restore-backup.js');
    let result;
    try {
      result = await withRepository(argv, (repo) => restoreBackup({ repo, id: id!, to, ...concurrency, onProgress: (p) => bar?.update(p.bytesDone, p.bytesTotal) }));
    } finally {
      bar?.finish();
    }
    if (ctx.json) {
      printJson(ctx.io.stdout, result);
      return;
    }
    const dir = clean(result.path);
    printLines(ctx.io.stdout, [
      `restored backup ${clean(result.id)} into ${dir} (${plural(result.files, 'file')}, ${formatBytes(result.bytes)}) in ${formatDuration(result.durationMs)}`,
      ...NEXT_STEPS(dir),
    ]);
  },
});
