/**
 * Everything the CLI prints on stdout: human tables and values, or exactly one JSON document.
 * Errors never go through here (see run-command.ts).
 */

// One formatBytes for the agent's messages and the CLI's tables (shared/units.ts).
export { formatBytes } from '../shared/units.js';

/** Where the CLI writes. process.stdout/process.stderr fit; tests pass collectors. */
export interface Writer {
  write(chunk: string): unknown;
}

export interface Io {
  stdout: Writer;
  stderr: Writer;
}

/** The one JSON document a `--json` command prints on stdout. */
export function printJson(out: Writer, value: unknown): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Human output: each line ends with a newline. */
export function printLines(out: Writer, lines: readonly string[]): void {
  if (lines.length > 0) out.write(`${lines.join('\n')}\n`);
}

/** 850 -> `850 ms`, 12300 -> `12.3 s`, 192000 -> `3m 12s`, 7500000 -> `2h 5m`, 273600000 -> `3d 4h`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) {
    const s = (ms / 1000).toFixed(1);
    return `${s.endsWith('.0') ? s.slice(0, -2) : s} s`;
  }
  const totalSeconds = Math.floor(ms / 1000);
  const days = Math.floor(totalSeconds / 86_400);
  const hours = Math.floor((totalSeconds % 86_400) / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (days > 0) return hours > 0 ? `${days}d ${hours}h` : `${days}d`;
  if (hours > 0) return minutes > 0 ? `${hours}h ${minutes}m` : `${hours}h`;
  return seconds > 0 ? `${minutes}m ${seconds}s` : `${minutes}m`;
}

/** An ISO timestamp as `2026-11-22 21:00:45Z` (UTC, to the second); anything unparsable as is. */
export function formatTime(iso: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return clean(iso);
  return `${new Date(t).toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/** `2026-11-22 21:00:45Z (3m ago)` / `(in 12m)`. */
export function formatTimeRelative(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return clean(iso);
  const delta = t - now;
  const rel = Math.abs(delta) < 1000 ? 'now' : delta > 0 ? `in ${formatDuration(delta)}` : `${formatDuration(-delta)} ago`;
  return `${formatTime(iso)} (${rel})`;
}

/** Control characters in strings from elsewhere (labels, paths) must not reach a terminal raw. */
export function clean(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  align?: 'left' | 'right';
}

/** A plain text table: a header row, then one row per item; columns two spaces apart; no trailing blanks. */
export function formatTable<T>(columns: readonly Column<T>[], rows: readonly T[]): string[] {
  const cells = rows.map((row) => columns.map((c) => clean(c.value(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => (r[i] ?? '').length)));
  const render = (values: readonly string[]): string =>
    values
      .map((v, i) => {
        const width = widths[i] ?? 0;
        const last = i === values.length - 1;
        if (columns[i]?.align === 'right') return v.padStart(width);
        return last ? v : v.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  return [render(columns.map((c) => c.header)), ...cells.map(render)];
}

/** `key: value` lines with the values aligned. */
export function formatKeyValues(pairs: readonly (readonly [string, string])[]): string[] {
  const width = Math.max(0, ...pairs.map(([k]) => k.length + 1));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}`.trimEnd());
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
