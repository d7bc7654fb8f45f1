import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { defineCommand } from '../command.js';
import { formatTable, formatTime, printJson, printLines } from '../output.js';
import { checkRepoFlags, repoOptions, withRepository } from './backup-repo.js';
import { invalidArgument } from '../run-command.js';

const ACTIONS = ['list', 'add', 'remove', 'passwd'] as const;

export const backupKeyCommand = defineCommand({
  command: 'key <action> [id]',
  describe: "Manage an encrypted repository's keys: list, add (a new password), remove <id>, passwd (change the password in use)",
  builder: (y) =>
    repoOptions(
      y
        .positional('action', { type: 'string', choices: ACTIONS, demandOption: true, describe: 'list | add | remove | passwd' })
        .positional('id', { type: 'string', describe: 'remove: the key to remove' })
        .option('new-password-file', { type: 'string', describe: 'add, passwd: a file holding the new password' })
        .option('new-password-command', { type: 'string', describe: 'add, passwd: a command that prints the new password' }),
      true,
    ),
  run: async (argv, ctx) => {
    checkRepoFlags(argv);
    const action = argv.action as (typeof ACTIONS)[number];
    const [{ passwordSource }, keys] = await Promise.all([
      import('../../agent/repository/password-source.js'),
      import('../../agent/repository/repository-keys.js'),
    ]);
    const wantsNew = action === 'add' || action === 'passwd';
    if (!wantsNew && (argv.newPasswordFile !== undefined || argv.newPasswordCommand !== undefined)) throw invalidArgument(`--new-password-file and --new-password-command go with add and passwd, not ${action}`);
    if (action === 'remove' && argv.id === undefined) throw invalidArgument('remove needs the id of the key to remove (see `backup key list`)');
    if (action !== 'remove' && argv.id !== undefined) throw invalidArgument(`${action} takes no key id`);
    // The new password is named before anything is opened, so a missing one fails before any work.
    const newPassword = wantsNew ? passwordSource({ file: argv.newPasswordFile ?? null, command: argv.newPasswordCommand ?? null }, {}) : null;
    if (wantsNew && !newPassword) throw invalidArgument(`${action} needs the new password: --new-password-file or --new-password-command`);

    const result = await withRepository(
      argv,
      async (repo) => {
        const { storage, master } = repo.keyAccess();
        switch (action) {
          case 'list': {
            const listed = await keys.listKeys(storage);
            return listed.map((k) => ({ id: k.id, inUse: k.id === repo.keyId, createdAt: k.file?.createdAt ?? null, hostname: k.file?.hostname ?? null, username: k.file?.username ?? null, readable: k.file !== null }));
          }
          case 'add': {
            const id = await keys.addKey(storage, master, await newPassword!());
            return { added: id };
          }
          case 'remove': {
            if (argv.id === repo.keyId) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `key ${argv.id} is the one in use (the password given opens it): remove it with another key's password, or use passwd`);
            await keys.removeKey(storage, argv.id!);
            return { removed: argv.id! };
          }
          case 'passwd': {
            // The new key is stored before the old one goes: cut short in between, both open the repository.
            const id = await keys.addKey(storage, master, await newPassword!());
            await keys.removeKey(storage, repo.keyId!);
            return { added: id, removed: repo.keyId! };
          }
        }
      },
      { cryptoThreads: 0 },
    );
    if (ctx.json) return printJson(ctx.io.stdout, result);
    if (Array.isArray(result)) {
      printLines(
        ctx.io.stdout,
        formatTable(
          [
            { header: '', value: (k) => (k.inUse ? '*' : '') },
            { header: 'ID', value: (k) => k.id },
            { header: 'CREATED', value: (k) => (k.createdAt ? formatTime(k.createdAt) : '-') },
            { header: 'HOST', value: (k) => k.hostname ?? '-' },
            { header: 'USER', value: (k) => (k.readable ? (k.username ?? '-') : '(unreadable)') },
          ],
          result,
        ),
      );
    } else {
      printLines(ctx.io.stdout, [
        ...('added' in result ? [`added key ${result.added}`] : []),
        ...('removed' in result ? [`removed key ${result.removed}`] : []),
      ]);
    }
  },
});
