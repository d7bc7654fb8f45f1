import type { ChangeBatch, ChangeEntry, ChangesRequest, ChangesSummary } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { describeMoment, parseMoment, parseTimelineId, type Moment } from '../../shared/input-rules.js';
import type { Repository } from '../repository/repository.js';
import { isStorageError } from '../storage/storage.js';
import { notRestorable, readWindows } from './restore-to-moment.js';
import { decodeSegment, segmentName } from './segment.js';
import { baseAt, firstSequence, type TimelineView, type Windows } from './timeline-windows.js';
import { batchEntries, batchLast } from './write-batch.js';

/** Listings again after a segment vanished (a merge replaced it) before a listing gives up. */
const MAX_RELISTS = 16;

/** A listing's request, parsed (shared/input-rules.ts): what the CLI and the socket route both hand over. */
export interface ChangesQuery {
  from: Moment | null;
  to: Moment | null;
  timeline: string | null;
  key: Buffer | null;
  prefix: Buffer | null;
  values: boolean;
}

/** Checks a ChangesRequest (from the socket or a host, unchecked) once, at the edge. */
export function parseChangesRequest(req: ChangesRequest): ChangesQuery {
  if (req.key !== undefined && req.prefix !== undefined) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'give a key or a prefix, not both');
  const text = (v: unknown, what: string) => {
    if (typeof v !== 'string' || v === '') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${what} must be a non-empty string`);
    return Buffer.from(v, 'utf8');
  };
  return {
    from: req.from === undefined ? null : parseMoment(req.from, '--from', false),
    to: req.to === undefined ? null : parseMoment(req.to, '--to'),
    timeline: req.timeline === undefined ? null : parseTimelineId(req.timeline, '--timeline'),
    key: req.key === undefined ? null : text(req.key, '--key'),
    prefix: req.prefix === undefined ? null : text(req.prefix, '--prefix'),
    values: req.values === true,
  };
}

/**
 * A moment as a point of one timeline: the state there is every batch up to `sequence` and every batch
 * read at or before `time` (a prefix of the timeline: its batches are read in sequence order). For a
 * time, `sequence` is that of the base a restore to it starts from (a batch the base holds is in the
 * state even if the archiver read it later); for seq:n, `time` is none.
 */
interface Bound {
  moment: Moment;
  sequence: number;
  time: number | null;
}

/** The batch is not in the state at the bound. */
const after = (bound: Bound, b: { seq: number; readAt: number }) => b.seq > bound.sequence && (bound.time === null || b.readAt > bound.time);

/**
 * The archived write batches between two moments of one timeline, oldest first: every batch after the
 * state at `from` up to and including the state at `to` (so a restore to `from` plus these batches is a
 * restore to `to`), filtered by key or prefix. Streams: one segment in memory at a time (each verified
 * whole before any of it is used, as a restore does), the batches checked to run on without a gap; the
 * generator's return value says what was covered. Moments outside the timeline's restorable window are
 * MOMENT_NOT_RESTORABLE (a listing never claims a batch it cannot see).
 */
export async function* archiveChanges(repo: Repository, q: ChangesQuery): AsyncGenerator<ChangeBatch, ChangesSummary> {
  const windows = await readWindows(repo);
  const t = chooseTimeline(windows, q);
  const lower = bound(windows, t, q.from ?? { kind: 'sequence', sequence: firstSequence(t)! }, '--from');
  const upper = bound(windows, t, q.to ?? { kind: 'latest' }, '--to');
  if (q.from?.kind === 'sequence' && q.to?.kind === 'sequence' && q.from.sequence > q.to.sequence) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `--from seq:${q.from.sequence} is after --to seq:${q.to.sequence}`);
  }
  if (q.from?.kind === 'time' && q.to?.kind === 'time' && q.from.ms > q.to.ms) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `--from ${describeMoment(q.from)} is after --to ${describeMoment(q.to)}`);
  }
  const summary: ChangesSummary = {
    timeline: t.id,
    from: describeMoment(lower.moment),
    to: describeMoment(upper.moment),
    batches: 0,
    scanned: 0,
    segments: 0,
    firstSequence: null,
    lastSequence: null,
  };
  let next: number | null = null;
  let segments = t.segments;
  let relists = 0;
  for (let i = 0; i < segments.length; ) {
    const s = segments[i++]!;
    // Names say each segment's sequence numbers and its time span (from, to]: skip what lies outside,
    // and, after listing again, what was read already.
    if (s.last <= lower.sequence || (lower.time !== null && s.to <= lower.time)) continue;
    if (next !== null && s.last < next) continue;
    if (s.first > upper.sequence && (upper.time === null || s.from >= upper.time)) break;
    const name = segmentName(s);
    let stored: Buffer;
    try {
      stored = await repo.getObject(name);
    } catch (err) {
      // A merge (the agent's, while this lists) replaced it: the merged segment was stored before its
      // inputs were deleted, so listing again finds what holds the next batch. Bounded: a segment that
      // stays missing is a gap, which the chain then shows (and the sequence check refuses).
      if (!isStorageError(err, 'not-found') || ++relists > MAX_RELISTS) throw err;
      const again = (await readWindows(repo)).timelines.find((x) => x.id === t.id);
      if (!again) throw err;
      segments = again.segments;
      i = 0;
      continue;
    }
    const batches = await decodeSegment(name, s, stored);
    summary.segments++;
    for (const b of batches) {
      if (!after(lower, b)) continue;
      if (after(upper, b)) return summary;
      if (next !== null && b.seq < next) continue; // listed already, from the segment a merge replaced
      if (next !== null && b.seq !== next) throw new AdminError(ErrorCodes.CORRUPT, `segment ${name}: batch at sequence ${b.seq} where ${next} was expected`);
      next = batchLast(b) + 1;
      summary.scanned++;
      summary.firstSequence ??= b.seq;
      summary.lastSequence = batchLast(b);
      const entries = batchEntries(b.payload);
      let puts = 0;
      const changes: ChangeEntry[] = [];
      for (const e of entries) {
        if (e.type === 'put') puts++;
        if (q.key !== null && !e.key.equals(q.key)) continue;
        if (q.prefix !== null && !(e.key.length >= q.prefix.length && e.key.subarray(0, q.prefix.length).equals(q.prefix))) continue;
        changes.push(entry(e, q.values));
      }
      if (changes.length === 0) continue;
      summary.batches++;
      yield { timeline: t.id, sequence: b.seq, last: batchLast(b), time: new Date(b.readAt).toISOString(), puts, deletes: entries.length - puts, changes };
    }
  }
  return summary;
}

function chooseTimeline(windows: Windows, q: ChangesQuery): TimelineView {
  const restorable = windows.timelines.filter((t) => t.from !== null);
  if (q.timeline !== null) {
    const t = windows.timelines.find((x) => x.id === q.timeline);
    if (!t) throw new AdminError(ErrorCodes.NOT_FOUND, `no timeline ${q.timeline} in the log archive`);
    if (t.from === null) throw notRestorable(windows, `timeline ${t.id} has nothing restorable`);
    return t;
  }
  const holding = (m: Moment) => restorable.filter((t) => holds(t, m));
  const byTo = q.to ? holding(q.to) : null;
  const byFrom = q.from ? holding(q.from) : null;
  if (byTo !== null && byTo.length === 0) throw notRestorable(windows, `--to ${describeMoment(q.to!)} is in no timeline's window`);
  if (byFrom !== null && byFrom.length === 0) throw notRestorable(windows, `--from ${describeMoment(q.from!)} is in no timeline's window`);
  if (byTo !== null && byFrom !== null) {
    const both = byTo.filter((t) => byFrom.includes(t));
    if (both.length === 0) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `--from and --to lie in different timelines (${byFrom.at(-1)!.id}, ${byTo.at(-1)!.id}): a listing stays in one (give --timeline)`);
    return both.at(-1)!;
  }
  const t = (byTo ?? byFrom ?? restorable).at(-1);
  if (!t) throw notRestorable(windows, 'the repository holds no restorable log archive');
  return t;
}

