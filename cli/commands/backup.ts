import type { Argv } from 'yargs';
import type { CliCommand, CommandContext, GlobalArgs } from '../command.js';
import { backupCancelCommand } from './backup-cancel.js';
import { backupCreateCommand } from './backup-create.js';
import { backupListCommand } from './backup-list.js';
import { backupPruneCommand } from './backup-prune.js';
import { backupRestoreCommand } from './backup-restore.js';
import { backupShowCommand } from './backup-show.js';
import { backupVerifyCommand } from './backup-verify.js';

const subcommands: readonly CliCommand[] = [
  backupCreateCommand,
  backupListCommand,
  backupShowCommand,
  backupVerifyCommand,
  backupPruneCommand,
  backupCancelCommand,
  backupRestoreCommand,
];

/** `backup <subcommand>`. Chosen without a subcommand, it selects null: the caller shows help (exit 2). */
export const backupGroup = {
  command: 'backup',
  attach(
    y: Argv<GlobalArgs>,
    select: (run: ((ctx: CommandContext) => Promise<void>) | null) => void,
  ): Argv<GlobalArgs> {
    return y.command(
      'backup',
      'Back checkpoints up to a remote repository (S3 or a directory), list, verify, prune and restore backups',
      (sub) => {
        let s = sub;
        for (const c of subcommands) s = c.attach(s, select);
        return s;
      },
      () => select(null),
    ) as Argv<GlobalArgs>;
  },
};
