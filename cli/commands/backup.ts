import { defineGroup, type CliCommand } from '../command.js';
import { backupCancelCommand } from './backup-cancel.js';
import { backupChangesCommand } from './backup-changes.js';
import { backupCopyCommand } from './backup-copy.js';
import { backupCreateCommand } from './backup-create.js';
import { backupInitCommand } from './backup-init.js';
import { backupKeyCommand } from './backup-key.js';
import { backupListCommand } from './backup-list.js';
import { backupPruneCommand } from './backup-prune.js';
import { backupRestoreCommand } from './backup-restore.js';
import { backupShowCommand } from './backup-show.js';
import { backupTimelineCommand } from './backup-timeline.js';
import { backupVerifyCommand } from './backup-verify.js';

const subcommands: readonly CliCommand[] = [
  backupInitCommand,
  backupKeyCommand,
  backupCreateCommand,
  backupListCommand,
  backupShowCommand,
  backupVerifyCommand,
  backupPruneCommand,
  backupCancelCommand,
  backupRestoreCommand,
  backupCopyCommand,
  backupTimelineCommand,
  backupChangesCommand,
];

export const backupGroup = defineGroup('backup', 'Back checkpoints up to a remote repository (S3 or a directory), list, verify, prune and restore backups', subcommands);
