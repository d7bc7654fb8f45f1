// PLACEHOLDER signatures (being implemented); the CLI codes against these.
import type { CheckpointRecord, VerifyReport } from '../shared/api.js';

export interface OfflineCheckpointOptions {
  dbPath: string;
  checkpointDir: string;
  label?: string | null;
  pin?: boolean;
}

export interface RestoreOptions {
  id: string;
  dbPath: string;
  checkpointDir: string;
}

export interface RestoreResult {
  id: string;
  dbPath: string;
  /** Where the database that was replaced now lives (a sibling of dbPath); never deleted. */
  replacedPath: string;
}

/** Takes a checkpoint of a database no process has open. Rejects with DATABASE_LOCKED if one does. */
export async function createOfflineCheckpoint(_o: OfflineCheckpointOptions): Promise<CheckpointRecord> {
  throw new Error('not implemented yet');
}

/** Swaps a checkpoint in as the database; the old one is kept aside. Rejects with DATABASE_LOCKED if the node runs. */
export async function restoreCheckpoint(_o: RestoreOptions): Promise<RestoreResult> {
  throw new Error('not implemented yet');
}

/** Lists the checkpoints in a checkpoint directory without an agent (oldest first). */
export async function listCheckpointsOffline(_checkpointDir: string): Promise<CheckpointRecord[]> {
  throw new Error('not implemented yet');
}

/** Opens a throwaway clone of the checkpoint and reads every entry. */
export async function verifyCheckpointOffline(_checkpointDir: string, _id: string): Promise<VerifyReport> {
  throw new Error('not implemented yet');
}
