import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Argv } from 'yargs';
import { parseBackupId } from '../../shared/input-rules.js';
import type { OpenOptions, Repository } from '../../agent/repository/repository.js';
import type { PasswordSource } from '../../agent/repository/repository-keys.js';
import type { Storage } from '../../agent/storage/storage.js';
import { invalidArgument } from '../run-command.js';

/**
 * What the backup commands share to work on a repository directly, without the agent: `--repo` and the
 * S3 flags. Credentials are never flags: the AWS SDK reads them as it always does (AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, web identity, instance metadata).
 */

export interface RepoArgs {
  repo: string | undefined;
  s3Endpoint: string | undefined;
  s3Region: string | undefined;
  s3PathStyle: boolean | undefined;
  passwordFile: string | undefined;
  passwordCommand: string | undefined;
}

/** Adds --repo and the S3 and password flags. `required`: --repo must be given (commands that never use the agent). */
export function repoOptions<T>(y: Argv<T>, required: boolean): Argv<T & Partial<RepoArgs>> {
  return storageOptions(
    y.option('repo', {
      type: 'string',
      describe: required
        ? 'The backup repository: s3://bucket/prefix, file:///path or a directory'
        : 'Work on this repository directly, without the agent: s3://bucket/prefix, file:///path or a directory',
      ...(required ? { demandOption: true } : {}),
    }),
  ) as unknown as Argv<T & Partial<RepoArgs>>;
}

/** The S3 flags and the password flags: how a repository named by a URL is reached and opened. `scope`: which repositories they are for. */
export function storageOptions<T>(y: Argv<T>, scope = 'With --repo'): Argv<T & Partial<Omit<RepoArgs, 'repo'>>> {
  return y
    .option('s3-endpoint', { type: 'string', describe: 'With an s3:// repository: the endpoint (default: $AWS_ENDPOINT_URL_S3, else AWS)' })
    .option('s3-region', { type: 'string', describe: 'With an s3:// repository: the region (default: $AWS_REGION, else us-east-1)' })
    .option('s3-path-style', { type: 'boolean', describe: 'With an s3:// repository: path-style addressing (default: on with --s3-endpoint)' })
    .option('password-file', { type: 'string', describe: `${scope}: a file holding the repository's password (default: $NODE_ADMIN_PASSWORD_FILE, else the systemd credential node-admin-password)` })
    .option('password-command', { type: 'string', describe: `${scope}: a command that prints the repository's password (a secrets manager)` }) as unknown as Argv<
    T & Partial<Omit<RepoArgs, 'repo'>>
  >;
}

/** The S3 flags only make sense with --repo (the agent has its own configuration). */
export function checkRepoFlags(argv: Partial<RepoArgs>): void {
  if (argv.repo === undefined && (argv.s3Endpoint !== undefined || argv.s3Region !== undefined || argv.s3PathStyle !== undefined)) {
    throw invalidArgument('--s3-endpoint, --s3-region and --s3-path-style only go with --repo (the agent uses its own configuration)');
  }
  if (argv.repo === undefined && (argv.passwordFile !== undefined || argv.passwordCommand !== undefined)) {
    throw invalidArgument('--password-file and --password-command only go with --repo (the agent has its own)');
  }
}

/** --repo as a URL: `s3://...` and `file://...` as given; anything without a scheme is a directory. */
export function repoUrl(value: unknown): string {
  if (typeof value !== 'string' || value === '') throw invalidArgument('--repo needs a URL (s3://bucket/prefix, file:///path) or a directory');
  if (/^[a-z][a-z0-9+.-]*:/i.test(value)) return value;
  return pathToFileURL(path.resolve(value)).href;
}

/**
 * The arguments that reach a source repository at `url` (`backup copy --from`, `backup init
 * --copy-keys-from`): the S3 flags as given; its password from `fromPasswordFile` where given (a source
 * with another password), else from the usual password options.
 */
export function sourceArgs(argv: Partial<RepoArgs>, url: string, fromPasswordFile: string | undefined): Partial<RepoArgs> {
  return { ...argv, repo: url, ...(fromPasswordFile !== undefined ? { passwordFile: fromPasswordFile, passwordCommand: undefined } : {}) };
}

/** A backup id given as the `<id>` argument. */
export function requireBackupId(value: unknown): string {
  return parseBackupId(value, 'the argument');
}

/**
 * withRepository's options for a command that opens blobs or large objects as soon as the repository
 * is open (a restore, a verify, `backup changes`): an encrypted repository's crypto threads start while
 * its key is derived, not at the first blob (OpenOptions.startThreads). A listing opens small objects in
 * its own thread and goes without.
 */
export const EARLY_THREADS = { startThreads: true } as const;

/**
 * Opens the storage and the (existing) repository at --repo (with its password, where it is
 * encrypted), runs `fn`, and closes both. The engine (and the S3 SDK) is loaded only here. Storage logs
 * are dropped: what fails reaches the user as the one error line, and retries happen quietly.
 */
export async function withRepository<T>(argv: Partial<RepoArgs>, fn: (repo: Repository) => Promise<T>, options: Omit<OpenOptions, 'password'> = {}): Promise<T> {
  return withStorage(argv, async (storage, password) => {
    const { Repository } = await import('../../agent/repository/repository.js');
    const repo = await Repository.open(storage, { create: false, ...options, password });
    try {
      return await fn(repo);
    } finally {
      await repo.codec.close();
    }
  });
}

/** Opens the storage at --repo and names the password source (not read yet), runs `fn`, closes the storage. */
export async function withStorage<T>(argv: Partial<RepoArgs>, fn: (storage: Storage, password: PasswordSource | null) => Promise<T>): Promise<T> {
  const url = repoUrl(argv.repo);
  const s3 = {
    ...(argv.s3Endpoint !== undefined ? { endpoint: argv.s3Endpoint } : {}),
    ...(argv.s3Region !== undefined ? { region: argv.s3Region } : {}),
    ...(argv.s3PathStyle !== undefined ? { forcePathStyle: argv.s3PathStyle } : {}),
  };
  // No logger: the CLI logs nothing, and not loading pino saves ~45 ms of start.
  const [{ openStorage }, { passwordSource }] = await Promise.all([
    import('../../agent/storage/open-storage.js'),
    import('../../agent/repository/password-source.js'),
  ]);
  const password = passwordSource({ file: argv.passwordFile ?? null, command: argv.passwordCommand ?? null });
  const storage = await openStorage(url, { s3 });
  try {
    return await fn(storage, password);
  } finally {
    await storage.close().catch(() => {});
  }
}
