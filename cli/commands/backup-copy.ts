import path from 'node:path';
import type { ArchiveCopyProgress, ArchiveCopySummary, CopyBackupsRequest, CopyProgress, CopySelection, CopySummary } from '../../shared/api.js';
import { parseBackupId, parseMoment } from '../../shared/input-rules.js';
import { MAX_COPY_LIMIT } from '../../shared/routes.js';
import { cancelOnInterrupt } from '../cancel-on-interrupt.js';
import { defineCommand, type CommandContext } from '../command.js';
import { clean, formatBytes, formatDuration, plural, printLines } from '../output.js';
import { invalidArgument } from '../run-command.js';
import { progressBar } from './backup-format.js';
import { repoUrl, sourceArgs, storageOptions, withStorage, type RepoArgs } from './backup-repo.js';

/** The most --limit-upload takes (MB/s): beyond any link, and a typo's guard. */
const MAX_LIMIT_MB = MAX_COPY_LIMIT / 1_000_000;

export const backupCopyCommand = defineCommand({
  command: 'copy [ids..]',
  describe:
    "Copy backups into another repository (a second copy elsewhere), resumably: from the agent's repository through the agent, or with --from from any repository without it; a destination that does not exist is made with the source's keys",
  builder: (y) =>
    storageOptions(
      y
        .positional('ids', { type: 'string', array: true, describe: 'The backups to copy (or --latest, --since, --all)' })
        .option('from', { type: 'string', describe: "The source repository, copied without the agent: s3://bucket/prefix, file:///path or a directory (default: the agent's own, through the agent)" })
        .option('to', { type: 'string', demandOption: true, describe: 'The destination repository (made if there is none)' })
        .option('latest', { type: 'string', describe: 'Copy the newest N backups' })
        .option('since', { type: 'string', describe: 'Copy the backups made at or after this ISO-8601 time (with its zone)' })
        .option('all', { type: 'boolean', default: false, describe: 'Copy every backup' })
        .option('log-archive', {
          type: 'boolean',
          default: false,
          describe: 'Also copy the log archive (archived log segments and timelines) and the backups its timelines start from, so that restore --at works from the copy',
        })
        .option('from-password-file', { type: 'string', describe: "With --from: a file holding the source's password, where it differs from the destination's (default: the password options' own)" })
        .option('limit-upload', { type: 'string', describe: 'Store at most this many MB/s (10^6 bytes) at the destination' })
        .option('insecure-no-encryption', { type: 'boolean', default: false, describe: 'Write into (or make) a destination without encryption' })
        .option('allow-format-2', { type: 'boolean', default: false, describe: 'Write into a format 2 destination (not encrypted)' }),
      "For both repositories with --from (the source: unless --from-password-file); through the agent, for the destination (the agent reads the password file; default: the agent's own password)",
    ),
  run: async (argv, ctx) => {
    const select = parseSelection(argv, argv.logArchive);
    const bandwidthLimit = argv.limitUpload !== undefined ? parseLimit(argv.limitUpload) : null;
    const toUrl = repoUrl(argv.to);
    // --json: NDJSON, a `{"progress":…}` line as the copy goes, then one `{"summary":…}` line.
    const bar = ctx.json ? null : progressBar(ctx.io, 'copy');
    const onProgress = (p: CopyProgress | ArchiveCopyProgress) => {
      if (ctx.json) ctx.io.stdout.write(`${JSON.stringify({ progress: p })}\n`);
      else if (p.phase === 'log-archive') bar?.update(0, 0, `log archive: ${p.objects} objects, ${formatBytes(p.bytes)}`);
      else bar?.update(p.bytesDone, p.bytesTotal, `sent ${formatBytes(p.bytesSent)}`);
    };
    let summary: CopySummary;
    try {
      summary = argv.from === undefined ? await copyThroughAgent(argv, ctx, toUrl, select, bandwidthLimit, onProgress) : await copyOffline(argv, argv.from, toUrl, select, bandwidthLimit, onProgress);
    } finally {
      bar?.finish();
    }
    if (ctx.json) ctx.io.stdout.write(`${JSON.stringify({ summary })}\n`);
    else printLines(ctx.io.stdout, formatCopySummary(summary));
  },
});

