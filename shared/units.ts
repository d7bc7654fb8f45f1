import { AdminError, ErrorCodes } from './errors.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "90s", "15m", "24h", "7d", "1h30m", or a plain number of milliseconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const s = text.trim();
  if (/^\d+$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (matched === 0 || matched !== s.length) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${what} ${JSON.stringify(text)} is not a duration (like 30s, 15m, 24h, 7d)`);
  }
  return Math.round(total);
}

const BYTE_UNITS: Record<string, number> = {
  b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** "10GiB", "500MB", "1048576". */
export function parseBytes(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = BYTE_UNITS[(m?.[2] ?? '').toLowerCase() || 'b'];
  if (!m || unit === undefined) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${what} ${JSON.stringify(text)} is not a size (like 512MiB, 10GiB, 1000000)`);
  }
  return Math.floor(Number(m[1]) * unit);
}

const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/** 1536 -> `1.5 KiB`, 1610612736 -> `1.5 GiB`, 512 -> `512 B`; one decimal below 100, none above. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  const sign = bytes < 0 ? '-' : '';
  let n = Math.abs(bytes);
  if (n < 1024) return `${sign}${Math.round(n)} B`;
  let unit = 0;
  while (n >= 1024 && unit < BINARY_UNITS.length - 1) {
    n /= 1024;
    unit++;
  }
  let text = n >= 100 ? n.toFixed(0) : n.toFixed(1);
  // Rounding can reach the next unit (1023.96 KiB -> "1024 KiB"): move up.
  if (Number(text) >= 1024 && unit < BINARY_UNITS.length - 1) {
    n /= 1024;
    unit++;
    text = n.toFixed(1);
  }
  if (text.endsWith('.0')) text = text.slice(0, -2);
  return `${sign}${text} ${BINARY_UNITS[unit]}`;
}
