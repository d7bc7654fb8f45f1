/**
 * The retention policy as a pure function: which checkpoints to keep, which to remove and why.
 *
 * No I/O and no clock here: the caller passes the checkpoints, the policy, `now` and (optionally) the
 * free space, and gets back a decision it can show (dry run) or carry out.
 */

import type { PruneDecision, RetentionPolicy } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { KEEP_KEYS, describeValue, parseCount } from '../../shared/input-rules.js';

export interface PolicyCheckpoint {
  id: string;
  createdAt: Date;
  pinned: boolean;
  /** What removing it would free (CheckpointRecord.exclusiveBytes). */
  exclusiveBytes: number;
}

export interface PolicyOutcome {
  /** Ids kept, oldest first. */
  keep: string[];
  /** Removals, oldest first (also the order to carry them out). */
  remove: PruneDecision[];
}

export const DEFAULT_RETENTION: RetentionPolicy = Object.freeze({
  keepLast: 3,
  keepHourly: 0,
  keepDaily: 0,
  keepWeekly: 0,
  keepMonthly: 0,
  maxAgeMs: null,
  minFreeBytes: 0,
});

/**
 * Merges `input` over DEFAULT_RETENTION and validates the result. Keys that are absent or
 * `undefined` take the default. Throws AdminError(INVALID_ARGUMENT) naming the first bad field.
 */
export function parseRetention(input: Partial<RetentionPolicy>): RetentionPolicy {
  // Callers may hand us parsed JSON or config, so the static type is not trusted.
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'retention policy must be an object');
  }
  const policy: RetentionPolicy = { ...DEFAULT_RETENTION };
  for (const key of [...KEEP_KEYS, 'minFreeBytes'] as const) {
    const value: unknown = input[key];
    if (value !== undefined) policy[key] = parseCount(value, `retention ${key}`);
  }
  const maxAge: unknown = input.maxAgeMs;
  if (maxAge !== undefined) {
    if (maxAge !== null && (typeof maxAge !== 'number' || !Number.isFinite(maxAge) || maxAge <= 0)) {
      throw new AdminError(
        ErrorCodes.INVALID_ARGUMENT,
        `retention maxAgeMs must be null or a positive number of milliseconds, got ${describeValue(maxAge)}`,
      );
    }
    policy.maxAgeMs = maxAge;
  }
  return policy;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

type BucketRule = { count: number; bucket: (ms: number) => number };

function hourBucket(ms: number): number {
  return Math.floor(ms / HOUR_MS);
}

function dayBucket(ms: number): number {
  return Math.floor(ms / DAY_MS);
}

/**
 * ISO weeks run Monday to Sunday (UTC here). Day 0 of the epoch, 1970-01-01, was a Thursday, so
 * shifting by 3 days makes every bucket start on a Monday. A week straddling New Year is one bucket,
 * which is exactly ISO's rule (2020-12-28 .. 2021-01-03 is week 53 of 2020).
 */
function isoWeekBucket(ms: number): number {
  return Math.floor((dayBucket(ms) + 3) / 7);
}

function monthBucket(ms: number): number {
  const d = new Date(ms);
  return d.getUTCFullYear() * 12 + d.getUTCMonth();
}

