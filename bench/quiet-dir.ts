import fs from 'node:fs';
import { progress } from './progress.js';
import { waitUntilStable } from './wait-stable.js';

/**
 * Waits until a database directory held open by another process stops changing (same file names for
 * 3 s): a node just started on a database that was written hard compacts for a while, and `cp -al` of a
 * directory whose files vanish under it fails.
 */
export async function waitForQuietDir(dbPath: string, timeoutMs: number): Promise<void> {
  if (!(await waitUntilStable(() => fs.readdirSync(dbPath).sort().join(','), timeoutMs))) {
    progress(`  ${dbPath} still changing after ${timeoutMs / 1000} s; going on`);
  }
}
