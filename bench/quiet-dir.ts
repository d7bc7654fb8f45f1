import fs from 'node:fs';
import { progress, sleep } from './progress.js';

/**
 * Waits until a database directory held open by another process stops changing (same file names for
 * 3 s): a node just started on a database that was written hard compacts for a while, and `cp -al` of a
 * directory whose files vanish under it fails.
 */
export async function waitForQuietDir(dbPath: string, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const signature = () => fs.readdirSync(dbPath).sort().join(',');
  let last = signature();
  let stableSince = performance.now();
  while (performance.now() < deadline) {
    await sleep(250);
    const now = signature();
    if (now !== last) {
      last = now;
      stableSince = performance.now();
    } else if (performance.now() - stableSince >= 3000) {
      return;
    }
  }
  progress(`  ${dbPath} still changing after ${timeoutMs / 1000} s; going on`);
}