/**
 * Decides which checkpoints to keep and which to remove, in the style of restic's `ApplyPolicy`.
 *
 * - Input order does not matter: checkpoints are ordered by `createdAt`, ties broken by `id`
 *   (so among equal timestamps the greater id counts as newer). Duplicate ids or invalid dates throw
 *   AdminError(INVALID_ARGUMENT).
 * - Pinned checkpoints are always kept and are invisible to the keep rules: they neither take a
 *   keepLast slot nor fill an hourly/daily/weekly bucket. `keepLast: 3` therefore keeps the three
 *   newest unpinned checkpoints plus every pinned one.
 * - keepLast N keeps the N newest unpinned checkpoints.
 * - keepHourly / keepDaily / keepWeekly N: going from newest to oldest, each new UTC hour / UTC day /
 *   ISO week (Monday-start, UTC) that contains an unpinned checkpoint keeps that bucket's newest
 *   checkpoint, until N buckets have been counted. Empty periods are skipped, not counted (restic).
 * - An unpinned checkpoint kept by no rule is removed with reason 'policy'. With every count at 0,
 *   every unpinned checkpoint goes.
 * - maxAgeMs (when not null): an unpinned checkpoint with `now - createdAt > maxAgeMs` is removed with
 *   reason 'max-age' even if a keep rule would keep it.
 * - Free-space guard (only with `disk` and `minFreeBytes > 0`): estimated free space is
 *   `disk.freeBytes` plus the `exclusiveBytes` of everything removed so far. While that is below
 *   `minFreeBytes`, the oldest still-kept unpinned checkpoint is removed with reason 'free-space',
 *   except the newest checkpoint overall (a create that triggers a prune must not prune itself).
 *   When no candidate is left the guard stops, short of the target; refusing further creates is the
 *   caller's job. The estimate is conservative: removing a checkpoint can only make files of the
 *   others exclusive, never the reverse.
 *
 * `policy` is validated as by parseRetention.
 */
export function applyPolicy(
  checkpoints: readonly PolicyCheckpoint[],
  policy: RetentionPolicy,
  now: Date,
  disk?: { freeBytes: number },
): PolicyOutcome {
  const p = parseRetention(policy);
  const sorted = sortCheckpoints(checkpoints);
  const newestFirst = [...sorted].reverse();
  const unpinnedNewestFirst = newestFirst.filter((c) => !c.pinned);

  const keptByRule = new Set<string>();
  for (const c of unpinnedNewestFirst.slice(0, p.keepLast)) keptByRule.add(c.id);

  const rules: BucketRule[] = [
    { count: p.keepHourly, bucket: hourBucket },
    { count: p.keepDaily, bucket: dayBucket },
    { count: p.keepWeekly, bucket: isoWeekBucket },
    { count: p.keepMonthly, bucket: monthBucket },
  ];
  for (const rule of rules) {
    let remaining = rule.count;
    let lastBucket: number | undefined;
    for (const c of unpinnedNewestFirst) {
      if (remaining === 0) break;
      const bucket = rule.bucket(c.createdAt.getTime());
      // Newest first, so the first checkpoint met in a bucket is that bucket's newest.
      if (bucket !== lastBucket) {
        keptByRule.add(c.id);
        lastBucket = bucket;
        remaining--;
      }
    }
  }

  const reasons = new Map<string, PruneDecision['reason']>();
  const nowMs = now.getTime();
  for (const c of sorted) {
    if (c.pinned) continue;
    if (p.maxAgeMs !== null && nowMs - c.createdAt.getTime() > p.maxAgeMs) reasons.set(c.id, 'max-age');
    else if (!keptByRule.has(c.id)) reasons.set(c.id, 'policy');
  }

  if (disk !== undefined && p.minFreeBytes > 0) {
    let free = disk.freeBytes;
    for (const c of sorted) if (reasons.has(c.id)) free += c.exclusiveBytes;
    const newest = sorted.at(-1);
    for (const c of sorted) {
      if (free >= p.minFreeBytes) break;
      if (c.pinned || reasons.has(c.id) || c === newest) continue;
      reasons.set(c.id, 'free-space');
      free += c.exclusiveBytes;
    }
  }

  const keep: string[] = [];
  const remove: PruneDecision[] = [];
  for (const c of sorted) {
    const reason = reasons.get(c.id);
    if (reason === undefined) keep.push(c.id);
    else remove.push({ id: c.id, reason });
  }
  return { keep, remove };
}

function sortCheckpoints(checkpoints: readonly PolicyCheckpoint[]): PolicyCheckpoint[] {
  const seen = new Set<string>();
  for (const c of checkpoints) {
    if (seen.has(c.id)) {
      throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `duplicate checkpoint id ${c.id}`);
    }
    seen.add(c.id);
    if (Number.isNaN(c.createdAt.getTime())) {
      throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `checkpoint ${c.id} has an invalid creation date`);
    }
  }
  return [...checkpoints].sort(
    (a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}
