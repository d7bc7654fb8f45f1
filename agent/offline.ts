import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import type { CheckpointRecord, VerifyReport } from '../shared/api.js';
import { parseCheckpointId, parseLabel } from '../shared/input-rules.js';
import { AdminError, ErrorCodes, toAdminError } from '../shared/errors.js';
import {
  checkpointDbPath,
  cloneDbSync,
  createCheckpointSync,
  describeCheckpointSync,
  listCheckpointsSync,
  removeTreeSync,
} from './checkpoint/checkpoint-dir.js';
import { newCheckpointId } from './checkpoint/checkpoint-id.js';
import { verifyCheckpoint } from './checkpoint/verify-checkpoint.js';
import { fsyncDir, isErrno } from './fs/durable-fs.js';
import { checkDbFilesSync } from './leveldb/check-db-files.js';

/**
 * What the CLI does with the node stopped (pre-upgrade hooks, restores): the same checkpoint code as
 * the agent, run directly in the CLI's process.
 */

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
export async function createOfflineCheckpoint(o: OfflineCheckpointOptions): Promise<CheckpointRecord> {
  const dbPath = path.resolve(o.dbPath);
  const label = parseLabel(o.label ?? null);
  requireDirectory(dbPath, 'database directory');
  await assertNotLocked(dbPath);
  try {
    return createCheckpointSync({
      dbPath,
      checkpointDir: path.resolve(o.checkpointDir),
      id: newCheckpointId(),
      label,
      pinned: o.pin === true,
      trigger: 'offline',
    });
  } catch (err) {
    throw toAdminError(err);
  }
}

/**
 * Puts a checkpoint in the database's place. The replaced database is renamed to a sibling
 * `<db>.replaced-<time>` and never deleted. The new one is built beside it first (`<db>.restoring-<id>`,
 * fsynced), so the swap is two renames in one directory; if the process dies between them, `<db>` is
 * absent and both siblings are whole: rename the `.restoring-` one to `<db>` by hand, or run the
 * restore again (it refuses nothing in that state).
 */
export async function restoreCheckpoint(o: RestoreOptions): Promise<RestoreResult> {
  parseCheckpointId(o.id);
  const dbPath = path.resolve(o.dbPath);
  const checkpointDir = path.resolve(o.checkpointDir);
  const record = describeOrThrow(checkpointDir, o.id);
  const parent = path.dirname(dbPath);
  requireDirectory(parent, 'parent directory of the database');
  const dbExists = fs.existsSync(dbPath);
  if (dbExists) {
    requireDirectory(dbPath, 'database directory');
    await assertNotLocked(dbPath);
  }
  const staging = `${dbPath}.restoring-${o.id}`;
  removeTreeSync(staging);
  try {
    cloneDbSync(record.path, staging);
  } catch (err) {
    removeTreeSync(staging);
    throw toAdminError(err);
  }
  const stamp = new Date().toISOString().replace(/[-:.]/g, '');
  const replacedPath = `${dbPath}.replaced-${stamp}`;
  if (dbExists) {
    // The lock was free a moment ago; renaming a database that a node has just opened would still be
    // safe for the node (it keeps its open files) but the swap would be lost on its next start.
    await assertNotLocked(dbPath);
    fs.renameSync(dbPath, replacedPath);
  }
  fs.renameSync(staging, dbPath);
  fsyncDir(parent);
  return { id: o.id, dbPath, replacedPath: dbExists ? replacedPath : '' };
}

/** Lists the checkpoints in a checkpoint directory without an agent (oldest first). */
export async function listCheckpointsOffline(checkpointDir: string): Promise<CheckpointRecord[]> {
  return listCheckpointsSync(path.resolve(checkpointDir));
}

/** Opens a throwaway clone of the checkpoint and reads every entry. */
export async function verifyCheckpointOffline(checkpointDir: string, id: string): Promise<VerifyReport> {
  const dir = path.resolve(checkpointDir);
  describeOrThrow(dir, id);
  return verifyCheckpoint(id, checkpointDbPath(dir, id), dir, {
    clone: async (src, dst) => cloneDbSync(src, dst),
    removeTree: async (p) => removeTreeSync(p),
    checkFiles: async (d) => checkDbFilesSync(d),
  });
}

function describeOrThrow(checkpointDir: string, id: string): CheckpointRecord {
  try {
    return describeCheckpointSync(checkpointDir, id);
  } catch (err) {
    const e = toAdminError(err);
    if (e.code === ErrorCodes.NOT_FOUND) throw new AdminError(ErrorCodes.NOT_FOUND, `no checkpoint ${id} in ${checkpointDir}`);
    throw e;
  }
}

function requireDirectory(p: string, what: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new AdminError(ErrorCodes.NOT_FOUND, `${what} ${p} does not exist`);
    throw toAdminError(err);
  }
  if (!st.isDirectory()) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${what} ${p} is not a directory`);
}

/**
 * Is a process holding the database's LevelDB LOCK (an fcntl lock)? Linux lists every such lock in
 * /proc/locks by device and inode, which answers without touching the database. Elsewhere, opening
 * the database with classic-level answers (LEVEL_LOCKED), at the cost of LevelDB's open-time work.
 */
export async function isDatabaseLocked(dbPath: string): Promise<boolean> {
  const lockFile = path.join(dbPath, 'LOCK');
  let st: fs.Stats;
  try {
    st = fs.statSync(lockFile);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false; // never opened, or not LevelDB: nobody can hold it
    throw err;
  }
  let locks: string | null = null;
  try {
    locks = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    locks = null;
  }
  if (locks !== null) {
    const major = ((st.dev >> 8) & 0xfff) | (Math.floor(st.dev / 2 ** 32) & ~0xfff);
    const minor = (st.dev & 0xff) | ((Math.floor(st.dev / 2 ** 12)) & ~0xff);
    const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
    return locks.split('\n').some((line) => line.includes(' POSIX ') && line.split(/\s+/).includes(id));
  }
  const db = new ClassicLevel(dbPath, { createIfMissing: false });
  try {
    await db.open();
    return false;
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return (err as { code?: string }).code === 'LEVEL_LOCKED' || cause?.code === 'LEVEL_LOCKED';
  } finally {
    await db.close().catch(() => {});
  }
}

async function assertNotLocked(dbPath: string): Promise<void> {
  if (await isDatabaseLocked(dbPath)) {
    throw new AdminError(
      ErrorCodes.DATABASE_LOCKED,
      `database ${dbPath} is open by a running process (its LOCK is held); stop the node first, or use the admin socket`,
    );
  }
}
