import type { BackupRecord } from '../../shared/api.js';
import type { Snapshot } from '../repository/format.js';

/**
 * A snapshot as the API shows it (list, show): the record without what only the run that made it knows,
 * and whether its repository is encrypted.
 */
export function backupRecordOf(s: Snapshot, encrypted: boolean): BackupRecord {
  return { id: s.id, createdAt: s.createdAt, pinned: s.pinned, checkpoint: s.checkpoint, files: s.files, bytes: s.bytes, encrypted };
}
