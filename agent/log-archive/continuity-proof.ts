import fs from 'node:fs';
import path from 'node:path';
import { replayManifest } from '../leveldb/db-state.js';
import { DbTables, TablesChanged } from '../leveldb/db-tables.js';
import type { Repository } from '../repository/repository.js';
import { readWindows } from './restore-to-moment.js';
import { decodeSegment, segmentName, type BaseRecord, type SegmentBatch } from './segment.js';
import type { TimelineView } from './timeline-windows.js';
import { batchEntries, batchHeader, batchLast } from './write-batch.js';

/**
 * Whether an agent that starts on a database may go on with the archive's newest timeline rather than
 * begin a new one (docs/FORMAT.md, "Continuity"; docs/log-archive-design.md, "Continuity through
 * restarts"). Two parts:
 *
 * - the **opening** (local, no storage request, taken inside the agent's start, before the host writes):
 *   the database's sequence number from its MANIFEST, and whether its logs held any batch then. LevelDB
 *   replays its logs into a table when it opens and writes that sequence into the MANIFEST, so a
 *   database that was opened and not written to yet has exactly its MANIFEST's sequence and empty logs.
 * - the **proof** (against the repository, later): the archive's newest timeline is whole (a usable base,
 *   no gap), it ends at exactly that sequence number, and the archived batches at its end are in the
 *   database's tables at their own sequence numbers with the same keys, values and deletions.
 *
 * The verdict is `continue` only when every check passes; anything else (and anything that cannot be
 * decided) is a new timeline, which is always right.
 */

/** The database as the agent found it at its start. */
export interface Opening {
  /** The MANIFEST's last sequence number. */
  sequence: number;
  /** When the follower's first pass ended (ms): the database held no batch after `sequence` then, if `quiet`. */
  at: number;
  /** The first pass found no batch in the logs (the node had not written since it opened the database). */
  quiet: boolean;
}

/** What a proof compared. */
export interface TailCheck {
  /** Archived batches and entries compared (the newest entry of each key among them). */
  batches: number;
  entries: number;
  /** Entries found in the tables at their own sequence numbers (the rest: deletions LevelDB dropped). */
  found: number;
}

export type Continuity =
  | { continue: true; timeline: string; sequence: number; /** The window's end before the restart (ms). */ end: number; check: TailCheck }
  | { continue: false; reason: string };

/** Entries compared at most (the newest batches first): a proof reads a few table blocks per entry. */
export const MAX_PROOF_ENTRIES = 1000;

/** The MANIFEST's last sequence number of a database directory (open or not). */
export async function manifestSequence(dir: string): Promise<number> {
  const current = (await fs.promises.readFile(path.join(dir, 'CURRENT'), 'utf8')).trim();
  return replayManifest(await fs.promises.readFile(path.join(dir, current))).lastSequence;
}

/**
 * The proof: may the archive's newest timeline go on with this database? Storage failures throw (the
 * caller tries again); every other doubt is a `continue: false` with its reason.
 */
export async function proveContinuity(repo: Repository, dbPath: string, opening: Opening): Promise<Continuity> {
  const no = (reason: string): Continuity => ({ continue: false, reason });
  if (!opening.quiet) return no('the node wrote to the database before the agent started (start the agent before writing)');
  const windows = await readWindows(repo);
  const t = windows.timelines.at(-1);
  if (!t) return no('the repository holds no timeline yet');
  if (t.from === null || t.to === null || t.lastSequence === null) return no(`timeline ${t.id} has nothing restorable`);
  if (t.brokenAfter !== null) return no(`timeline ${t.id} misses a segment after sequence ${t.brokenAfter}`);
  if (opening.sequence !== t.lastSequence) {
    return no(`the database is at sequence ${opening.sequence}, timeline ${t.id} ends at ${t.lastSequence}${opening.sequence > t.lastSequence ? ' (batches written and never archived)' : ' (another history: a restore, a rollback, or writes lost)'}`);
  }
  if (opening.at < t.to) return no(`the clock (${new Date(opening.at).toISOString()}) is behind the end of timeline ${t.id} (${new Date(t.to).toISOString()})`);
  // A tail whose newest entries are all deletions LevelDB has since dropped (a compaction at the bottom
  // level, such as the open's) proves nothing either way: the segments before it are compared with it,
  // a few at most, each read once. Comparing more is never weaker: every entry compared must still match.
  let batches: SegmentBatch[] = [];
  for await (const older of tailOf(repo, t)) {
    batches = [...older, ...batches];
    const check = await checkTail(dbPath, batches);
    if ('mismatch' in check) return no(`the database differs from timeline ${t.id} at its end: ${check.mismatch}`);
    if (check.found > 0) return { continue: true, timeline: t.id, sequence: t.lastSequence, end: t.to, check };
    if (check.entries >= MAX_PROOF_ENTRIES) break;
  }
  if (batches.length === 0) return no(`timeline ${t.id} holds no archived batch at its end (sequence ${t.lastSequence}) to compare`);
  return no(`the database differs from timeline ${t.id} at its end: no archived entry could be found in the database at its sequence number`);
}

