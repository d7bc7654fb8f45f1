import type { BaseRecord, MarkInfo, SegmentInfo, WalObject } from './segment.js';

export interface BaseView {
  /** Its record's name. */
  name: string;
  backup: string;
  sequence: number;
  /** Restorable from this time (ms) when usable. */
  from: number;
  usable: boolean;
  /** Why not, when not usable. */
  problem: string | null;
}

export interface TimelineView {
  id: string;
  bases: BaseView[];
  segments: SegmentInfo[];
  /** Its marks (clean stops, and restarts it went on through), oldest first. */
  marks: MarkInfo[];
  /** The restorable window (ms, both ends included), or null if no moment of it can be restored. */
  from: number | null;
  to: number | null;
  /** The last sequence number the window reaches. */
  lastSequence: number | null;
  /** A segment missing inside the timeline: nothing after it is claimed. */
  brokenAfter: number | null;
}

export interface Windows {
  /** Oldest first. */
  timelines: TimelineView[];
  /** Between restorable windows, oldest first (ms). */
  gaps: { from: number; to: number }[];
}

/**
 * The restorable windows of a log archive, from a listing of `wal/` and the ids of the backups that
 * exist. A pure function: the archive's whole meaning is decided here (docs/log-archive-design.md,
 * "Windows"), so it is tested as data.
 *
 * Per timeline, segments sorted by first sequence must chain (first == previous last + 1; where a merged
 * segment and its inputs are both listed, the merged one); a gap cuts the chain and nothing after it is
 * claimed. A base is usable if its backup exists and the chain covers
 * its sequence + 1 (or the chain ends at or before its sequence). The timeline's restorable end is the
 * chain's end, or later if a base record says everything read until then was shipped (without a gap).
 */
export function timelineWindows(objects: readonly WalObject[], backups: ReadonlySet<string>): Windows {
  const byTimeline = new Map<string, { bases: (Omit<BaseRecord, 'version'> & { name: string })[]; segments: SegmentInfo[]; marks: MarkInfo[] }>();
  const entry = (id: string) => {
    let e = byTimeline.get(id);
    if (!e) byTimeline.set(id, (e = { bases: [], segments: [], marks: [] }));
    return e;
  };
  for (const o of objects) {
    if (o.kind === 'segment') entry(o.segment.timeline).segments.push(o.segment);
    else if (o.kind === 'base') entry(o.base.timeline).bases.push({ ...o.base, name: o.name });
    else entry(o.mark.timeline).marks.push(o.mark);
  }
  const timelines: TimelineView[] = [];
  for (const id of [...byTimeline.keys()].sort()) {
    const { bases, segments, marks } = byTimeline.get(id)!;
    const { chain, brokenAfter } = chainOf(segments);
    const chainFirst = chain[0]?.first ?? null;
    const chainLast = chain.at(-1)?.last ?? null;
    const chainTo = chain.at(-1)?.to ?? null;
    // Without a gap, a base record's `to` and a mark's `at` extend the window: every batch read until
    // then was stored, up to its `last` — which the segments listed must reach (a lost last segment would
    // over-claim).
    const reached = Math.max(chainLast ?? -1, ...bases.map((b) => b.sequence));
    const recordTo =
      brokenAfter === null
        ? Math.max(-1, ...bases.filter((b) => b.last <= reached).map((b) => b.to), ...marks.filter((m) => m.last <= reached).map((m) => m.at))
        : -1;
    const end = Math.max(chainTo ?? -1, recordTo);
    const views: BaseView[] = bases
      .sort((a, b) => a.sequence - b.sequence || a.from - b.from)
      .map((b) => {
        let problem: string | null = null;
        if (!backups.has(b.backup)) problem = `backup ${b.backup} no longer exists`;
        else if (chainFirst !== null && b.sequence + 1 < chainFirst) problem = `the archive begins at sequence ${chainFirst}, after the base's ${b.sequence} + 1`;
        else if (brokenAfter !== null && b.sequence > brokenAfter) problem = `a segment after sequence ${brokenAfter} is missing`;
        else if (end < b.from) problem = 'nothing archived since its checkpoint';
        return { name: b.name, backup: b.backup, sequence: b.sequence, from: b.from, usable: problem === null, problem };
      });
    const usable = views.filter((b) => b.usable);
    const from = usable.length > 0 ? Math.min(...usable.map((b) => b.from)) : null;
    const lastSequence = usable.length > 0 ? Math.max(chainLast ?? -1, ...usable.map((b) => b.sequence)) : null;
    marks.sort((a, b) => a.at - b.at || a.last - b.last);
    timelines.push({ id, bases: views, segments: chain, marks, from, to: from === null ? null : end, lastSequence, brokenAfter });
  }
  const restorable = timelines.filter((t) => t.from !== null).sort((a, b) => a.from! - b.from!);
  const gaps: Windows['gaps'] = [];
  let reach = -Infinity;
  for (const t of restorable) {
    if (reach !== -Infinity && t.from! > reach) gaps.push({ from: reach, to: t.from! });
    reach = Math.max(reach, t.to!);
  }
  return { timelines, gaps };
}

