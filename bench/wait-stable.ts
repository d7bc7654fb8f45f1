import { sleep } from './progress.js';

/**
 * Waits until `signature()` has stayed the same for 3 s (looked at every 250 ms), or `timeoutMs` ran out.
 * Resolves true when it settled. The benches' "idle" means this: a database whose background work
 * (compactions, files appearing and vanishing) has stopped.
 */
export async function waitUntilStable(signature: () => string, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let last = signature();
  let stableSince = performance.now();
  while (performance.now() < deadline) {
    await sleep(250);
    const now = signature();
    if (now !== last) {
      last = now;
      stableSince = performance.now();
    } else if (performance.now() - stableSince >= 3000) {
      return true;
    }
  }
  return false;
}