function holds(t: TimelineView, m: Moment): boolean {
  if (m.kind === 'latest') return true;
  if (m.kind === 'time') return t.from! <= m.ms && m.ms <= t.to!;
  return firstSequence(t)! <= m.sequence && m.sequence <= t.lastSequence!;
}

function bound(windows: Windows, t: TimelineView, m: Moment, what: string): Bound {
  if (m.kind === 'latest') return bound(windows, t, { kind: 'time', ms: t.to! }, what);
  if (!holds(t, m)) throw notRestorable(windows, `${what} ${describeMoment(m)} is outside timeline ${t.id}'s window`);
  if (m.kind === 'time') return { moment: m, sequence: baseAt(t, m.ms)!.sequence, time: m.ms };
  // The state at seq:n is after the whole batch holding n.
  return { moment: m, sequence: m.sequence, time: null };
}

function entry(e: ReturnType<typeof batchEntries>[number], values: boolean): ChangeEntry {
  const key = text(e.key);
  const out: ChangeEntry = { type: e.type, key: key.text, ...(key.base64 ? { keyEncoding: 'base64' as const } : {}) };
  if (e.type === 'put') {
    out.valueBytes = e.value.length;
    if (values) {
      const v = text(e.value);
      out.value = v.text;
      if (v.base64) out.valueEncoding = 'base64';
    }
  }
  return out;
}

/** UTF-8 where the bytes are valid UTF-8 without control characters, else base64. */
function text(b: Buffer): { text: string; base64: boolean } {
  const s = b.toString('utf8');
  // eslint-disable-next-line no-control-regex
  if (Buffer.byteLength(s) === b.length && !s.includes('\ufffd') && !/[\u0000-\u001f\u007f-\u009f]/.test(s)) return { text: s, base64: false };
  return { text: b.toString('base64'), base64: true };
}
