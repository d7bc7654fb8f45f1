/**
 * The input rules, once: what a label, a checkpoint id, a backup id and a retention count may be. The CLI
 * (flags), the socket (paths and bodies) and the agent (its library API, which hosts call with values no
 * type checked) all parse with these functions, so a value one accepts the others accept too.
 *
 * Each parser takes `what`, the name the user gave the value (`--label`, `label`, `checkpointId`), so the
 * message names what the user typed; the rule itself does not change with it.
 */

import { AdminError, ErrorCodes } from './errors.js';

/** Checkpoint ids: UTC timestamp to the millisecond, a dash, 4 hex digits. Safe as a path segment. */
export const CHECKPOINT_ID_PATTERN = /^\d{8}T\d{9}Z-[0-9a-f]{4}$/;
/** Backup ids: like checkpoint ids, lowercase (every object store accepts them). */
export const BACKUP_ID_PATTERN = /^\d{8}t\d{9}z-[0-9a-f]{4}$/;

const ID_EXAMPLES = { checkpoint: '20261122T210045123Z-a1b2', backup: '20261122t213525139z-8dd2' } as const;

export function isCheckpointId(value: unknown): value is string {
  return typeof value === 'string' && CHECKPOINT_ID_PATTERN.test(value);
}

export function isBackupId(value: unknown): value is string {
  return typeof value === 'string' && BACKUP_ID_PATTERN.test(value);
}

/** The one "not an id" error: which kind was expected, what came, and what an id looks like. */
export function notAnIdError(kind: 'checkpoint' | 'backup', value: unknown, what = `${kind} id`): AdminError {
  const shown = typeof value === 'string' ? JSON.stringify(value) : value === undefined ? 'nothing' : JSON.stringify(value) ?? typeof value;
  return new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a ${kind} id: ${what} is ${shown} (expected an id like ${ID_EXAMPLES[kind]})`);
}

export function parseCheckpointId(value: unknown, what?: string): string {
  if (!isCheckpointId(value)) throw notAnIdError('checkpoint', value, what);
  return value;
}

export function parseBackupId(value: unknown, what?: string): string {
  if (!isBackupId(value)) throw notAnIdError('backup', value, what);
  return value;
}

/** Timeline ids of the log archive look like backup ids (the time it began, 4 hex digits). */
export function parseTimelineId(value: unknown, what = 'timeline id'): string {
  if (!isBackupId(value)) {
    const shown = typeof value === 'string' ? JSON.stringify(value) : describeValue(value);
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a timeline id: ${what} is ${shown} (expected an id like ${ID_EXAMPLES.backup}, as \`backup timeline\` lists them)`);
  }
  return value;
}

/** Labels are shown in tables and logs: one line, printable, bounded (in characters a person counts). */
export const LABEL_MAX_LENGTH = 200;

/**
 * A checkpoint label: at most LABEL_MAX_LENGTH code points (an emoji is one, not two UTF-16 units), no
 * control characters (C0, DEL, C1: they would rewrite a terminal). Absent, null or empty: no label.
 */
export function parseLabel(value: unknown, what = 'label'): string | null {
  if (value === undefined || value === null || value === '') return null;
  if (typeof value !== 'string') throw invalid(`${what} must be a string`);
  const length = [...value].length;
  if (length > LABEL_MAX_LENGTH) throw invalid(`${what} is ${length} characters long; at most ${LABEL_MAX_LENGTH} are allowed`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(value)) throw invalid(`${what} must not contain control characters`);
  return value;
}

/** A `true`/`false` field of a request body; absent stays absent. */
export function parseOptionalBoolean(value: unknown, what: string): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  throw invalid(`${what} must be true or false`);
}

/**
 * The retention windows, once: their key in a policy, their flag, and what they keep. Checkpoint
 * retention, backup retention, the example node's flags and `backup prune --keep-*` all list these.
 */
export const KEEP_RULES = [
  { key: 'keepLast', flag: 'keep-last', keeps: 'the newest N' },
  { key: 'keepHourly', flag: 'keep-hourly', keeps: 'the newest of each of the last N hours that have one' },
  { key: 'keepDaily', flag: 'keep-daily', keeps: 'likewise for days (UTC)' },
  { key: 'keepWeekly', flag: 'keep-weekly', keeps: 'likewise for ISO weeks' },
  { key: 'keepMonthly', flag: 'keep-monthly', keeps: 'likewise for calendar months (UTC)' },
] as const;

