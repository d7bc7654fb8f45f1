import { decodeVersionEdit } from './version-edit.js';
import { parseLog } from './log-reader.js';

/** The state a MANIFEST prefix describes: what a database opened from it would consist of. */
export interface DbState {
  comparator: string | null;
  logNumber: number;
  prevLogNumber: number;
  nextFileNumber: number;
  lastSequence: number;
  /** Live tables: file number -> level and size (and, replayed with `keys`, their smallest and largest internal keys). */
  tables: Map<number, { level: number; size: number; smallest?: Buffer; largest?: Buffer }>;
  /** Bytes of the MANIFEST that hold exactly the records applied (cut at the last complete record). */
  manifestBytes: number;
}

/**
 * Replays every complete record of a MANIFEST prefix, as VersionSet::Recover does: deletions of an edit
 * apply before its additions (a trivial move deletes and re-adds a file in one edit).
 */
export function replayManifest(manifest: Buffer, options: { keys?: boolean } = {}): DbState {
  const { records, completeEnd } = parseLog(manifest);
  const state: DbState = {
    comparator: null,
    logNumber: 0,
    prevLogNumber: 0,
    nextFileNumber: 0,
    lastSequence: 0,
    tables: new Map(),
    manifestBytes: completeEnd,
  };
  for (const r of records) {
    const e = decodeVersionEdit(r.payload, options);
    if (e.comparator !== undefined) state.comparator = e.comparator;
    if (e.logNumber !== undefined) state.logNumber = e.logNumber;
    if (e.prevLogNumber !== undefined) state.prevLogNumber = e.prevLogNumber;
    if (e.nextFileNumber !== undefined) state.nextFileNumber = e.nextFileNumber;
    if (e.lastSequence !== undefined) state.lastSequence = e.lastSequence;
    for (const d of e.deletedFiles) state.tables.delete(d.number);
    for (const n of e.newFiles) state.tables.set(n.number, n.smallest ? { level: n.level, size: n.size, smallest: n.smallest, largest: n.largest! } : { level: n.level, size: n.size });
  }
  return state;
}
