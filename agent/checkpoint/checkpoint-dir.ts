import fs from 'node:fs';
import path from 'node:path';
import type { CheckpointRecord, CheckpointTrigger } from '../../shared/api.js';
import { isCheckpointId, parseCheckpointId } from '../../shared/input-rules.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { closeAll, copyFileDurableSync, deferDirSync, fsyncDir, isErrno, mkdirDurableSync, syncAll, syncAllSync, writeNewFileSync, type PendingSyncs } from '../fs/durable-fs.js';
import { parseDbFileName } from '../leveldb/file-names.js';
import { buildCheckpointSync, type BuildStats } from './build-checkpoint.js';

/**
 * The checkpoint directory on disk:
 *   <checkpointDir>/<id>/checkpoint.json   the record's stored part (written before the rename)
 *   <checkpointDir>/<id>/db/                the database files (tables hard-linked, the rest copied)
 *   <checkpointDir>/.staging-<id>/          a create in progress; never listed, removed at start
 *   <checkpointDir>/.deleting-<id>/         a delete in progress; never listed, removed at start
 *   <checkpointDir>/.clone-<rand>/          a throwaway copy being verified; removed at start
 * A directory is a checkpoint only once renamed to its id, and the rename comes after everything in it
 * is fsynced: a kill -9 at any moment leaves either a whole checkpoint or a dot-directory.
 * Synchronous: run in the fs worker (or in the CLI, which has nothing else to do).
 */

const META_FILE = 'checkpoint.json';
const DB_DIR = 'db';
const FORMAT = 1;

export interface CheckpointMeta {
  format: number;
  id: string;
  createdAt: string;
  label: string | null;
  pinned: boolean;
  trigger: CheckpointTrigger;
  build?: BuildStats & { durationMs: number };
}

export interface CreateCheckpointArgs {
  dbPath: string;
  checkpointDir: string;
  id: string;
  label: string | null;
  pinned: boolean;
  trigger: CheckpointTrigger;
}

/** A checkpoint just made, with what its build put in it: enough to index it without listing it again. */
export interface BuiltCheckpoint {
  meta: CheckpointMeta;
  linkedTables: string[];
  copies: { name: string; size: number }[];
}

export function createCheckpointSync(args: CreateCheckpointArgs): CheckpointRecord {
  buildCheckpointDirSync(args);
  return describeCheckpointSync(args.checkpointDir, args.id);
}

/** Builds a checkpoint in a staging directory and renames it into place once all of it is durable. */
export function buildCheckpointDirSync(args: CreateCheckpointArgs): BuiltCheckpoint {
  const pending: PendingSyncs = [];
  const staged = stageCheckpointSync(args, pending);
  try {
    syncAllSync(pending);
  } catch (err) {
    fs.rmSync(staged.staging, { recursive: true, force: true });
    throw err;
  }
  return publish(args, staged);
}

/**
 * buildCheckpointDirSync with the final fsyncs of the staging directory's files issued all at once
 * (durable-fs.ts syncAll): what the agent's builder worker runs.
 */
export async function buildCheckpointDir(args: CreateCheckpointArgs): Promise<BuiltCheckpoint> {
  const pending: PendingSyncs = [];
  const staged = stageCheckpointSync(args, pending);
  try {
    await syncAll(pending);
  } catch (err) {
    fs.rmSync(staged.staging, { recursive: true, force: true });
    throw err;
  }
  return publish(args, staged);
}

interface Staged {
  staging: string;
  built: BuiltCheckpoint;
}

/**
 * Everything but the fsyncs: the database files and checkpoint.json are written into `.staging-<id>`
 * and left in `pending` with both directories. build.durationMs is the time until then.
 */