/** Segments a proof reads at most, newest first, while every entry it compared was a dropped deletion. */
export const MAX_PROOF_SEGMENTS = 4;

/**
 * The newest archived batches of a timeline, ending at its last sequence, a piece at a time, newest
 * first: its last segments, one each (the chain has no gap; MAX_PROOF_SEGMENTS at most), or where the
 * timeline ends at a base (nothing written since), the base's last batch from its record (if the
 * archiver read it). Nothing when neither holds it.
 */
async function* tailOf(repo: Repository, t: TimelineView): AsyncGenerator<SegmentBatch[]> {
  const last = t.segments.at(-1);
  if (last && last.last === t.lastSequence) {
    for (const seg of t.segments.slice(-MAX_PROOF_SEGMENTS).reverse()) {
      const name = segmentName(seg);
      yield await decodeSegment(name, seg, await repo.getObject(name));
    }
    return;
  }
  for (const b of t.bases.filter((x) => x.usable && x.sequence === t.lastSequence)) {
    const record = await repo.getJson<BaseRecord>(b.name);
    if (typeof record.tail?.batch !== 'string' || typeof record.tail.readAt !== 'number') continue;
    const payload = Buffer.from(record.tail.batch, 'base64');
    let header;
    try {
      header = batchHeader(payload);
    } catch {
      continue; // not a batch: nothing to compare with
    }
    if (batchLast(header) === t.lastSequence) {
      yield [{ ...header, payload, readAt: record.tail.readAt }];
      return;
    }
  }
}

/**
 * Compares the newest archived batches with the database's tables: for each key, its newest entry among
 * them (newest batches first, up to `maxEntries`) must be in the tables at exactly its sequence number
 * with the same value (a put) or as a deletion. A deletion may be missing only where LevelDB dropped it
 * (no older entry of its key left at all); `found` says how many were found (none proves nothing:
 * proveContinuity's to judge). A table removed by a compaction meanwhile: read again (a few times).
 */
export async function checkTail(dbPath: string, batches: readonly SegmentBatch[], maxEntries = MAX_PROOF_ENTRIES): Promise<TailCheck | { mismatch: string }> {
  for (let attempt = 1; ; attempt++) {
    const tables = await DbTables.open(dbPath);
    try {
      return await compare(tables, batches, maxEntries);
    } catch (err) {
      if (!(err instanceof TablesChanged) || attempt === 3) throw err;
    } finally {
      await tables.close();
    }
  }
}

async function compare(tables: DbTables, batches: readonly SegmentBatch[], maxEntries: number): Promise<TailCheck | { mismatch: string }> {
  const seen = new Set<string>();
  const check: TailCheck = { batches: 0, entries: 0, found: 0 };
  const show = (key: Buffer) => JSON.stringify(key.toString('utf8').slice(0, 100));
  for (let b = batches.length - 1; b >= 0 && check.entries < maxEntries; b--) {
    const batch = batches[b]!;
    const entries = batchEntries(batch.payload);
    check.batches++;
    for (let i = entries.length - 1; i >= 0 && check.entries < maxEntries; i--) {
      const e = entries[i]!;
      const id = e.key.toString('latin1');
      if (seen.has(id)) continue; // a newer entry of this key was compared: this one may be compacted away
      seen.add(id);
      check.entries++;
      const sequence = batch.seq + i;
      const found = await tables.newest(e.key, sequence);
      if (found !== null && found.sequence === sequence) {
        const same = e.type === 'put' ? found.type === 1 && found.value.equals(e.value) : found.type === 0;
        if (!same) return { mismatch: `key ${show(e.key)} at sequence ${sequence} is ${found.type === 1 ? 'another value' : 'a deletion'} in the database, ${e.type === 'put' ? 'a put' : 'a deletion'} in the archive` };
        check.found++;
      } else if (e.type === 'put' || found !== null) {
        return { mismatch: `key ${show(e.key)} has no entry at sequence ${sequence} in the database${found ? ` (its newest there is at ${found.sequence})` : ''}` };
      }
    }
  }
  return check;
}
