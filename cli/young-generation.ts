import { setFlagsFromString } from 'node:v8';

/**
 * V8 flags the CLI sets on itself at start, before the first allocation worth collecting. A restore,
 * verify or prune streams gigabytes through the HTTP client, which hands over every socket read (up to
 * 64 KiB) in a fresh buffer; those die young, but their memory is returned only when V8 collects the
 * young generation and then frees the dead buffers.
 *
 * - `--semi-space-growth-factor=1`: V8 grows the young generation (to 2 x 16 MiB) under such a steady
 *   flow, so collections grow rare and dead socket buffers pile up; a factor of 1 keeps it at its
 *   starting size.
 * - `--no-concurrent-array-buffer-sweeping`: after a collection V8 frees dead buffers in a background
 *   task, which on a busy machine (the restore's own threads, other processes) runs late; without it
 *   they are freed within the collection.
 *
 * Peak RSS of a 1.2 GB restore from S3 through the CLI (4 streams), with / without these flags: the
 * README's S3 section.
 *
 * Only flags that every supported Node's V8 knows, both read by V8 when used rather than only when the
 * heap is set up, so that setting them at run time takes effect. A flag V8 does not know makes it print
 * `Error: unrecognized flag` on stderr, which no caller can catch or silence, and learning which flags the
 * running V8 has (`node --v8-options`) costs a second process on every command (60-100 ms of CPU on
 * Node 20-26, where the CLI's whole `status` takes 170-200 ms). So there is no
 * version check here: test/cli-young-generation.test.ts looks each flag up in the running Node's
 * `--v8-options` and CI runs it on every supported Node, so a Node whose V8 drops one fails there, naming
 * the flag, before a user sees the error. (Node 24's V8 13 also had a cap on the generation's capacity,
 * gone in V8 14: a one-version flag is exactly what this list must not hold.) The CLI is a short-lived
 * tool of its own, so it may tune its own heap; the agent never does this (it lives in the operator's
 * process, whose heap is the operator's business).
 */
export const YOUNG_GENERATION_FLAGS = ['--semi-space-growth-factor=1', '--no-concurrent-array-buffer-sweeping'] as const;

for (const flag of YOUNG_GENERATION_FLAGS) setFlagsFromString(flag);
