import fs from 'node:fs';
import path from 'node:path';
import { replayManifest, type DbState } from '../leveldb/db-state.js';
import { logFileName, parseDbFileName, tableFileNames } from '../leveldb/file-names.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { copyFdPrefixSync, copyFileDurableSync, deferDirSync, fsyncDir, isErrno, readFdSync, writeNewFileSync, type PendingSyncs } from '../fs/durable-fs.js';

export interface BuildStats {
  /** Tables the checkpoint references. */
  tables: number;
  /** Tables shared by hard link (the rest were copied: the checkpoint is on another filesystem). */
  linked: number;
  /** WAL files copied, and their bytes. */
  logs: number;
  logBytes: number;
  /** How often a table vanished under us and the MANIFEST was read again. */
  manifestRereads: number;
  lastSequence: number;
}

/** What a build put in the target directory, so that its caller need not list and stat it again. */
export interface BuildOutcome {
  stats: BuildStats;
  /** Tables hard-linked from the live database (same inode as the live file of that name). */
  linkedTables: string[];
  /** Files written as copies (WALs, MANIFEST, CURRENT, and tables across filesystems), with their sizes. */
  copies: { name: string; size: number }[];
}

function corrupt(message: string): AdminError {
  return new AdminError(ErrorCodes.CORRUPT, message);
}

interface PinnedLog {
  fd: number;
  size: number;
}

const MAX_MANIFEST_REREADS = 1000;

/**
 * Builds a hard-link checkpoint of the LevelDB database in `dbPath` into `targetDir` (which must not
 * exist; its parent must), while the database may be open and written by another thread or process.
 *
 * The result is crash-consistent: the state after some prefix of the write history, batches whole, and
 * that prefix holds every write acknowledged before this call. No write pause is needed; correctness
 * comes from the ORDER of steps (docs/checkpoint-design.md: the LevelDB facts, why each step is safe,
 * the hazards and their tests):
 *   1. pin every WAL: open it and record its size now (an acknowledged write is in it or in a table);
 *   2. read CURRENT and the MANIFEST it names, AFTER pinning;
 *   3. hard-link exactly the tables that MANIFEST state references (never another: an opened
 *      checkpoint reuses unreferenced file numbers and would write into an inode the live db shares);
 *      a table that vanished was compacted away by a newer edit, so read the new records and go on;
 *   4. copy (never link: they grow) the pinned WALs the state still needs, up to their pinned sizes,
 *      and the MANIFEST cut at the last complete record applied, then CURRENT; fsync all.
 * Synchronous on purpose: the caller runs it in a worker thread, out of both the host's event loop and
 * libuv's thread pool, where links would queue behind the database's own work.
 * With `pending`, the files written and `targetDir` itself are left there unsynced for the caller to
 * fsync all at once (durable-fs.ts syncAll) before anything makes them visible; else each is fsynced.
 */
export function buildCheckpointSync(dbPath: string, targetDir: string, pending?: PendingSyncs): BuildOutcome {
  fs.mkdirSync(targetDir, { mode: 0o750 });
  const pinned = pinLogs(dbPath);
  try {
    const manifestName = readCurrent(dbPath);
    const mfd = openOrThrow(path.join(dbPath, manifestName), `database ${dbPath} names ${manifestName} in CURRENT but it is missing`);
    try {
      let state = replayChecked(readFdSync(mfd), manifestName);
      if (readCurrent(dbPath) !== manifestName) {
        throw corrupt(`database ${dbPath} was reopened during the checkpoint (CURRENT changed)`);
      }
      const linked = new Map<number, { name: string; copiedSize: number | null }>();
      let crossDevice = false;
      let rereads = 0;
      let linkedCount = 0;

      for (;;) {
        let vanished: number | null = null;
        for (const number of state.tables.keys()) {
          if (linked.has(number)) continue;
          const r = shareTable(dbPath, targetDir, number, crossDevice, pending);
          if (r === null) {
            vanished = number;
            break;
          }
          crossDevice = r.crossDevice;
          if (!r.crossDevice) linkedCount++;
          linked.set(number, { name: r.name, copiedSize: r.copiedSize });
        }
        if (vanished === null) break;
        // The table was deleted, so an edit that drops it is already in the MANIFEST (LevelDB deletes
        // files only after the edit is synced): read the new records and adjust the set.
        const next = replayChecked(readFdSync(mfd), manifestName);
        if (next.tables.has(vanished) || next.manifestBytes <= state.manifestBytes) {
          if (++rereads > MAX_MANIFEST_REREADS) {
            throw corrupt(`table ${vanished} is referenced by the MANIFEST of ${dbPath} but missing`);
          }
          sleepSync(1);
          continue;
        }
        if (++rereads > MAX_MANIFEST_REREADS) throw corrupt(`the MANIFEST of ${dbPath} keeps changing`);
        state = next;
      }
      // Links made for tables that a later edit dropped go, so that the checkpoint holds exactly the tables
      // its MANIFEST references (what cloneDbSync, the checksum check and exclusiveBytes assume; their
      // numbers are below nextFileNumber, so an opened copy would delete them, never reuse them).
      for (const [number, t] of linked) {
        if (!state.tables.has(number)) {
          fs.unlinkSync(path.join(targetDir, t.name));
          linked.delete(number);
          if (t.copiedSize === null) linkedCount--;
        }
      }
      const linkedTables: string[] = [];
      const copies: { name: string; size: number }[] = [];
      for (const t of linked.values()) {
        if (t.copiedSize === null) linkedTables.push(t.name);
        else copies.push({ name: t.name, size: t.copiedSize });
      }

      let logs = 0;
      let logBytes = 0;
      for (const [number, log] of pinned) {
        const needed = number >= state.logNumber || (state.prevLogNumber !== 0 && number === state.prevLogNumber);
        if (!needed) continue;
        const name = logFileName(number);
        copies.push({ name, size: copyFdPrefixSync(log.fd, log.size, path.join(targetDir, name), pending) });
        logs++;
        logBytes += log.size;
      }
      const manifest = readFdSync(mfd).subarray(0, state.manifestBytes);
      const current = Buffer.from(`${manifestName}\n`);
      writeNewFileSync(path.join(targetDir, manifestName), manifest, pending);
      writeNewFileSync(path.join(targetDir, 'CURRENT'), current, pending);
      copies.push({ name: manifestName, size: manifest.length }, { name: 'CURRENT', size: current.length });
      if (pending) deferDirSync(targetDir, pending);
      else fsyncDir(targetDir);
      return {
        stats: {
          tables: linked.size,
          linked: linkedCount,
          logs,
          logBytes,
          manifestRereads: rereads,
          lastSequence: state.lastSequence,
        },
        linkedTables,
        copies,
      };
    } finally {
      fs.closeSync(mfd);
    }
  } finally {
    for (const log of pinned.values()) fs.closeSync(log.fd);
  }
}

