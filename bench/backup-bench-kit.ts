import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CheckpointRecord } from '../shared/api.js';
import { createCheckpointSync } from '../agent/checkpoint/checkpoint-dir.js';
import { newCheckpointId } from '../agent/checkpoint/checkpoint-id.js';
import type { BenchDbInfo } from './bench-db.js';
import { mb } from './bench-db.js';
import type { CompareResult } from './backup-compare.js';
import { measureDeviceFloor, type DeviceFloor } from './device-floor.js';
import { progress } from './progress.js';
import { Borg, Restic, type PeerBackup, type PeerName } from './backup-peers.js';
import { dropPageCache, runQuiet, runTimed, type TimedProcess } from './backup-timed.js';
import { mib, rowKit, type RowKit } from './backup-rows.js';
import { ROOT, type Config, type OursRun } from './backup-bench-config.js';
import { benchPasswordFile } from './bench-password.js';

export { readConfig, type Config, type OursRun } from './backup-bench-config.js';

/**
 * What the backup benchmark's phases (backup-phase-*.ts) share: the settings, the work directory and
 * its repositories, the peers, and running our own backup or restore as a process of its own.
 */

export const RUN = path.join(ROOT, 'dist', 'bench', 'backup-run.js');
/** borg's files cache without ctime (the ctime-blind runs). */
export const BORG_TUNED = ['--files-cache=mtime,size,inode'];

/** The benchmark's state that every phase works in. */
export interface BenchContext {
  readonly config: Config;
  readonly gnuTime: boolean;
  readonly versions: Partial<Record<PeerName, string>>;
  /** Row helpers that know which peers are missing. */
  readonly rows: RowKit;
  readonly db0: BenchDbInfo;
  readonly work: string;
  /** The benchmark's clone of the database, which the incremental phase writes into. */
  readonly workDb: string;
  readonly checkpointDir: string;
  /** The path every tool backs up: the checkpoint of the phase, hard-linked there (`stage`). */
  readonly current: string;
  /** Our repository (format 3, encrypted with `passwordFile`) and its hash cache. */
  readonly oursRepo: string;
  readonly oursUrl: string;
  readonly cacheFile: string;
  /** Our unencrypted repository (format 3, made with insecureNoEncryption) and its hash cache: the same backups, in the same rounds. */
  readonly plainRepo: string;
  readonly plainUrl: string;
  readonly plainCacheFile: string;
  /** The password of our encrypted repositories (bench-password.ts). */
  readonly passwordFile: string;
  /** The device-floor measurement's scratch file. */
  readonly floorFile: string;
  readonly restic: Restic | null;
  readonly borg: Borg | null;
  /** borg's second repository, for its ctime-blind runs (null when BENCH_TUNED=0 or no borg). */
  readonly borgTuned: Borg | null;
  /** 1-min load average as each phase starts (a busy neighbour shows up in every number). */
  readonly loadAverages: Record<string, number>;
  /** Drops the page cache before a measured run. */
  cold(): void;
  /** Whether every drop so far worked. */
  readonly cacheDropped: boolean;
  /** One backup or restore of ours (backup-run.ts): encrypted with `passwordFile`, unless `args.insecure`. */
  runOurs(mode: 'backup' | 'restore', args: { repo: string; insecure?: boolean; [arg: string]: unknown }, env?: NodeJS.ProcessEnv): OursRun;
}

export function benchContext(o: {
  config: Config;
  gnuTime: boolean;
  versions: Partial<Record<PeerName, string>>;
  db0: BenchDbInfo;
  work: string;
  loadAverages: Record<string, number>;
}): BenchContext {
  const { config, gnuTime, versions, work } = o;
  const has = (name: PeerName) => versions[name] !== undefined;
  const oursRepo = path.join(work, 'repo-ours');
  const plainRepo = path.join(work, 'repo-ours-plain');
  const passwordFile = benchPasswordFile(config.benchDir);
  const borg = has('borg') ? new Borg(path.join(work, 'repo-borg'), path.join(work, 'borg-home'), gnuTime) : null;
  let cacheDropped = true;
  return {
    ...o,
    rows: rowKit(config, versions),
    workDb: path.join(work, 'db'),
    checkpointDir: path.join(work, 'checkpoints'),
    current: path.join(work, 'ckpt-current'),
    oursRepo,
    oursUrl: pathToFileURL(oursRepo).href,
    cacheFile: path.join(work, 'ours-hash-cache.json'),
    plainRepo,
    plainUrl: pathToFileURL(plainRepo).href,
    plainCacheFile: path.join(work, 'ours-plain-hash-cache.json'),
    passwordFile,
    floorFile: path.join(work, 'device-floor.bin'),
    restic: has('restic') ? new Restic(path.join(work, 'repo-restic'), path.join(work, 'restic-cache'), gnuTime) : null,
    borg,
    // borg's files cache keeps one timestamp, the one its mode names: a ctime-blind incremental needs a
    // repository whose full backup was ctime-blind too (untimed, after the measured full backups).
    borgTuned: borg && config.tuned ? new Borg(path.join(work, 'repo-borg-tuned'), path.join(work, 'borg-home-tuned'), gnuTime) : null,
    cold: () => {
      cacheDropped = dropPageCache() && cacheDropped;
    },
    get cacheDropped() {
      return cacheDropped;
    },
    runOurs: (mode, args, env) => {
      const keyed = args.insecure ? args : { ...args, passwordFile };
      const timed = runTimed(process.execPath, [RUN, mode, JSON.stringify(keyed)], { gnuTime, ...(env ? { env } : {}) });
      const last = timed.stdout.trim().split('\n').at(-1) ?? '';
      return { timed, result: JSON.parse(last) as Record<string, unknown> };
    },
  };
}

