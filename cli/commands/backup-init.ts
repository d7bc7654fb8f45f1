import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { defineCommand } from '../command.js';
import { printJson, printLines } from '../output.js';
import { repoOptions, repoUrl, withStorage } from './backup-repo.js';

export const backupInitCommand = defineCommand({
  command: 'init',
  describe: 'Create a repository: encrypted (format 3) with the password given, unless --insecure-no-encryption',
  builder: (y) =>
    repoOptions(
      y.option('insecure-no-encryption', {
        type: 'boolean',
        default: false,
        describe: 'Store backups unencrypted and unauthenticated: whoever can read the store reads the database, whoever can write it can change it',
      }),
      true,
    ),
  run: async (argv, ctx) => {
    const url = repoUrl(argv.repo);
    const info = await withStorage(argv, async (storage, password) => {
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
        ...(info.encrypted ? ['without its password (or another key added with `backup key add`) no backup in it can be read: keep it safe'] : []),
      ]);
  },
});
