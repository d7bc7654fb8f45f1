import { MessageChannel } from 'node:worker_threads';

/**
 * A port closed at once. Posting to a closed port still runs the transfer (the HTML spec's
 * postMessage, which Node follows: the message is serialized, then dropped), so every ArrayBuffer in
 * the transfer list is detached and its memory freed when the dropped message goes, within the call:
 * ES2024's ArrayBuffer.prototype.transfer(0) without it, which Node 20 has only behind a V8 flag that a
 * library must not set in its host's process. Measured on Node 20 (a worker sealing 1 GiB with GCM in
 * 64 KiB updates): 0.52-0.58 s of CPU against transfer's 0.51-0.53 s and 0.70-0.73 s for leaving the
 * outputs to the collector, and 4 MiB of RSS against 26-41 MiB.
 */
const sink = new MessageChannel().port1;
sink.close();

/**
 * Frees the memory behind `view` now, where it is the whole of an ArrayBuffer this thread owns (a copy
 * a worker thread received for one call, or an output node:crypto just returned): detached, its memory
 * goes back at once instead of at the thread's next collection, which a thread that allocates little
 * JavaScript reaches only after tens of MiB of such garbage (measured: 30-40 MiB a thread, and fresh
 * pages faulted in for every update cost three to four times GCM's own CPU). Shared memory, or a view
 * of part of a buffer (a pooled small Buffer shares its memory with others): nothing is done. The
 * caller must not touch `view` after.
 */
export function releaseMemory(view: Uint8Array): void {
  const b = view.buffer;
  if (b instanceof SharedArrayBuffer || view.byteOffset !== 0 || view.byteLength !== b.byteLength || b.byteLength === 0) return;
  try {
    sink.postMessage(null, [b]);
  } catch {
    // Memory that cannot be detached (a WebAssembly memory's, one Node marked untransferable) is left
    // to the collector: freeing early is only ever an economy.
  }
}
