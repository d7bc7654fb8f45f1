import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { defineCommand } from '../command.js';
import { printJson, printLines } from '../output.js';
import { repoOptions, repoUrl, sourceArgs, withRepository, withStorage } from './backup-repo.js';

export const backupInitCommand = defineCommand({
  command: 'init',
  describe: 'Create a repository: encrypted (format 3) with the password given, unless --insecure-no-encryption; or with the keys of another (--copy-keys-from)',
  builder: (y) =>
    repoOptions(
      y
        .option('insecure-no-encryption', {
          type: 'boolean',
          default: false,
          describe: 'Store backups unencrypted and unauthenticated: whoever can read the store reads the database, whoever can write it can change it',
        })
        .option('copy-keys-from', {
          type: 'string',
          describe: "Make it with the keys (same master key, same key objects: the same passwords open it) and chunk parameters of this encrypted repository, so that `backup copy` between them moves packs as they are",
        })
        .option('from-password-file', { type: 'string', describe: "With --copy-keys-from: a file holding that repository's password (default: the password options' own)" }),
      true,
    ),
  run: async (argv, ctx) => {
    const url = repoUrl(argv.repo);
    if (argv.fromPasswordFile !== undefined && argv.copyKeysFrom === undefined) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, '--from-password-file goes with --copy-keys-from');
    if (argv.copyKeysFrom !== undefined && argv.insecureNoEncryption) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, '--copy-keys-from makes an encrypted repository: it takes no --insecure-no-encryption');
    const info =
      argv.copyKeysFrom !== undefined
        ? await withRepository(sourceArgs(argv, repoUrl(argv.copyKeysFrom), argv.fromPasswordFile), (source) =>
            withStorage(argv, async (storage) => {
              const { Repository } = await import('../../agent/repository/repository.js');
              if (!source.codec.encrypted) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${source.description} is not encrypted: it has no keys to copy`);
              const repo = await Repository.createWithKeysOf(storage, source, { cryptoThreads: 0 });
              return { repository: url, id: repo.config.id, format: repo.formatVersion, encrypted: repo.codec.encrypted, keyId: repo.keyId };
            }),
            { cryptoThreads: 0 }, // only its keys are read
          )
        : await withStorage(argv, async (storage, password) => {
            const { Repository } = await import('../../agent/repository/repository.js');
            if ((await storage.stat('config')) !== null) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${storage.description} is a repository already`);
            if (argv.insecureNoEncryption && password) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, '--insecure-no-encryption takes no password');
            const repo = await Repository.open(storage, { create: true, password, insecureNoEncryption: argv.insecureNoEncryption, cryptoThreads: 0 });
            return { repository: url, id: repo.config.id, format: repo.formatVersion, encrypted: repo.codec.encrypted, keyId: repo.keyId };
          });
    if (ctx.json) printJson(ctx.io.stdout, info);
    else
      printLines(ctx.io.stdout, [
        `created repository ${info.id} at ${info.repository} (format ${info.format}, ${info.encrypted ? `encrypted; key ${info.keyId}` : 'NOT encrypted'})`,
        ...(argv.copyKeysFrom !== undefined ? [`with the keys of ${argv.copyKeysFrom}: its passwords open this one too`] : []),
        ...(info.encrypted ? ['without its password (or another key added with `backup key add`) no backup in it can be read: keep it safe'] : []),
      ]);
  },
});
