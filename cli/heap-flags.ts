import { PerformanceObserver, constants } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';

/**
 * V8 settings the CLI makes on itself at start, before the first allocation worth collecting. A restore,
 * verify, prune or copy streams gigabytes through the HTTP client, which hands over every socket read (up
 * to 64 KiB) in a fresh buffer. Those die young, but their memory is returned only when V8 collects the
 * young generation and then frees the dead buffers; until then V8 counts them as memory allocated since
 * its last full collection.
 *
 * - `--semi-space-growth-factor=1`: V8 grows the young generation (to 2 x 16 MiB) under such a steady
 *   flow, so collections grow rare and dead socket buffers pile up; a factor of 1 keeps it at its
 *   starting size.
 * - `--no-concurrent-array-buffer-sweeping`: after a collection V8 frees dead buffers in a background
 *   task, which on a busy machine (the restore's own threads, other processes) runs late; without it
 *   they are freed within the collection.
 * - `--heap-growing-percent`, while the heap is small (oldGenerationGrowingPercent): Node 20's V8 adds
 *   the buffers allocated since its last full collection to the old generation's size when it decides to
 *   start the next one. A restore holds about 13 MiB, so V8 sets the next full collection's start about
 *   12-18 MiB above it, and up to 32 MiB of young, mostly dead, socket buffers cross that line again and
 *   again: up to 90 full collections in one restore of 1 GiB, each marking the whole old generation, and
 *   a fifth of its user CPU (docs/benchmarks.md, "A restore's full collections on Node 20"). Room of
 *   OLD_GENERATION_ROOM above what the heap holds ends that. Node 24 and 26 ran one either way.
 *
 * Peak RSS of a 1.2 GB restore from S3 through the CLI (4 streams), with / without the first two: the
 * README's S3 section.
 *
 * Only flags that every supported Node's V8 knows, each read by V8 when used rather than only when the
 * heap is set up, so that setting them at run time takes effect. A flag V8 does not know makes it print
 * `Error: unrecognized flag` on stderr, which no caller can catch or silence, and learning which flags the
 * running V8 has (`node --v8-options`) costs a second process on every command (60-100 ms of CPU on
 * Node 20-26, where the CLI's whole `status` takes 170-200 ms). So there is no
 * version check here: test/cli-heap-flags.test.ts looks each flag up in the running Node's
 * `--v8-options` and CI runs it on every supported Node, so a Node whose V8 drops one fails there, naming
 * the flag, before a user sees the error. (Node 24's V8 13 also had a cap on the generation's capacity,
 * gone in V8 14: a one-version flag is exactly what this list must not hold.) The CLI is a short-lived
 * tool of its own, so it may tune its own heap; the agent never does this (it lives in the operator's
 * process, whose heap is the operator's business).
 */
export const YOUNG_GENERATION_FLAGS = ['--semi-space-growth-factor=1', '--no-concurrent-array-buffer-sweeping'] as const;

/** The flag whose value oldGenerationGrowingPercent gives (0: V8 decides, as without it). */
export const GROWING_FLAG = '--heap-growing-percent';

const MiB = 1024 * 1024;

/**
 * The room a small heap is given above what it holds before V8 starts a full collection: more than the
 * young socket buffers that pile up between two young collections (32 MiB, when V8 collects the young
 * generation for the buffers' sake alone), with some to spare.
 */
export const OLD_GENERATION_ROOM = 48 * MiB;

/**
 * V8's growing factor is 1 + percent / 100 (V8 picks 1.1 to 4 itself); the next full collection starts
 * at about the heap's size times it. Pure: a table test holds it.
 *
 * - Below OLD_GENERATION_ROOM held: the percent that gives at least that much room, and never more than
 *   4x (300: the top of V8's own range), so a small heap grows to at most OLD_GENERATION_ROOM more.
 * - From OLD_GENERATION_ROOM up (a prune or verify of a large repository holds its index): 0, V8's own
 *   choice, so a large heap is never made to grow more than V8 would let it.
 */
export function oldGenerationGrowingPercent(heldBytes: number): number {
  if (!(heldBytes < OLD_GENERATION_ROOM)) return 0;
  return Math.min(300, Math.ceil((100 * OLD_GENERATION_ROOM) / Math.max(heldBytes, 1)));
}

for (const flag of YOUNG_GENERATION_FLAGS) setFlagsFromString(flag);

// V8 reads the flag when a full collection ends, to set when the next one starts; it is set again after
// each from what the heap then holds (an observer's entries arrive after the collection, once the event
// loop turns, which a CLI waiting on I/O does at once: the new value counts from the next one). The
// observer holds no handle open: the CLI still exits when its work ends.
let percent = -1;

/** The percent last set (oldGenerationGrowingPercent of the heap after the last full collection). */
export function growingPercentInEffect(): number {
  return percent;
}

function retune(): void {
  const next = oldGenerationGrowingPercent(getHeapStatistics().used_heap_size);
  if (next !== percent) setFlagsFromString(`${GROWING_FLAG}=${(percent = next)}`);
}

retune();
new PerformanceObserver((list) => {
  if (list.getEntries().some((e) => (e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) retune();
}).observe({ entryTypes: ['gc'] });
