import type { LogArchiveTimelines } from '../../shared/api.js';
import { firstSequence, type Windows } from './timeline-windows.js';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * The windows as `backup timeline` answers them (shared/api.ts LogArchiveTimelines): the same record
 * whether the CLI read the repository itself (`--repo`) or asked the agent.
 */
export function timelineReport(windows: Windows): LogArchiveTimelines {
  return {
    timelines: windows.timelines.map((t) => ({
      id: t.id,
      from: iso(t.from),
      to: iso(t.to),
      firstSequence: firstSequence(t),
      lastSequence: t.lastSequence,
      segments: t.segments.length,
      brokenAfterSequence: t.brokenAfter,
      bases: t.bases.map((b) => ({ backup: b.backup, sequence: b.sequence, from: new Date(b.from).toISOString(), usable: b.usable, problem: b.problem })),
      marks: t.marks.map((m) => ({ kind: m.kind, sequence: m.last, at: new Date(m.at).toISOString() })),
    })),
    gaps: windows.gaps.map((g) => ({ from: new Date(g.from).toISOString(), to: new Date(g.to).toISOString() })),
  };
}