export function takeCheckpoint(dbPath: string, checkpointDir: string, label: string): CheckpointRecord {
  return createCheckpointSync({ dbPath, checkpointDir, id: newCheckpointId(), label, pinned: false, trigger: 'manual' });
}

/** `cp -al <checkpoint db> <fixed path>`: the same inodes, at the path every tool backs up. */
export function stage(from: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  runQuiet('cp', ['-al', from, to]);
}

/**
 * `cp -r <dir> <to>` then `sync`, timed like every tool, then removed: every byte read once and written
 * once, durably, with nothing else done. No backup or restore of the same bytes on the same device can
 * beat it by much; it tells how far a tool is from the device's own limit.
 */
export function copyFloor(dir: string, to: string, gnuTime: boolean): TimedProcess {
  fs.rmSync(to, { recursive: true, force: true });
  const timed = runTimed('cp', ['-r', dir, to], { gnuTime });
  fs.rmSync(to, { recursive: true, force: true });
  return timed;
}

/**
 * The device's limit in one round: the faster of its two measures, `cp -r` + `sync` (through the page
 * cache, the kernel copying) and device-floor.ts (direct I/O, 16 requests in flight). Either reads and
 * writes every byte once, durably, and nothing else, so no tool can beat the faster one by much. Which of
 * them is faster depends on the machine: on this project's VM the direct-I/O floor was the faster for
 * weeks, then `cp -r` + `sync` by up to two fifths (2026-12-07).
 */
export function deviceLimitSeconds(copy: TimedProcess, floor: DeviceFloor): number {
  return Math.min(durableSeconds(copy), floor.seconds);
}

/** The disk's two measures of `dir` in this round, each cold: `cp -r` + sync, and the direct-I/O floor. */
export async function measureDevice(ctx: BenchContext, dir: string, work: string): Promise<{ copy: TimedProcess; floor: DeviceFloor }> {
  ctx.cold();
  const copy = copyFloor(dir, path.join(work, 'copy-floor'), ctx.gnuTime);
  progress(`  cp -r:  ${describe(copy)} (the device: read and write every byte once, durably)`);
  ctx.cold();
  const floor = await measureDeviceFloor(dir, ctx.floorFile);
  progress(`  limit:  ${floor.seconds.toFixed(2)} s (the device: direct-I/O read of every byte and write of as many, at once, fsynced)`);
  return { copy, floor };
}

/** The run whose `key` is the median (the lower middle one of an even count); null for none. */
export function medianRun<T>(runs: readonly T[], key: (run: T) => number): T | null {
  if (runs.length === 0) return null;
  return [...runs].sort((a, b) => key(a) - key(b))[Math.floor((runs.length - 1) / 2)]!;
}

/** Wall seconds of every round of every tool, for results.json. */
export function roundSeconds(runs: Record<string, readonly (OursRun | PeerBackup | TimedProcess | DeviceFloor)[]>): Record<string, number[]> {
  const seconds = (r: OursRun | PeerBackup | TimedProcess | DeviceFloor) => ('timed' in r ? r.timed.seconds : r.seconds);
  return Object.fromEntries(Object.entries(runs).map(([tool, list]) => [tool, list.map(seconds)]));
}

/** A run's wall time plus the sync after it: the time until its writes were on disk. */
export function durableSeconds(t: TimedProcess): number {
  return t.seconds + t.syncSeconds;
}

/** A timed run in a progress line. */
export function describe(t: TimedProcess): string {
  const rss = t.peakRssBytes === null ? '' : `, peak RSS ${mib(t.peakRssBytes)}`;
  const cpu = t.cpuSeconds === null ? '' : `, CPU ${t.cpuSeconds.toFixed(1)} s`;
  return `${t.seconds.toFixed(2)} s (+${t.syncSeconds.toFixed(2)} s sync)${rss}${cpu}`;
}

/** A restore's check in a progress line. */
export function verdict(c: CompareResult): string {
  return c.ok ? `identical (${c.files} files, ${mb(c.bytes)})` : `DIFFERENT: ${c.problems.join('; ')}`;
}
