import type { ChangeBatch, ChangeEntry, ChangesRequest, ChangesSummary } from '../../shared/api.js';
import { parseMoment, parseTimelineId } from '../../shared/input-rules.js';
import { defineCommand } from '../command.js';
import { LineWriter } from '../line-writer.js';
import { clean, plural } from '../output.js';
import { invalidArgument } from '../run-command.js';
import { checkRepoFlags, EARLY_THREADS, repoOptions, withRepository } from './backup-repo.js';

export const backupChangesCommand = defineCommand({
  command: 'changes',
  describe: 'The archived write batches between two moments, one line each: time, sequence numbers, puts/deletes, keys (through the agent, or --repo)',
  builder: (y) =>
    repoOptions(y, false)
      .conflicts('repo', 'socket')
      .option('from', { type: 'string', describe: 'After this moment (its state excluded): an ISO-8601 time with its zone, or seq:<n> (default: the timeline\'s first base)' })
      .option('to', { type: 'string', describe: 'Up to this moment (included): an ISO-8601 time, seq:<n> or "latest" (default: latest)' })
      .option('timeline', { type: 'string', describe: 'In this timeline (default: the newest that holds the moments)' })
      .option('key', { type: 'string', describe: 'Only the batches that change this key (UTF-8), and of them only its changes' })
      .option('prefix', { type: 'string', describe: 'Only the batches that change a key starting with this (UTF-8), and of them only those changes' })
      .option('values', { type: 'boolean', default: false, describe: 'Print the values put, too' }),
  run: async (argv, ctx) => {
    checkRepoFlags(argv);
    if (argv.key !== undefined && argv.prefix !== undefined) throw invalidArgument('give --key or --prefix, not both');
    for (const [flag, v] of [['--key', argv.key], ['--prefix', argv.prefix]] as const) {
      if (v !== undefined && v === '') throw invalidArgument(`${flag} must not be empty`);
    }
    // Checked here, before any I/O; the listing (here or in the agent) parses them once more.
    if (argv.from !== undefined) parseMoment(argv.from, '--from', false);
    if (argv.to !== undefined) parseMoment(argv.to, '--to');
    const req: ChangesRequest = {
      ...(argv.from !== undefined ? { from: argv.from } : {}),
      ...(argv.to !== undefined ? { to: argv.to } : {}),
      ...(argv.timeline !== undefined ? { timeline: parseTimelineId(argv.timeline, '--timeline') } : {}),
      ...(argv.key !== undefined ? { key: argv.key } : {}),
      ...(argv.prefix !== undefined ? { prefix: argv.prefix } : {}),
      ...(argv.values ? { values: true } : {}),
    };
    // --json: NDJSON, a `{"batch":…}` line per batch, then one `{"summary":…}` line.
    const lines = new LineWriter(ctx.io.stdout);
    const onBatch = (b: ChangeBatch) => lines.line(ctx.json ? JSON.stringify({ batch: b }) : formatBatch(b));
    try {
      let summary: ChangesSummary;
      if (argv.repo === undefined) {
        summary = await (await ctx.agent()).backupChanges(req, onBatch);
      } else {
        const { archiveChanges, parseChangesRequest } = await import('../../agent/log-archive/archive-changes.js');
        summary = await withRepository(argv, async (repo) => {
          const listing = archiveChanges(repo, parseChangesRequest(req));
          for (;;) {
            const next = await listing.next();
            if (next.done) return next.value;
            await onBatch(next.value);
          }
        }, EARLY_THREADS);
      }
      await lines.line(ctx.json ? JSON.stringify({ summary }) : formatSummary(summary, argv.key !== undefined || argv.prefix !== undefined));
      await lines.flush();
    } catch (err) {
      // `node-admin backup changes | head`: the reader has what it wanted; the listing stops there, quietly.
      if (lines.closed) return;
      await lines.flush().catch(() => {}); // what was listed before the failure, then the error
      throw err;
    }
  },
});

/** `2026-11-24T00:41:07.123Z  seq 1234..1236  2 puts, 1 delete  +a +b -c` (with --values: `+a="1"`). */
export function formatBatch(b: ChangeBatch): string {
  const seq = b.last === b.sequence ? `seq ${b.sequence}` : `seq ${b.sequence}..${b.last}`;
  const counts = [b.puts > 0 ? plural(b.puts, 'put') : null, b.deletes > 0 ? plural(b.deletes, 'delete') : null].filter((x) => x !== null).join(', ');
  return `${b.time}  ${seq}  ${counts}  ${b.changes.map(formatChange).join(' ')}`;
}

function formatChange(c: ChangeEntry): string {
  const key = showBytes(c.key, c.keyEncoding);
  if (c.type === 'del') return `-${key}`;
  return c.value === undefined ? `+${key}` : `+${key}=${showBytes(c.value, c.valueEncoding, true)}`;
}

/** Plain where it cannot be misread (printable, no blank, no quote or `=`), else JSON-quoted; base64 as `b64:…`. */
function showBytes(text: string, encoding: 'base64' | undefined, quote = false): string {
  if (encoding === 'base64') return `b64:${text}`;
  return !quote && /^[\x21-\x7e]+$/.test(text) && !/["=]/.test(text) ? text : clean(JSON.stringify(text));
}

function formatSummary(s: ChangesSummary, filtered: boolean): string {
  const range = s.firstSequence === null ? 'no batch' : `sequences ${s.firstSequence}..${s.lastSequence}`;
  const listed = filtered ? `${plural(s.batches, 'batch', 'batches')} matched of ${s.scanned} read` : plural(s.batches, 'batch', 'batches');
  return `${listed} (${range}) in timeline ${clean(s.timeline)}, after ${clean(s.from)} up to ${clean(s.to)}`;
}
