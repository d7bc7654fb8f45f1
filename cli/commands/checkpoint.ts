import type { Argv } from 'yargs';
import type { CliCommand, CommandContext, GlobalArgs } from '../command.js';
import { checkpointCancelCommand } from './checkpoint-cancel.js';
import { checkpointCreateCommand } from './checkpoint-create.js';
import { checkpointDeleteCommand } from './checkpoint-delete.js';
import { checkpointListCommand } from './checkpoint-list.js';
import { checkpointPinCommand } from './checkpoint-pin.js';
import { checkpointPruneCommand } from './checkpoint-prune.js';
import { checkpointRestoreCommand } from './checkpoint-restore.js';
import { checkpointShowCommand } from './checkpoint-show.js';
import { checkpointUnpinCommand } from './checkpoint-unpin.js';
import { checkpointVerifyCommand } from './checkpoint-verify.js';

const subcommands: readonly CliCommand[] = [
  checkpointCreateCommand,
  checkpointListCommand,
  checkpointShowCommand,
  checkpointDeleteCommand,
  checkpointPinCommand,
  checkpointUnpinCommand,
  checkpointPruneCommand,
  checkpointVerifyCommand,
  checkpointCancelCommand,
  checkpointRestoreCommand,
];

/** `checkpoint <subcommand>`. Chosen without a subcommand, it selects null: the caller shows help (exit 2). */
export const checkpointGroup = {
  command: 'checkpoint',
  attach(
    y: Argv<GlobalArgs>,
    select: (run: ((ctx: CommandContext) => Promise<void>) | null) => void,
  ): Argv<GlobalArgs> {
    return y.command(
      'checkpoint',
      'Create, list, inspect, verify, prune and restore checkpoints',
      (sub) => {
        let s = sub;
        for (const c of subcommands) s = c.attach(s, select);
        return s;
      },
      () => select(null),
    ) as Argv<GlobalArgs>;
  },
};
