import type { Repository } from '../repository/repository.js';
import { decodeSegment, encodeSegment, parseWalName, segmentName, sha256Here, WAL_PREFIX, type SegmentBatch, type SegmentInfo, type Sha256 } from './segment.js';
import { coveringChain } from './timeline-windows.js';

/**
 * Merging the log archive's segments as they age, so that a day of archiving leaves few objects and a
 * restore reads few (Litestream's users paid for the opposite: restores through thousands of small
 * objects). Two levels, on windows aligned to the clock, each merged only once it is complete:
 *
 * - a minute: the segments whose `to` falls in a finished minute become one (a segment per interval,
 *   60 at the default 1 s, become 1);
 * - an hour: the segments of a finished hour become as few as MAX_MERGED_BYTES allows.
 *
 * So every byte is rewritten at most twice, and a timeline holds, besides its finished hours (a few
 * objects each), at most 60 minute segments and the current minute's raw ones. A merged segment holds
 * every batch of its inputs with its own `readAt`: no restore point is lost. A window is finished when a
 * newer segment exists (the archiver ships in order: nothing more will land in it).
 *
 * Crash safety: the merged segment is stored before its inputs are deleted; in between (or after a kill
 * -9 there) both exist, and readers take the covering chain (timeline-windows.ts), which prefers the
 * merged one; the next merge deletes the leftover inputs.
 */

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;
/**
 * A merged segment stops growing here, counted as the storage lists it: compressed and sealed. What it
 * bounds is memory: a merge, a restore and `backup changes` hold one segment whole, as encoded, and a
 * node's log compresses to about a fifth (docs/benchmarks.md), so 8 MiB stored is about 40 MB of log
 * (a cap of 32 MiB stored let a merge in the host hold 160 MB of log and several copies of it). The
 * names carry no encoded size: the planner can only see this one.
 */
export const MAX_MERGED_BYTES = 8 * 1024 * 1024;

export interface SizedSegment extends SegmentInfo {
  name: string;
  size: number;
}

export interface MergePlan {
  /** Merge these (consecutive in the chain, ≥ 2) into one. */
  merges: SizedSegment[][];
  /** Inputs of an earlier merge whose merged segment is stored: delete. */
  leftovers: string[];
}

/**
 * Which segments of one timeline to merge (a pure function, tested as data), from every segment listed
 * for it. A window is finished when it ends at or before the newest segment's `to`.
 */
export function planMerges(
  segments: readonly SizedSegment[],
  windows: { windowMs: number; largeWindowMs: number } = { windowMs: MINUTE_MS, largeWindowMs: HOUR_MS },
  maxBytes = MAX_MERGED_BYTES,
): MergePlan {
  const chain = coveringChain(segments) as SizedSegment[];
  const inChain = new Set(chain.map((s) => s.name));
  // Not in the chain but inside its range: covered by a merged segment (left by a merge cut short).
  const leftovers = segments.filter((s) => !inChain.has(s.name) && chain.some((c) => c.first <= s.first && s.last <= c.last)).map((s) => s.name);
  const newestTo = chain.at(-1)?.to ?? 0;
  const merges: SizedSegment[][] = [];
  // Hours first: a finished hour with more segments than its size needs.
  const byWindow = (span: number) => {
    const groups = new Map<number, SizedSegment[]>();
    for (const s of chain) {
      const w = Math.floor(s.to / span);
      if ((w + 1) * span > newestTo) continue; // not finished
      const g = groups.get(w) ?? [];
      g.push(s);
      groups.set(w, g);
    }
    return groups;
  };
  const used = new Set<string>();
  for (const [, group] of byWindow(windows.largeWindowMs)) {
    for (const run of packRuns(group, maxBytes)) {
      if (run.length < 2) continue;
      merges.push(run);
      for (const s of run) used.add(s.name);
    }
  }
  for (const [, group] of byWindow(windows.windowMs)) {
    const fresh = group.filter((s) => !used.has(s.name));
    for (const run of packRuns(fresh, maxBytes)) if (run.length >= 2) merges.push(run);
  }
  return { merges, leftovers };
}

/** Consecutive runs (in sequence order, each following the last) of at most maxBytes each. */
function packRuns(group: readonly SizedSegment[], maxBytes: number): SizedSegment[][] {
  const runs: SizedSegment[][] = [];
  let run: SizedSegment[] = [];
  let bytes = 0;
  for (const s of group) {
    const prev = run.at(-1);
    if (run.length > 0 && (prev!.last + 1 !== s.first || bytes + s.size > maxBytes)) {
      runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(s);
    bytes += s.size;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/** The segments listed for one timeline, with their sizes. One LIST. */
export async function listSegments(repo: Repository, timeline: string): Promise<SizedSegment[]> {
  const out: SizedSegment[] = [];
  for await (const o of repo.list(`${WAL_PREFIX}${timeline}/seg/`)) {
    const parsed = parseWalName(o.name);
    if (parsed?.kind === 'segment') out.push({ ...parsed.segment, name: o.name, size: o.size });
  }
  return out;
}

/**
 * Carries out a plan: per merge, every input read and verified whole, the merged segment stored, then
 * the inputs deleted; then the leftovers deleted. Returns the objects stored and deleted. `sha256` checks
 * the inputs and seals the output (the agent's runs off its event loop).
 */
export async function runMerges(repo: Repository, plan: MergePlan, sha256: Sha256 = sha256Here): Promise<{ stored: number; deleted: number }> {
  let stored = 0;
  let deleted = 0;
  for (const run of plan.merges) {
    const batches: SegmentBatch[] = [];
    for (const s of run) batches.push(...(await decodeSegment(s.name, s, await repo.getObject(s.name), sha256)));
    const info: SegmentInfo = { timeline: run[0]!.timeline, first: run[0]!.first, last: run.at(-1)!.last, from: run[0]!.from, to: run.at(-1)!.to };
    await repo.putObject(segmentName(info), await encodeSegment(info, batches, sha256));
    stored++;
    for (const s of run) {
      await repo.deleteObject(s.name);
      deleted++;
    }
  }
  for (const name of plan.leftovers) {
    await repo.deleteObject(name);
    deleted++;
  }
  return { stored, deleted };
}