/**
 * The segments a reader uses, from one timeline's listing: from the lowest first sequence, each next one
 * starting right after the last, taking the one that reaches furthest where several start there (a merged
 * segment and the inputs it replaces, both listed until the merge has deleted them). A segment not taken
 * is covered by one that is, or lies past a gap: `brokenAfter`, the last sequence before the gap (nothing
 * after it is claimed).
 */
function chainOf<S extends SegmentInfo>(segments: readonly S[]): { chain: S[]; brokenAfter: number | null } {
  const sorted = [...segments].sort((a, b) => a.first - b.first || b.last - a.last);
  const chain: S[] = [];
  for (const s of sorted) {
    const prev = chain.at(-1);
    if (!prev) {
      chain.push(s);
      continue;
    }
    if (s.first <= prev.last) continue; // covered, or a partial overlap (never spliced: see below)
    if (s.first !== prev.last + 1) return { chain, brokenAfter: prev.last };
    chain.push(s);
  }
  // A segment reaching past the chain's end that the chain could not take (it overlaps part of it):
  // the batches after the chain's end are listed but not claimed.
  const end = chain.at(-1)?.last ?? -1;
  return { chain, brokenAfter: sorted.some((s) => s.last > end) ? end : null };
}

/** The covering chain of one timeline's segments (chainOf), without what follows a gap. */
export function coveringChain<S extends SegmentInfo>(segments: readonly S[]): S[] {
  return chainOf(segments).chain;
}

/** The timeline and base a restore to `at` (ms) uses: the newest timeline whose window holds it, its newest base at or before it. */
export function chooseBase(w: Windows, at: number): { timeline: TimelineView; base: BaseView } | null {
  const candidates = w.timelines.filter((t) => t.from !== null && t.from <= at && at <= t.to!);
  const timeline = candidates.at(-1);
  if (!timeline) return null;
  const base = baseAt(timeline, at);
  return base ? { timeline, base } : null;
}

/** The base of a timeline a restore to `at` (ms) starts from: its newest usable base at or before it. */
export function baseAt(t: TimelineView, at: number): BaseView | null {
  return t.bases.filter((b) => b.usable && b.from <= at).sort((a, b) => a.from - b.from || a.sequence - b.sequence).at(-1) ?? null;
}

/**
 * The timeline and base a restore to the state right after the batch holding `sequence` uses: the newest
 * timeline that reaches it from a usable base at or before it, and there the base with the highest
 * sequence at or before it (the least log to apply).
 */
export function chooseBaseForSequence(w: Windows, sequence: number): { timeline: TimelineView; base: BaseView } | null {
  for (const timeline of [...w.timelines].reverse()) {
    if (timeline.from === null || timeline.lastSequence === null || timeline.lastSequence < sequence) continue;
    const base = timeline.bases.filter((b) => b.usable && b.sequence <= sequence).sort((a, b) => a.sequence - b.sequence || a.from - b.from).at(-1);
    if (base) return { timeline, base };
  }
  return null;
}

/** The lowest sequence number a timeline's usable bases restore (null when none is usable). */
export function firstSequence(t: TimelineView): number | null {
  const usable = t.bases.filter((b) => b.usable);
  return usable.length > 0 ? Math.min(...usable.map((b) => b.sequence)) : null;
}

/** The newest restorable moment of all, or null. */
export function latestMoment(w: Windows): number | null {
  const ends = w.timelines.filter((t) => t.to !== null).map((t) => t.to!);
  return ends.length > 0 ? Math.max(...ends) : null;
}
