import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CheckpointRecord } from '../shared/api.js';
import { mb } from './bench-db.js';
import { treeBytes } from './backup-compare.js';
import type { PeerBackup } from './backup-peers.js';
import type { TimedProcess } from './backup-timed.js';
import type { DeviceFloor } from './device-floor.js';
import { progress } from './progress.js';
import { BORG_TUNED, describe, measureDevice, durableSeconds, medianRun, roundSeconds, stage, takeCheckpoint, type BenchContext, type OursRun } from './backup-bench-kit.js';
import { num, type Row } from './backup-rows.js';

/** Phase 1 of the backup benchmark, measured and in rows. */
export interface FullBackupPhase {
  c1: CheckpointRecord;
  ours: OursRun;
  /** cp -r of the same checkpoint + sync, cold: the floor the device sets. */
  copy: TimedProcess;
  /** Direct-I/O read + write of every byte at once (device-floor.ts): no tool can be faster. */
  floor: DeviceFloor;
  restic: PeerBackup | null;
  borg: PeerBackup | null;
  repoBytesAfter: { ours: number; restic: number | null; borg: number | null };
  /** borg's ctime-blind full backup into its second repository (untimed; the incremental's starting point). */
  borgTuned: PeerBackup | null;
  /** The table's rows of this phase, and its in-process row (printed with the others at the end). */
  rows: Row[];
  workRow: Row;
  /** backup-results.json's `fullBackup`. */
  results: Record<string, unknown>;
}

/**
 * 1. Full backup of checkpoint 1 into fresh repositories: each tool in turn, `repeat` times, every run
 * into fresh repositories, the page cache dropped before each; the medians count. The last round's
 * repositories go on to the incremental. Beside them the device: `cp -r` + `sync`, and its limit.
 */
export async function fullBackupPhase(ctx: BenchContext): Promise<FullBackupPhase> {
  const { config, current, oursRepo, cacheFile, restic, borg, borgTuned, work } = ctx;
  const c1 = takeCheckpoint(ctx.workDb, ctx.checkpointDir, 'backup-bench full');
  stage(c1.path, current);
  progress(`checkpoint 1: ${c1.files} files, ${mb(c1.bytes)}; staged at ${current}`);

  ctx.loadAverages.fullBackup = os.loadavg()[0]!;
  progress('1/5 full backup of checkpoint 1 (page cache dropped before each tool)');
  const runs = { ours: [] as OursRun[], cp: [] as TimedProcess[], floor: [] as DeviceFloor[], restic: [] as PeerBackup[], borg: [] as PeerBackup[] };
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    fs.rmSync(oursRepo, { recursive: true, force: true });
    fs.rmSync(cacheFile, { force: true });
    ctx.cold();
    if (!ctx.cacheDropped) progress('  cannot drop the page cache (not root?): the checkpoint is cached for every tool alike');
    const ours = ctx.runOurs('backup', { repo: ctx.oursUrl, checkpoint: { ...c1, path: current }, cache: cacheFile, concurrency: config.concurrency });
    runs.ours.push(ours);
    progress(`  ours:   ${describe(ours.timed)}, uploaded ${mb(num(ours.result.bytesUploaded))}`);
    const device = await measureDevice(ctx, current, work);
    runs.cp.push(device.copy);
    runs.floor.push(device.floor);
    if (restic) {
      if (round > 1) restic.reset();
      ctx.cold();
      const r = restic.backup(current);
      runs.restic.push(r);
      progress(`  restic: ${describe(r.timed)}, added ${mb(r.bytesAdded ?? 0)}`);
    }
    if (borg) {
      if (round > 1) borg.reset();
      ctx.cold();
      const b = borg.backup('full', work, path.basename(current));
      runs.borg.push(b);
      progress(`  borg:   ${describe(b.timed)}, added ${mb(b.bytesAdded ?? 0)}`);
    }
  }
  const m = {
    c1,
    ours: medianRun(runs.ours, (r) => r.timed.seconds)!,
    copy: medianRun(runs.cp, durableSeconds)!,
    floor: medianRun(runs.floor, (f) => f.seconds)!,
    restic: medianRun(runs.restic, (r) => r.timed.seconds),
    borg: medianRun(runs.borg, (r) => r.timed.seconds),
    repoBytesAfter: { ours: treeBytes(oursRepo), restic: restic ? treeBytes(restic.repo) : null, borg: borg ? treeBytes(borg.repo) : null },
    borgTuned: null as PeerBackup | null,
  };
  if (borgTuned) {
    m.borgTuned = borgTuned.backup('full', work, path.basename(current), BORG_TUNED);
    progress(`  (borg ${BORG_TUNED.join(' ')} into a second repository, untimed, warm: ${m.borgTuned.timed.seconds.toFixed(2)} s)`);
  }
  return {
    ...m,
    rows: fullBackupRows(ctx, m),
    workRow: ctx.rows.inProcess('full backup', m.ours, m.restic?.timed, '(>= 4x)'),
    results: { ours: m.ours, restic: m.restic, borg: m.borg, copy: m.copy, deviceLimit: m.floor, repoBytesAfter: m.repoBytesAfter, rounds: roundSeconds(runs) },
  };
}

function fullBackupRows(ctx: BenchContext, m: Omit<FullBackupPhase, 'rows' | 'workRow' | 'results'>): Row[] {
  const { secs, bytes, ratio, atLeast, cpu, absent, deviceRows, rssRow } = ctx.rows;
  const fullR = ratio(m.restic?.timed.seconds, m.ours.timed.seconds);
  return [
    {
      metric: `full backup wall (${mb(m.c1.bytes)}, ${m.c1.files} files, cold cache)`,
      ours: secs(m.ours.timed),
      restic: secs(m.restic?.timed, 'restic'),
      borg: secs(m.borg?.timed, 'borg'),
      ratio: fullR,
      goal: '>= 4x',
      met: atLeast(fullR, 4),
    },
    ...deviceRows({
      phase: 'full backup',
      copied: 'the checkpoint',
      ours: durableSeconds(m.ours.timed),
      copy: durableSeconds(m.copy),
      limit: m.floor.seconds,
      restic: secs(m.restic?.timed, 'restic'),
      resticSeconds: m.restic?.timed.seconds,
      resticLabel: 'restic',
      goal: '(>= 4x)',
    }),
    {
      metric: 'full backup CPU user+sys (info)',
      ours: cpu(m.ours.timed),
      restic: m.restic ? cpu(m.restic.timed) : absent('restic'),
      borg: m.borg ? cpu(m.borg.timed) : absent('borg'),
      ratio: ratio(m.restic?.timed.cpuSeconds, m.ours.timed.cpuSeconds),
      goal: '-',
      met: null,
    },
    {
      metric: 'full backup repository size on disk (info)',
      ours: mb(m.repoBytesAfter.ours),
      restic: bytes(m.repoBytesAfter.restic, 'restic'),
      borg: bytes(m.repoBytesAfter.borg, 'borg'),
      ratio: null,
      goal: '-',
      met: null,
    },
    rssRow('full backup peak RSS', m.ours.timed, m.restic?.timed, m.borg?.timed),
  ];
}