export type KeepKey = (typeof KEEP_RULES)[number]['key'];
export const KEEP_KEYS: readonly KeepKey[] = KEEP_RULES.map((r) => r.key);

/** A count in a policy (keep-N, a byte floor): a whole number, 0 or more. */
export function parseCount(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(`${what} must be a whole number (0 or more), got ${describeValue(value)}`);
  }
  return value;
}

/** Picks the keep-N counts out of `input` (absent keys stay absent), each checked by parseCount. */
export function parseKeepCounts(input: unknown, prefix: string): Partial<Record<KeepKey, number>> {
  if (input === undefined || input === null) return {};
  if (typeof input !== 'object' || Array.isArray(input)) throw invalid(`${prefix} must be an object`);
  const counts: Partial<Record<KeepKey, number>> = {};
  for (const key of KEEP_KEYS) {
    const value: unknown = (input as Record<string, unknown>)[key];
    if (value !== undefined) counts[key] = parseCount(value, `${prefix}.${key}`);
  }
  return counts;
}

/**
 * A moment of the log archive: the newest one restorable (`latest`), a time (ms since the epoch), or the
 * state right after the write batch that holds a sequence number (a batch is applied whole: LevelDB
 * writes it atomically).
 */
export type Moment = { kind: 'latest' } | { kind: 'time'; ms: number } | { kind: 'sequence'; sequence: number };

/**
 * A moment as an operator or a host gives it: `latest`, an ISO-8601 date and time with its zone (`Z` or
 * `+02:00`: a moment without one would silently mean the machine's zone, which is rarely what an operator
 * restoring another node meant), `seq:<n>`, or (from code) ms since the epoch or a Moment. `latest` only
 * where `allowLatest`. `what` names the value in the message (`--at`, `from`).
 */
export function parseMoment(value: unknown, what = '--at', allowLatest = true): Moment {
  const shown = typeof value === 'string' ? JSON.stringify(value) : describeValue(value);
  const bad = (why = `give an ISO-8601 time with its zone (2026-11-23T14:03:00Z, 2026-11-23T15:03:00+01:00), seq:<sequence number> (seq:1234)${allowLatest ? ' or "latest"' : ''}`) =>
    invalid(`${what} ${shown} is not a moment: ${why}`);
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw bad();
    return { kind: 'time', ms: value };
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    if (o.kind === 'latest' && allowLatest) return { kind: 'latest' };
    if (o.kind === 'time' && Number.isSafeInteger(o.ms) && (o.ms as number) >= 0) return { kind: 'time', ms: o.ms as number };
    if (o.kind === 'sequence' && Number.isSafeInteger(o.sequence) && (o.sequence as number) >= 0) return { kind: 'sequence', sequence: o.sequence as number };
    throw bad();
  }
  if (typeof value !== 'string') throw bad();
  if (value === 'latest') {
    if (!allowLatest) throw bad();
    return { kind: 'latest' };
  }
  const seq = /^seq:(\d{1,16})$/i.exec(value);
  if (seq) {
    const sequence = Number(seq[1]);
    if (!Number.isSafeInteger(sequence)) throw bad('a sequence number must be below 2^53');
    return { kind: 'sequence', sequence };
  }
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i.test(value)) throw bad();
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw bad();
  return { kind: 'time', ms };
}

/** A moment as messages show it: `latest`, its ISO time, or `seq:<n>`. */
export function describeMoment(m: Moment): string {
  return m.kind === 'latest' ? 'latest' : m.kind === 'time' ? new Date(m.ms).toISOString() : `seq:${m.sequence}`;
}

/** A value as a message shows it. */
export function describeValue(value: unknown): string {
  if (typeof value === 'number') return String(value); // JSON.stringify would print NaN as null
  const json = JSON.stringify(value);
  return json === undefined ? typeof value : json;
}

function invalid(message: string): AdminError {
  return new AdminError(ErrorCodes.INVALID_ARGUMENT, message);
}
