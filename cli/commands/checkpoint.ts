import { defineGroup, type CliCommand } from '../command.js';
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

export const checkpointGroup = defineGroup('checkpoint', 'Create, list, inspect, verify, prune and restore checkpoints', subcommands);