type CopyArgs = Partial<RepoArgs> & { fromPasswordFile?: string | undefined; insecureNoEncryption: boolean; allowFormat2: boolean; logArchive: boolean };

/** `--from` given: both repositories opened here, no agent. */
async function copyOffline(argv: CopyArgs, from: string, toUrl: string, select: CopySelection | null, bandwidthLimit: number | null, onProgress: (p: CopyProgress | ArchiveCopyProgress) => void): Promise<CopySummary> {
  const fromUrl = repoUrl(from);
  if (fromUrl === toUrl) throw invalidArgument('--from and --to name the same repository');
  const [{ Repository }, { openCopyDestination }, { copyRepository }] = await Promise.all([
    import('../../agent/repository/repository.js'),
    import('../../agent/backup/copy-session.js'),
    import('../../agent/backup/copy-repository.js'),
  ]);
  const started = Date.now();
  return withStorage(sourceArgs(argv, from, argv.fromPasswordFile), async (fromStorage, fromPassword) => {
    // An S3 destination's SDK (0.2 s and more of the main thread to load) loads while the source's key
    // is derived (scrypt, off the main thread), rather than after: begun once the password is read, just
    // before the derivation. (Begun before the open, its loading held the derivation back as long.)
    const preload = toUrl.startsWith('s3:') && !fromUrl.startsWith('s3:');
    const password = fromPassword && preload ? async () => {
      const p = await fromPassword();
      import('../../agent/storage/s3-storage.js').catch(() => {});
      return p;
    } : fromPassword;
    const source = await Repository.open(fromStorage, { create: false, password, startThreads: true });
    try {
      return await withStorage({ ...argv, repo: toUrl }, async (toStorage, toPassword) => {
        const r = await copyRepository({
          from: source,
          openTo: () => openCopyDestination(toStorage, source, { password: toPassword, insecureNoEncryption: argv.insecureNoEncryption, allowFormat2: argv.allowFormat2 }),
          select,
          logArchive: argv.logArchive,
          bandwidthLimit,
          onProgress,
        });
        return { from: fromUrl, to: toUrl, durationMs: Date.now() - started, ...r };
      });
    } finally {
      await source.codec.close();
    }
  });
}

/**
 * No `--from`: the agent copies its own repository (POST /v1/backups/copy) while it goes on serving.
 * The destination's S3 flags and password file travel as settings (the agent reads the file); a password
 * command never does (the socket does not make the agent run commands). Ctrl-C asks the agent to stop
 * the copy (CANCELLED, exit 130); a second one leaves at once.
 */
async function copyThroughAgent(
  argv: CopyArgs,
  ctx: CommandContext,
  toUrl: string,
  select: CopySelection | null,
  bandwidthLimit: number | null,
  onProgress: (p: CopyProgress | ArchiveCopyProgress) => void,
): Promise<CopySummary> {
  if (argv.fromPasswordFile !== undefined) throw invalidArgument('--from-password-file goes with --from (through the agent, the source is its own repository)');
  if (argv.passwordCommand !== undefined) throw invalidArgument("--password-command goes with --from: through the agent, give the destination's password with --password-file (the agent reads it)");
  const s3 = {
    ...(argv.s3Endpoint !== undefined ? { endpoint: argv.s3Endpoint } : {}),
    ...(argv.s3Region !== undefined ? { region: argv.s3Region } : {}),
    ...(argv.s3PathStyle !== undefined ? { forcePathStyle: argv.s3PathStyle } : {}),
  };
  const req: CopyBackupsRequest = {
    to: toUrl,
    ...(select !== null ? { select } : {}),
    ...(argv.logArchive ? { logArchive: true } : {}),
    ...(bandwidthLimit !== null ? { limitUploadBytesPerSecond: bandwidthLimit } : {}),
    ...(Object.keys(s3).length > 0 ? { s3 } : {}),
    ...(argv.passwordFile !== undefined ? { passwordFile: path.resolve(argv.passwordFile) } : {}),
    ...(argv.insecureNoEncryption ? { insecureNoEncryption: true } : {}),
    ...(argv.allowFormat2 ? { allowFormat2: true } : {}),
  };
  const client = await ctx.agent();
  return cancelOnInterrupt(
    () => client.cancelCopy(),
    () => client.copyBackups(req, onProgress),
  );
}

