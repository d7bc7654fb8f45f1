import type { Storage } from '../storage/storage.js';
import { Repository, type OpenOptions } from './repository.js';

/**
 * One repository as a process uses it: the config is read and the keys unlocked (the password asked for)
 * once, on the first open, and every later open — on the same storage or another handle of it — reuses
 * them: an agent opens a Repository per operation (each with its own index), and its log archiver one
 * of its own, without paying the key derivation (about half a second) each time. A failed first open
 * is not kept: the next one tries again.
 */
export class RepositoryAccess {
  private opened: Promise<Repository> | null = null;

  constructor(private readonly options: Omit<OpenOptions, 'create'> = {}) {}

  /**
   * A Repository on `storage` (the caller's; it closes it). `create`: make the repository if there is
   * none. `beside`: asked for only by the first open, the repository this one is a second copy of (a
   * replica's primary), or null: that open then goes through Repository.openBeside (its master key
   * tried first; made with its keys).
   */
  async open(storage: Storage, create = false, beside: (() => Promise<Repository | null>) | null = null): Promise<Repository> {
    if (!this.opened) {
      const first = async () => {
        const source = beside ? await beside() : null;
        return source ? (await Repository.openBeside(storage, source, { ...this.options, create })).repo : Repository.open(storage, { ...this.options, create });
      };
      const opening = first();
      this.opened = opening;
      opening.catch(() => {
        if (this.opened === opening) this.opened = null;
      });
      return opening;
    }
    return (await this.opened).on(storage);
  }

  /** Stops what the format keeps running (the codec's worker threads). */
  async close(): Promise<void> {
    const opened = this.opened;
    this.opened = null;
    await opened?.then((r) => r.codec.close()).catch(() => {});
  }
}
