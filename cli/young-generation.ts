import { setFlagsFromString } from 'node:v8';

/**
 * Imported first by the CLI: keeps V8's young generation small for the life of the process. A restore,
 * verify or prune streams gigabytes through the HTTP client, which hands over every socket read (up to
 * 64 KiB) in a fresh Buffer; those die young, but their memory is returned only when V8 collects the
 * young generation, and V8 grows that generation (to 2 x 16 MiB) under such a steady flow, so
 * collections grow rare and dead socket buffers pile up. Measured on a 1.2 GB restore from S3 (4
 * streams), peak RSS as V8 defaults / with the generation kept small: Node 20 118-124 / 101-107 MiB,
 * Node 24 133-138 / 100-103 MiB, and no slower.
 *
 * Node 20's V8 (11.x) keeps the generation at its starting size when it may not grow; from V8 13 (Node
 * 24) that flag, set at run time, no longer holds it, and a cap on the generation's capacity does (a
 * flag V8 11 does not know: setting it there prints an error, hence the version check). The CLI is a
 * short-lived tool of its own, so it may tune its own heap; the agent never does this (it lives in the
 * operator's process, whose heap is the operator's business).
 */
setFlagsFromString('--semi-space-growth-factor=1');
if (Number(process.versions.v8.split('.')[0]) >= 13) setFlagsFromString('--scavenger-max-new-space-capacity-mb=2');