function pinLogs(dbPath: string): Map<number, PinnedLog> {
  const pinned = new Map<number, PinnedLog>();
  let names: string[];
  try {
    names = fs.readdirSync(dbPath);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) throw new AdminError(ErrorCodes.NOT_FOUND, `database directory ${dbPath} does not exist`);
    throw err;
  }
  // One listing only. A log created after it is not pinned, and must not be: its writes follow the end of
  // an older log that may have been pinned before it ended, so keeping them would leave a hole in the
  // history (docs/checkpoint-design.md, "One listing"; test/checkpoint-log-switch.test.ts forces it).
  for (const name of names) {
    const parsed = parseDbFileName(name);
    if (parsed?.kind !== 'log' || parsed.number === null) continue;
    let fd: number;
    try {
      fd = fs.openSync(path.join(dbPath, name), 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) continue; // flushed and deleted: its writes are in a table now
      throw err;
    }
    pinned.set(parsed.number, { fd, size: fs.fstatSync(fd).size });
  }
  return pinned;
}

function readCurrent(dbPath: string): string {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dbPath, 'CURRENT'), 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw corrupt(`${dbPath} is not a LevelDB database (no CURRENT file)`);
    throw err;
  }
  const name = text.endsWith('\n') ? text.slice(0, -1) : '';
  if (parseDbFileName(name)?.kind !== 'manifest') {
    throw corrupt(`CURRENT of ${dbPath} does not name a MANIFEST`);
  }
  return name;
}

function replayChecked(manifest: Buffer, name: string): DbState {
  try {
    return replayManifest(manifest);
  } catch (err) {
    throw corrupt(`${name} is damaged: ${(err as Error).message}`);
  }
}

function openOrThrow(p: string, missing: string): number {
  try {
    return fs.openSync(p, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw corrupt(missing);
    throw err;
  }
}

/** Links (or, across filesystems, copies) table `number` into `targetDir`; null if it no longer exists. */
function shareTable(
  dbPath: string,
  targetDir: string,
  number: number,
  crossDevice: boolean,
  pending: PendingSyncs | undefined,
): { name: string; crossDevice: boolean; copiedSize: number | null } | null {
  for (const name of tableFileNames(number)) {
    const src = path.join(dbPath, name);
    const dst = path.join(targetDir, name);
    if (!crossDevice) {
      try {
        fs.linkSync(src, dst);
        return { name, crossDevice: false, copiedSize: null };
      } catch (err) {
        if (isErrno(err, 'ENOENT')) continue;
        if (!isErrno(err, 'EXDEV')) throw err;
        crossDevice = true;
      }
    }
    try {
      copyFileDurableSync(src, dst, pending);
      return { name, crossDevice: true, copiedSize: fs.statSync(dst).size };
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        fs.rmSync(dst, { force: true });
        continue;
      }
      throw err;
    }
  }
  return null;
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}
