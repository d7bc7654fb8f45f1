import { AdminError, ErrorCodes } from '../../shared/errors.js';
import type { Repository } from '../repository/repository.js';
import { decodeSegment, parseWalName, segmentName, sha256Here, WAL_PREFIX, type SegmentInfo, type Sha256 } from './segment.js';
import { bodyBytes, HEADER_ROOM, SegmentBuilder, segmentBufferBytes } from './segment-builder.js';
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
 * A merged segment stops growing here, counted as the storage lists it: compressed and sealed (the
 * planner sees only this size in a listing). It bounds the number of bytes a restore fetches per object.
 */
export const MAX_MERGED_BYTES = 8 * 1024 * 1024;
/**
 * ...and here, counted as its body holds them (batches and their framing: what a merge, a restore and
 * `backup changes` hold of it in memory). The stored size alone bounded nothing: a log of repeated
 * values compresses fifty-fold, and a finished hour of the example node at 800 writes/s, 8 MiB stored,
 * was 2.8 GB of log to hold in the host. A window whose log is larger becomes several segments of about
 * this size. A merge holds one of these (a reused buffer, every page of it touched once a window's log
 * fills it, and kept by the pool between merges: at 16 MiB the example node's memory stepped up 14 MiB
 * at its first merge, at 8 MiB 5 MiB, measured: docs/benchmarks.md) and one input at a time.
 */
export const MAX_MERGED_RAW_BYTES = 8 * 1024 * 1024;
/** The size of a merge's reused buffer (the archiver's, from the process's pool). */
export const MERGE_BUFFER_BYTES = segmentBufferBytes(MAX_MERGED_RAW_BYTES);

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
 * for it. A window is finished when it ends at or before the newest segment's `to`. `bodies`: the body
 * bytes of the segments whose bodies are known (the archiver remembers those it encoded or read); a
 * run stays within both caps, an unknown body counted as its stored size (runMerges then finds it out,
 * and cuts the run where it must).
 */
export function planMerges(
  segments: readonly SizedSegment[],
  windows: { windowMs: number; largeWindowMs: number } = { windowMs: MINUTE_MS, largeWindowMs: HOUR_MS },
  maxBytes = MAX_MERGED_BYTES,
  bodies: ReadonlyMap<string, number> = new Map(),
  maxBodyBytes = MAX_MERGED_RAW_BYTES,
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
    for (const run of packRuns(group, maxBytes, bodies, maxBodyBytes)) {
      if (run.length < 2) continue;
      merges.push(run);
      for (const s of run) used.add(s.name);
    }
  }
  for (const [, group] of byWindow(windows.windowMs)) {
    const fresh = group.filter((s) => !used.has(s.name));
    for (const run of packRuns(fresh, maxBytes, bodies, maxBodyBytes)) if (run.length >= 2) merges.push(run);
  }
  return { merges, leftovers };
}

/** Consecutive runs (in sequence order, each following the last) of at most maxBytes stored and maxBodyBytes of body each. */
function packRuns(group: readonly SizedSegment[], maxBytes: number, bodies: ReadonlyMap<string, number>, maxBodyBytes: number): SizedSegment[][] {
  const runs: SizedSegment[][] = [];
  let run: SizedSegment[] = [];
  let bytes = 0;
  let body = 0;
  for (const s of group) {
    const prev = run.at(-1);
    const sBody = bodies.get(s.name) ?? s.size;
    if (run.length > 0 && (prev!.last + 1 !== s.first || bytes + s.size > maxBytes || body + sBody > maxBodyBytes)) {
      runs.push(run);
      run = [];
      bytes = 0;
      body = 0;
    }
    run.push(s);
    bytes += s.size;
    body += sBody;
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

/** What runMerges may be given beyond the plan. */
export interface MergeBuffers {
  /**
   * Where merged segments are built: at least HEADER_ROOM + maxBodyBytes + 32 bytes, kept by the caller
   * and reused (shared memory: the worker threads hashing and sealing it read it where it is). Default:
   * one made for the call.
   */
  buffer?: Buffer;
  /** Body bytes of segments, learnt here: every input read and every segment stored is set, every one deleted removed. */
  bodies?: Map<string, number>;
  /** Default MAX_MERGED_RAW_BYTES. */
  maxBodyBytes?: number;
}

/**
 * Carries out a plan: per merge, the inputs read and verified one at a time, each copied into the
 * merged segment being built and let go; the merged segment stored, then its inputs deleted; then the
 * leftovers deleted. A merged segment holds at most `maxBodyBytes` of body: a run whose inputs hold
 * more becomes several, and an input larger alone is left as it is. So a merge holds one buffer and one
 * input, whatever the window's log. Returns the objects stored and deleted. `sha256` checks the inputs
 * and seals the output (the agent's runs off its event loop).
 */
export async function runMerges(repo: Repository, plan: MergePlan, sha256: Sha256 = sha256Here, o: MergeBuffers = {}): Promise<{ stored: number; deleted: number }> {
  const maxBody = o.maxBodyBytes ?? MAX_MERGED_RAW_BYTES;
  const buffer = o.buffer ?? Buffer.allocUnsafe(segmentBufferBytes(maxBody));
  if (buffer.length < HEADER_ROOM + maxBody + 32) throw new AdminError(ErrorCodes.INTERNAL, `a merge buffer of ${buffer.length} bytes cannot hold ${maxBody} bytes of body`);
  const builder = new SegmentBuilder(buffer);
  let stored = 0;
  let deleted = 0;
  for (const run of plan.merges) {
    let group: SizedSegment[] = [];
    const flush = async () => {
      if (group.length >= 2) {
        const info: SegmentInfo = { timeline: group[0]!.timeline, first: group[0]!.first, last: group.at(-1)!.last, from: group[0]!.from, to: group.at(-1)!.to };
        const name = segmentName(info);
        const body = builder.bytes;
        await repo.putObject(name, await builder.finish(info, sha256));
        o.bodies?.set(name, body);
        stored++;
        for (const s of group) {
          await repo.deleteObject(s.name);
          o.bodies?.delete(s.name);
          deleted++;
        }
      }
      builder.reset();
      group = [];
    };
    for (const s of run) {
      const batches = await decodeSegment(s.name, s, await repo.getObject(s.name), sha256);
      const body = bodyBytes(batches);
      o.bodies?.set(s.name, body);
      if (group.length > 0 && builder.bytes + body > maxBody) await flush();
      if (body > maxBody) continue; // too large to join anything: stays as it is
      builder.add(batches);
      group.push(s);
    }
    await flush();
  }
  for (const name of plan.leftovers) {
    await repo.deleteObject(name);
    o.bodies?.delete(name);
    deleted++;
  }
  return { stored, deleted };
}
