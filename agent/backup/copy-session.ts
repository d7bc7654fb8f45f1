import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { Repository, type OpenOptions } from '../repository/repository.js';
import type { Storage } from '../storage/storage.js';

/**
 * What every kind of copy between two repositories runs under (copySnapshots now; the log archive's
 * segments and timelines later): both ends opened, a shared lock on each, both indexes loaded, and the
 * packs an interrupted earlier copy stored at the destination indexed.
 */
export interface CopyEnds {
  from: Repository;
  to: Repository;
  /** The destination was made for this copy (openCopyDestination). */
  created: boolean;
  /** The destination's lock (a copy's pending marker names it: Repository.markPending). */
  toLockId: string;
  /** Packs an earlier copy (or backup) stored at the destination without an index, indexed now. */
  packsRecovered: number;
}

/**
 * The destination of a copy at `storage`: opened when it is a repository (with the source's master key
 * where it holds the source's key, as one made by a copy does: no password asked, no second key
 * derivation; else with `options.password`); else made, with the keys and chunk parameters of `source`
 * where that is encrypted (Repository.createWithKeysOf: the source's passwords open it, and packs move
 * as they are), or from a plain source as `backup init` makes one (encrypted with `options.password`,
 * unless `options.insecureNoEncryption`). Refuses (INVALID_ARGUMENT) the source itself.
 */
export async function openCopyDestination(storage: Storage, source: Repository, options: Omit<OpenOptions, 'create'>): Promise<{ repo: Repository; created: boolean }> {
  const { repo, created } = await Repository.openBeside(storage, source, { ...options, create: true });
  if (repo.config.id === source.config.id) {
    await repo.codec.close();
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${repo.description} is the source repository itself: copy into another one`);
  }
  return { repo, created };
}

/**
 * Runs `work` with a shared lock on both ends (a prune, which locks exclusively, is refused meanwhile
 * with REPOSITORY_LOCKED, and this is refused during one), their indexes loaded and the destination's
 * stray packs indexed (Repository.indexStrayPacks: what a killed copy stored is reused, not sent again).
 * The source is locked before the destination is opened (`openTo`, e.g. openCopyDestination), so a
 * copy refused by a prune of the source makes nothing at the destination. The locks are released, and
 * the destination's codec closed, however `work` ends.
 */
export async function withCopyLocks<T>(from: Repository, openTo: () => Promise<{ repo: Repository; created: boolean }>, work: (ends: CopyEnds) => Promise<T>): Promise<T> {
  const fromLock = await from.lock('copy of its backups into another repository', false);
  // The source's index loads while the destination is opened and locked (a round trip or more each).
  const fromIndex = from.loadIndex();
  fromIndex.catch(() => {}); // awaited below, and before the source's lock goes, however this ends
  try {
    const { repo: to, created } = await openTo();
    try {
      const toLock = await to.lock(`copy from ${from.description}`, false);
      try {
        // The stray packs are only a saving: if that fails, this copy sends them again and the marker
        // stays. Both ends settled before anything goes on (nothing runs on past the locks).
        const [loaded, toIndex] = await Promise.allSettled([fromIndex, to.loadIndex().then(() => to.indexStrayPacks().catch(() => 0))]);
        if (loaded.status === 'rejected') throw loaded.reason;
        if (toIndex.status === 'rejected') throw toIndex.reason;
        const packsRecovered = toIndex.value;
        return await work({ from, to, created, toLockId: toLock.id, packsRecovered });
      } finally {
        await toLock.release();
      }
    } finally {
      await to.codec.close();
    }
  } finally {
    await fromIndex.catch(() => {});
    await fromLock.release();
  }
}
