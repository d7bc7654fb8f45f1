import { invalidArgument } from '../run-command.js';

/**
 * `--at`: `latest`, or an ISO-8601 date and time with its zone (`Z` or `+02:00`): a moment without a
 * zone would silently mean the machine's, which is rarely what an operator restoring another node meant.
 */
export function parseMoment(value: unknown): number | 'latest' {
  if (value === 'latest') return 'latest';
  const shown = typeof value === 'string' ? JSON.stringify(value) : 'nothing';
  const bad = () => invalidArgument(`--at ${shown} is not a moment: give an ISO-8601 time with its zone (2026-11-23T14:03:00Z, 2026-11-23T15:03:00+01:00) or "latest"`);
  if (typeof value !== 'string') throw bad();
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i.test(value)) throw bad();
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw bad();
  return ms;
}
