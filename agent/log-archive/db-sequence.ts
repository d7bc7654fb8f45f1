import fs from 'node:fs';
import path from 'node:path';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { replayManifest } from '../leveldb/db-state.js';
import { parseDbFileName } from '../leveldb/file-names.js';
import { parseLog } from '../leveldb/log-reader.js';
import { batchHeader, batchLast } from './write-batch.js';

export interface DbSequence {
  /** The last sequence number LevelDB will have after opening this directory. */
  sequence: number;
  /** The MANIFEST's next file number and the highest file number present: a new file goes above both. */
  nextFileNumber: number;
}

/**
 * The last sequence number of a database directory that is not open (a checkpoint, a restore), exactly
 * as LevelDB's recovery will find it: the MANIFEST's last sequence, raised by every complete batch of
 * each log it replays (numbered at least the MANIFEST's log number, or equal to its previous log number).
 * A torn record at a log's end is ignored, as LevelDB does; a damaged one is an error here (LevelDB would
 * drop the rest of its block silently, so the sequence could not be known).
 */
export async function dbSequence(dir: string): Promise<DbSequence> {
  const current = (await fs.promises.readFile(path.join(dir, 'CURRENT'), 'utf8')).trim();
  if (!/^MANIFEST-\d+$/.test(current)) throw new AdminError(ErrorCodes.CORRUPT, `${dir}: CURRENT names ${JSON.stringify(current)}, not a MANIFEST`);
  const state = replayManifest(await fs.promises.readFile(path.join(dir, current)));
  let sequence = state.lastSequence;
  let highest = state.nextFileNumber;
  const logs: number[] = [];
  for (const name of await fs.promises.readdir(dir)) {
    const f = parseDbFileName(name);
    if (f?.number == null) continue;
    highest = Math.max(highest, f.number);
    if (f.kind === 'log' && (f.number >= state.logNumber || f.number === state.prevLogNumber)) logs.push(f.number);
  }
  logs.sort((a, b) => a - b);
  for (const n of logs) {
    const { records } = parseLog(await fs.promises.readFile(path.join(dir, `${String(n).padStart(6, '0')}.log`)));
    for (const r of records) sequence = Math.max(sequence, batchLast(batchHeader(r.payload)));
  }
  return { sequence, nextFileNumber: highest + 1 };
}
