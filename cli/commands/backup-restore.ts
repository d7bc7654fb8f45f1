import { defineCommand, requireDir } from '../command.js';
import { clean, formatBytes, formatDuration, plural, printJson, printLines } from '../output.js';
import { invalidArgument } from '../run-command.js';
import { progressBar } from './backup-format.js';
import { EARLY_THREADS, repoOptions, requireBackupId, withRepository } from './backup-repo.js';
import { describeMoment, parseMoment, parseTimelineId } from '../../shared/input-rules.js';

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
        describe: 'Restore to this moment from the log archive: an ISO-8601 time with its zone, seq:<n> (the state right after the write batch holding sequence number n) or "latest"',
      })
      .option('timeline', {
        type: 'string',
        describe: 'With --at: only this timeline (default: the newest that holds the moment)',
      })
      .option('concurrency', {
        type: 'string', // parsed here: a number option would turn "abc" into NaN before the message could quote it
        describe: `Reads from the repository at once, 1-${MAX_CONCURRENCY} (default: 4 from S3, sized to keep memory under 128 MiB; 12 from a directory); more for a store far away`,
      }),
  run: async (argv, ctx) => {
    if (argv.at !== undefined && argv.id !== undefined) throw invalidArgument('give a backup id or --at, not both (--at picks the base backup itself)');
    if (argv.at === undefined && argv.id === undefined) throw invalidArgument('give a backup id, or --at <time|seq:n|latest> to restore to a moment');
    if (argv.timeline !== undefined && argv.at === undefined) throw invalidArgument('--timeline goes with --at');
    const at = argv.at !== undefined ? parseMoment(argv.at, '--at') : null;
    const timeline = argv.timeline !== undefined ? { timeline: parseTimelineId(argv.timeline, '--timeline') } : {};
    const id = at === null ? requireBackupId(argv.id) : null;
    const to = requireDir('to', argv.to);
    const concurrency = argv.concurrency === undefined ? {} : { concurrency: parseConcurrency(argv.concurrency) };
    const bar = progressBar(ctx.io, 'restore');
    if (at !== null) {
      const { restoreToMoment } = await import('../../agent/log-archive/restore-to-moment.js');
      let result;
      try {
        result = await withRepository(argv, (repo) => restoreToMoment({ repo, at, to, ...timeline, ...concurrency, onProgress: (p) => bar?.update(p.bytesDone, p.bytesTotal) }), EARLY_THREADS);
      } finally {
        bar?.finish();
      }
      const reached = { time: new Date(result.reached.time).toISOString(), sequence: result.reached.sequence };
      const requested = describeMoment(result.requested);
      const behindMs = result.requested.kind === 'time' ? result.requested.ms - result.reached.time : null;
      if (ctx.json) {
        printJson(ctx.io.stdout, {
          path: result.path,
          requested,
          reached,
          behindMs,
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
        behindMs === null
          ? `restored the database as of sequence ${reached.sequence} (the batch holding ${requested}, read ${reached.time}) into ${dir}`
          : `restored the database as of ${reached.time} (sequence ${reached.sequence}, ${formatDuration(behindMs)} before the requested ${requested}) into ${dir}`,
        `from backup ${clean(result.backup)} and ${plural(result.batches, 'archived batch', 'archived batches')} of timeline ${clean(result.timeline)}, in ${formatDuration(result.durationMs)}`,
        ...NEXT_STEPS(dir),
      ]);
      return;
    }
    const { restoreBackup } = await import('../../agent/backup/restore-backup.js');
    let result;
    try {
      result = await withRepository(argv, (repo) => restoreBackup({ repo, id: id!, to, ...concurrency, onProgress: (p) => bar?.update(p.bytesDone, p.bytesTotal) }), EARLY_THREADS);
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
