/** ES2024's ArrayBuffer.prototype.transfer, where this thread has it (Node 22 on; Node 20 with the flag crypto-pool.ts sets). */
const transfer = (ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer, length: number) => ArrayBuffer }).transfer;

/**
 * Frees the memory behind `view` now, where it is the whole of an ArrayBuffer this thread owns (a copy
 * a worker thread received for one call): detached, its memory goes back at once instead of at the
 * thread's next collection, which a worker that allocates little JavaScript reaches rarely (its
 * received copies piled up to 30 MiB a thread, measured). Shared memory, a view of part of a buffer,
 * or a thread without `transfer`: nothing is done. The caller must not touch `view` after.
 */
export function releaseMemory(view: Uint8Array): void {
  const b = view.buffer;
  if (transfer && !(b instanceof SharedArrayBuffer) && view.byteOffset === 0 && view.byteLength === b.byteLength) transfer.call(b, 0);
}
