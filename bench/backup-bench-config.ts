import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { envNumber } from './env-number.js';
import type { PeerName } from './backup-peers.js';
import type { TimedProcess } from './backup-timed.js';

/** The backup benchmark's settings (environment variables) and the shape of one run of ours. */

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Config {
  dbGb: number;
  benchDir: string;
  rebuild: boolean;
  changePercent: number;
  concurrency: number;
  restoreConcurrency: number;
  peers: PeerName[];
  tuned: boolean;
  keep: boolean;
  /** Whether to measure a backup through the agent (the example node) too. */
  agent: boolean;
  /** Whether to run the S3 phase (backup-phase-s3.ts: Swift's s3api on loopback). */
  s3: boolean;
  /** Step 6, `backup copy` to and from Swift (BENCH_COPY=0 skips it). */
  copy: boolean;
  /** How many times each timed run is made; the medians count. */
  repeat: number;
}

export function readConfig(): Config {
  const num = envNumber;
  const peers = (process.env.BENCH_PEERS ?? 'restic,borg')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const p of peers) if (p !== 'restic' && p !== 'borg') throw new Error(`BENCH_PEERS: unknown peer ${p} (restic, borg)`);
  return {
    dbGb: num('BENCH_DB_GB', 1, false),
    benchDir: path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench')),
    rebuild: process.env.BENCH_REBUILD === '1',
    changePercent: num('BENCH_CHANGE_PCT', 5, false),
    concurrency: num('BENCH_BACKUP_CONCURRENCY', 4, true),
    restoreConcurrency: num('BENCH_RESTORE_CONCURRENCY', 12, true),
    peers: peers as PeerName[],
    tuned: process.env.BENCH_TUNED !== '0',
    keep: process.env.BENCH_KEEP === '1',
    agent: process.env.BENCH_AGENT !== '0',
    s3: process.env.BENCH_S3 !== '0',
    copy: process.env.BENCH_COPY !== '0',
    repeat: num('BENCH_REPEAT', 3, true),
  };
}

/** One backup or restore of ours (backup-run.ts): how it ran, and what it printed. */
export interface OursRun {
  timed: TimedProcess;
  result: Record<string, unknown>;
}
