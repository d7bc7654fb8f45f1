import type { CheckpointRecord, PruneDecision, RetentionPolicy } from '../../shared/api.js';
import { toAdminError } from '../../shared/errors.js';
import { applyPolicy } from '../retention/apply-policy.js';
import type { BuiltCheckpoint } from './checkpoint-dir.js';
import type { CheckpointIndex } from './checkpoint-index.js';

export interface RetentionInput {
  policy: RetentionPolicy;
  /** The agent's clock (ms since the epoch): the policy's `now`. */
  now: number;
  /** Free space on the checkpoint filesystem; only needed (and only asked for) when the policy has minFreeBytes. */
  disk: { freeBytes: number } | null;
  /** Checkpoints that count as pinned: the one a backup is reading, those a replica still waits for. */
  protect: string[];
}

export interface AfterCreate {
  record: CheckpointRecord;
  /** Renamed aside, no longer listed: the caller removes each `doomed` tree, after answering. */
  removed: (PruneDecision & { freedBytes: number; doomed: string })[];
  /** Why retention did not run to the end (the checkpoint itself is made and indexed all the same). */
  error: string | null;
}

/**
 * The end of a create, in one trip to the fs worker: index the new checkpoint, decide retention in
 * memory, and take what it removes out of the listing (a rename each, one fsync) so that a list right
 * after the create already agrees with the policy. Removing the trees is left for after the answer.
 */
export function retireAfterCreate(index: CheckpointIndex, built: BuiltCheckpoint, r: RetentionInput): AfterCreate {
  const record = index.added(built);
  const protect = new Set(r.protect);
  try {
    const outcome = applyPolicy(
      index.snapshot().map((c) => ({ id: c.id, createdAt: new Date(c.createdAt), pinned: c.pinned || protect.has(c.id), exclusiveBytes: c.exclusiveBytes })),
      r.policy,
      new Date(r.now),
      r.disk ?? undefined,
    );
    const reasons = new Map(outcome.remove.map((d) => [d.id, d.reason]));
    const retired = index.retire(outcome.remove.map((d) => d.id), { refreshed: true });
    return { record, removed: retired.map((x) => ({ id: x.id, reason: reasons.get(x.id)!, freedBytes: x.freedBytes, doomed: x.doomed })), error: null };
  } catch (err) {
    return { record, removed: [], error: toAdminError(err).message };
  }
}
