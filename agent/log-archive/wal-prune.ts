import type { PruneClient } from '../repository/prune-client.js';
import { parseWalName, walTimeline, WAL_PREFIX, type WalObject } from './segment.js';

/**
 * What `backup prune` deletes under `wal/` once retention has chosen the backups to keep. A pure
 * function (tested as data); the caller deletes the names after the snapshots it removes.
 *
 * Per timeline:
 * - the base records of backups not kept (their snapshot is gone: nothing can be restored from them);
 * - the segments wholly at or before the oldest kept base's sequence: a restore from a base applies
 *   only batches after its sequence, so no kept base will read them; marks below that sequence (their
 *   moments are before every kept base);
 * - every object of a timeline with no kept base left (nothing of it is restorable) — except in the
 *   newest timeline: a running archiver may be extending it, and the record of its next base (a backup
 *   just made, registered at the next shipment) may not be listed yet. Only its records of removed
 *   backups go; the next prune takes the rest once a newer timeline exists.
 *
 * Never deleted: a segment holding any batch after the oldest kept base's sequence, a record of a kept
 * backup, anything that is not a log archive object (the caller lists only what parseWalName knows).
 */
export function walObjectsToPrune(objects: readonly WalObject[], keptBackups: ReadonlySet<string>): string[] {
  const byTimeline = new Map<string, WalObject[]>();
  for (const o of objects) {
    const id = walTimeline(o);
    const list = byTimeline.get(id) ?? [];
    list.push(o);
    byTimeline.set(id, list);
  }
  const newest = [...byTimeline.keys()].sort().at(-1);
  const doomed: string[] = [];
  for (const [id, list] of byTimeline) {
    const keptBases = list.flatMap((o) => (o.kind === 'base' && keptBackups.has(o.base.backup) ? [o.base] : []));
    for (const o of list) if (o.kind === 'base' && !keptBackups.has(o.base.backup)) doomed.push(o.name);
    if (keptBases.length === 0) {
      if (id !== newest) for (const o of list) if (o.kind !== 'base') doomed.push(o.name);
      continue;
    }
    const oldest = Math.min(...keptBases.map((b) => b.sequence));
    for (const o of list) {
      if (o.kind === 'segment' && o.segment.last <= oldest) doomed.push(o.name);
      // A mark at the oldest base's sequence may still extend its window (a stop with nothing written since).
      if (o.kind === 'mark' && o.mark.last < oldest) doomed.push(o.name);
    }
  }
  return doomed.sort();
}

/**
 * The backup retention must keep whatever its policy says: the newest base (whose backup still exists)
 * of the newest timeline, which a running archiver may be extending. Without it that timeline has no
 * window at all while its archiver goes on shipping and reports nothing wrong: protection lost in
 * silence. Usually the newest backup is that base anyway; not when newer backups are of checkpoints
 * older than the timeline, or made while no timeline ran. Older timelines' bases follow the policy
 * (their windows go with them). Null when the newest timeline has no base with a backup.
 */
export function protectedBase(objects: readonly WalObject[], backups: ReadonlySet<string>): string | null {
  let newest: string | undefined;
  for (const o of objects) {
    const id = walTimeline(o);
    if (newest === undefined || id > newest) newest = id;
  }
  let best: { backup: string; sequence: number } | null = null;
  for (const o of objects) {
    if (o.kind !== 'base' || o.base.timeline !== newest || !backups.has(o.base.backup)) continue;
    if (best === null || o.base.sequence > best.sequence) best = o.base;
  }
  return best?.backup ?? null;
}

/**
 * The log archive as a client of prune (agent/repository/prune-client.ts): one listing of `wal/`, the
 * base it protects (protectedBase), and what no kept base needs (walObjectsToPrune) with the bytes
 * they hold.
 */
export const logArchivePruneClient: PruneClient = {
  async survey(repo, snapshots) {
    const objects: WalObject[] = [];
    const sizes = new Map<string, number>();
    for await (const obj of repo.list(WAL_PREFIX)) {
      const parsed = parseWalName(obj.name);
      if (!parsed) continue;
      objects.push(parsed);
      sizes.set(obj.name, obj.size);
    }
    return {
      protect: protectedBase(objects, snapshots),
      doomed(kept) {
        const names = walObjectsToPrune(objects, kept);
        return { names, bytes: names.reduce((n, name) => n + (sizes.get(name) ?? 0), 0) };
      },
    };
  },
};
