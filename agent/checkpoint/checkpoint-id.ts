import { randomBytes } from 'node:crypto';

let lastMs = 0;

/**
 * A new checkpoint id: `YYYYMMDDTHHMMSSmmmZ-xxxx`. Lexical order is creation order within a process
 * (the millisecond part never repeats or goes back here), and the random suffix keeps ids from two
 * processes apart. Only [0-9TZa-f-]: safe as a path segment.
 */
export function newCheckpointId(now: number = Date.now()): string {
  const ms = Math.max(now, lastMs + 1);
  lastMs = ms;
  const stamp = new Date(ms).toISOString().replace(/[-:.]/g, ''); // 20261122T210045123Z
  return `${stamp}-${randomBytes(2).toString('hex')}`;
}