/** Exactly one way to select: ids, --latest, --since or --all; with --log-archive, none (null: only what the archive needs). */
function parseSelection(argv: { ids?: string[] | undefined; latest?: string | undefined; since?: string | undefined; all: boolean }, logArchive: boolean): CopySelection | null {
  const ids = argv.ids ?? [];
  const ways = [ids.length > 0, argv.latest !== undefined, argv.since !== undefined, argv.all].filter(Boolean).length;
  if (ways === 0 && logArchive) return null;
  if (ways !== 1) throw invalidArgument('say which backups to copy, one way: backup ids, --latest N, --since <time>, --all (or only --log-archive)');
  if (ids.length > 0) return { ids: ids.map((id) => parseBackupId(id, 'the argument')) };
  if (argv.latest !== undefined) {
    const n = /^[0-9]{1,6}$/.test(argv.latest) ? Number(argv.latest) : 0;
    if (n < 1) throw invalidArgument(`--latest must be a whole number from 1, got ${JSON.stringify(argv.latest)}`);
    return { latest: n };
  }
  if (argv.since !== undefined) {
    const m = parseMoment(argv.since, '--since', false);
    if (m.kind !== 'time') throw invalidArgument(`--since takes a time (an ISO-8601 time with its zone), got ${JSON.stringify(argv.since)}`);
    return { since: new Date(m.ms).toISOString() };
  }
  return { all: true };
}

function parseLimit(value: string): number {
  const mb = /^[0-9]{1,6}(\.[0-9]{1,3})?$/.test(value) ? Number(value) : NaN;
  if (!(mb > 0 && mb <= MAX_LIMIT_MB)) throw invalidArgument(`--limit-upload must be a number of MB/s above 0, up to ${MAX_LIMIT_MB}, got ${JSON.stringify(value)}`);
  return Math.round(mb * 1_000_000);
}

/** What a copy says it did: the snapshots, then what it sent. */
export function formatCopySummary(s: CopySummary): string[] {
  const how = s.mode === 'packs' ? 'packs moved as they are: same keys' : 'blobs sealed again for the destination';
  return [
    ...(s.created ? [`made the repository ${clean(s.to)}${s.mode === 'packs' ? ` with the keys of ${clean(s.from)}` : ''}`] : []),
    ...s.copied.map((id) => `copied ${clean(id)}`),
    `${plural(s.copied.length, 'backup')} copied, ${s.alreadyThere.length} already there; sent ${plural(s.packsSent, 'pack')}, ${plural(s.blobsSent, 'blob')}, ${formatBytes(s.bytesSent)} in ${formatDuration(s.durationMs)} (${how})`,
    ...(s.packsRecovered > 0 ? [`reused ${plural(s.packsRecovered, 'pack')} an interrupted copy had stored`] : []),
    ...(s.logArchive ? formatArchiveCopy(s.logArchive) : []),
  ];
}

/** The log archive's part: what was stored, then what the destination can restore now. */
function formatArchiveCopy(a: ArchiveCopySummary): string[] {
  const restorable = a.windows.timelines.filter((t) => t.from !== null && t.to !== null);
  return [
    `log archive: ${plural(a.segments, 'segment')} (${formatBytes(a.bytes)}) and ${plural(a.records, 'timeline record')} stored, ${a.present} already there, over ${plural(a.timelines, 'timeline')}`,
    ...(restorable.length === 0
      ? ['the destination has no restorable moment yet']
      : restorable.map((t) => `timeline ${clean(t.id)}: restorable at the destination from ${t.from} to ${t.to}${t.brokenAfterSequence !== null ? ` (broken after sequence ${t.brokenAfterSequence})` : ''}`)),
  ];
}
