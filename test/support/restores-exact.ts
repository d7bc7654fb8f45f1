import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { Repository } from '../../dist/agent/repository/repository.js';
import type { Storage } from '../../dist/agent/storage/storage.js';
import { restoreToMoment } from '../../dist/agent/log-archive/restore-to-moment.js';
import { readState, type Writers } from './pitr-writers.js';
import { TEST_REPO } from './test-password.js';

/**
 * Restores from one repository at each of `moments` (into `scratch`, deleted after), each checked
 * against the writers' model of that moment; returns the batches the restores replayed in all.
 */
export async function restoresExact(storage: Storage, moments: number[], writers: Writers, scratch: string): Promise<number> {
  const repo = await Repository.open(storage, TEST_REPO);
  let applied = 0;
  try {
    for (const [i, at] of moments.entries()) {
      const to = path.join(scratch, `restored-${i}`);
      const r = await restoreToMoment({ repo, at, to });
      applied += r.batches;
      expect(writers.mismatch(await readState(to, writers.models.length), writers.bounds(at), true), `restore to ${new Date(at).toISOString()}`).toBeNull();
      fs.rmSync(to, { recursive: true });
    }
  } finally {
    await repo.codec.close();
  }
  return applied;
}