function stageCheckpointSync(args: CreateCheckpointArgs, pending: PendingSyncs): Staged {
  const started = Date.now();
  ensureCheckpointDirSync(args.checkpointDir);
  const staging = path.join(args.checkpointDir, `.staging-${args.id}`);
  fs.mkdirSync(staging, { mode: 0o750 });
  try {
    const built = buildCheckpointSync(args.dbPath, path.join(staging, DB_DIR), pending);
    const meta: CheckpointMeta = {
      format: FORMAT,
      id: args.id,
      createdAt: new Date(started).toISOString(),
      label: args.label,
      pinned: args.pinned,
      trigger: args.trigger,
      build: { ...built.stats, durationMs: Date.now() - started },
    };
    writeNewFileSync(path.join(staging, META_FILE), Buffer.from(JSON.stringify(meta, null, 2) + '\n'), pending);
    deferDirSync(staging, pending);
    return { staging, built: { meta, linkedTables: built.linkedTables, copies: built.copies } };
  } catch (err) {
    closeAll(pending);
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

/** Renames a durable staging directory into place: from here on it is a checkpoint. */
function publish(args: CreateCheckpointArgs, staged: Staged): BuiltCheckpoint {
  try {
    fs.renameSync(staged.staging, path.join(args.checkpointDir, args.id));
  } catch (err) {
    fs.rmSync(staged.staging, { recursive: true, force: true });
    throw err;
  }
  fsyncDir(args.checkpointDir);
  return staged.built;
}

/**
 * The checkpoint directory, durable in its parent: the first checkpoint makes it, and a checkpoint
 * renamed into a directory whose own entry a power cut takes is lost with it (fsyncing the checkpoint
 * directory makes its entries durable, not itself).
 */
export function ensureCheckpointDirSync(checkpointDir: string): void {
  mkdirDurableSync(checkpointDir, 0o750);
}

function checkpointPath(checkpointDir: string, id: string): string {
  // Ids are validated at the edge; this guards the filesystem against any path that slips through.
  return path.join(checkpointDir, parseCheckpointId(id));
}

export function readMetaSync(checkpointDir: string, id: string): CheckpointMeta {
  let text: string;
  try {
    text = fs.readFileSync(path.join(checkpointPath(checkpointDir, id), META_FILE), 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) throw new AdminError(ErrorCodes.NOT_FOUND, `no checkpoint ${id}`);
    throw err;
  }
  const meta = JSON.parse(text) as CheckpointMeta;
  if (meta.format !== FORMAT || meta.id !== id) {
    throw new AdminError(ErrorCodes.CORRUPT, `checkpoint ${id} has an unreadable ${META_FILE}`);
  }
  return meta;
}

export function describeCheckpointSync(checkpointDir: string, id: string): CheckpointRecord {
  const meta = readMetaSync(checkpointDir, id);
  const dbDir = path.join(checkpointPath(checkpointDir, id), DB_DIR);
  let files = 0;
  let bytes = 0;
  let exclusiveBytes = 0;
  for (const name of fs.readdirSync(dbDir)) {
    const st = fs.lstatSync(path.join(dbDir, name));
    if (!st.isFile()) continue;
    files++;
    bytes += st.size;
    // One link: this directory's own. Linked by the live database or another checkpoint otherwise.
    if (st.nlink === 1) exclusiveBytes += st.size;
  }
  return {
    id,
    createdAt: meta.createdAt,
    label: meta.label,
    pinned: meta.pinned,
    trigger: meta.trigger,
    path: path.resolve(dbDir),
    files,
    bytes,
    exclusiveBytes,
  };
}

/** Every whole checkpoint, oldest first. */
export function listCheckpointsSync(checkpointDir: string): CheckpointRecord[] {
  const names = readdirOrEmpty(checkpointDir);
  const records: CheckpointRecord[] = [];
  for (const name of names.filter(isCheckpointId).sort()) {
    try {
      records.push(describeCheckpointSync(checkpointDir, name));
    } catch (err) {
      // Deleted between the listing and the read: not a checkpoint any more.
      if (err instanceof AdminError && err.code === ErrorCodes.NOT_FOUND) continue;
      if (isErrno(err, 'ENOENT')) continue;
      throw err;
    }
  }
  return records;
}

/** Removes what interrupted creates, deletes and verifies left behind. Returns the names removed. */
export function cleanLeftoversSync(checkpointDir: string): string[] {
  const names = readdirOrEmpty(checkpointDir);
  const removed: string[] = [];
  for (const name of names) {
    if (/^\.(staging|deleting|clone)-/.test(name) || /^\..*\.tmp-/.test(name)) {
      fs.rmSync(path.join(checkpointDir, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  // A checkpoint's own metadata rewrite (pin) can leave a temp file inside it too.
  for (const name of names.filter(isCheckpointId)) {
    const dir = path.join(checkpointDir, name);
    try {
      for (const inner of fs.readdirSync(dir)) {
        if (/^\..*\.tmp-/.test(inner)) {
          fs.rmSync(path.join(dir, inner), { force: true });
          removed.push(`${name}/${inner}`);
        }
      }
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  if (removed.length > 0) fsyncDir(checkpointDir);
  return removed;
}

/**
 * Makes `dst` (which must not exist) a copy of the checkpoint database `srcDb` that can be opened and
 * changed without touching the checkpoint: tables hard-linked (LevelDB never writes a table again, and
 * every table here is below the MANIFEST's next file number, so the copy never reuses their names),
 * everything else copied. Across filesystems tables are copied too.
 */
export function cloneDbSync(srcDb: string, dst: string): void {
  fs.mkdirSync(dst, { mode: 0o750 });
  let crossDevice = false;
  for (const name of fs.readdirSync(srcDb)) {
    const kind = parseDbFileName(name)?.kind;
    if (kind === 'lock' || kind === 'info-log') continue;
    const src = path.join(srcDb, name);
    const out = path.join(dst, name);
    if (kind === 'table' && !crossDevice) {
      try {
        fs.linkSync(src, out);
        continue;
      } catch (err) {
        if (!isErrno(err, 'EXDEV')) throw err;
        crossDevice = true;
      }
    }
    copyFileDurableSync(src, out);
  }
  fsyncDir(dst);
}

/** A directory's entries; none if it does not exist (no checkpoint was ever made there). */
function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
}

export function checkpointDbPath(checkpointDir: string, id: string): string {
  return path.join(checkpointPath(checkpointDir, id), DB_DIR);
}

export function removeTreeSync(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}
