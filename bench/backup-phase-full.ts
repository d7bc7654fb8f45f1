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
import { BORG_TUNED, describe, deviceLimitSeconds, measureDevice, durableSeconds, medianRun, roundSeconds, stage, takeCheckpoint, type BenchContext, type OursRun } from './backup-bench-kit.js';
import { num, timesRow, workAloneRow, type Row } from './backup-rows.js';
import type { FileKind, StoredBytes } from './stored-by-kind.js';

/** Phase 1 of the backup benchmark, measured and in rows. */
export interface FullBackupPhase {
  c1: CheckpointRecord;
  /** Ours into an encrypted repository (format 3, the default). */
  ours: OursRun;
  /** Ours into an unencrypted repository (format 3, insecureNoEncryption), in the same rounds. */
  plain: OursRun;
  /** Every round's pairs: encrypted against unencrypted, and against the device's limit. */
  pairs: { plain: { ours: number; reference: number }[]; work: { ours: number; reference: number }[]; limit: { ours: number; reference: number }[]; plainLimit: { ours: number; reference: number }[] };
  /** cp -r of the same checkpoint + sync, cold: the floor the device sets. */
  copy: TimedProcess;
  /** Direct-I/O read + write of every byte at once (device-floor.ts): no tool can be faster. */
  floor: DeviceFloor;
  restic: PeerBackup | null;
  borg: PeerBackup | null;
  repoBytesAfter: { ours: number; plain: number; restic: number | null; borg: number | null };
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
  const { config, current, oursRepo, cacheFile, plainRepo, plainCacheFile, restic, borg, borgTuned, work } = ctx;
  const c1 = takeCheckpoint(ctx.workDb, ctx.checkpointDir, 'backup-bench full');
  stage(c1.path, current);
  progress(`checkpoint 1: ${c1.files} files, ${mb(c1.bytes)}; staged at ${current}`);

  ctx.loadAverages.fullBackup = os.loadavg()[0]!;
  progress('1/5 full backup of checkpoint 1 (page cache dropped before each tool)');
  const runs = { ours: [] as OursRun[], plain: [] as OursRun[], cp: [] as TimedProcess[], floor: [] as DeviceFloor[], restic: [] as PeerBackup[], borg: [] as PeerBackup[] };
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    fs.rmSync(oursRepo, { recursive: true, force: true });
    fs.rmSync(cacheFile, { force: true });
    ctx.cold();
    if (!ctx.cacheDropped) progress('  cannot drop the page cache (not root?): the checkpoint is cached for every tool alike');
    const ours = ctx.runOurs('backup', { repo: ctx.oursUrl, checkpoint: { ...c1, path: current }, cache: cacheFile, concurrency: config.concurrency });
    runs.ours.push(ours);
    progress(`  ours:   ${describe(ours.timed)}, uploaded ${mb(num(ours.result.bytesUploaded))} (encrypted; key ${(num(ours.result.openMs) / 1000).toFixed(2)} s)`);
    fs.rmSync(plainRepo, { recursive: true, force: true });
    fs.rmSync(plainCacheFile, { force: true });
    ctx.cold();
    const plain = ctx.runOurs('backup', { repo: ctx.plainUrl, insecure: true, checkpoint: { ...c1, path: current }, cache: plainCacheFile, concurrency: config.concurrency });
    runs.plain.push(plain);
    progress(`  ours unencrypted: ${describe(plain.timed)}, uploaded ${mb(num(plain.result.bytesUploaded))}`);
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
  const pairs = {
    plain: runs.ours.map((r, i) => ({ ours: r.timed.seconds, reference: runs.plain[i]!.timed.seconds })),
    work: runs.ours.map((r, i) => ({ ours: num(r.result.durationMs) / 1000, reference: num(runs.plain[i]!.result.durationMs) / 1000 })),
    limit: runs.ours.map((r, i) => ({ ours: durableSeconds(r.timed), reference: deviceLimitSeconds(runs.cp[i]!, runs.floor[i]!) })),
    plainLimit: runs.plain.map((r, i) => ({ ours: durableSeconds(r.timed), reference: deviceLimitSeconds(runs.cp[i]!, runs.floor[i]!) })),
  };
  const m = {
    c1,
    pairs,
    ours: medianRun(runs.ours, (r) => r.timed.seconds)!,
    plain: medianRun(runs.plain, (r) => r.timed.seconds)!,
    copy: medianRun(runs.cp, durableSeconds)!,
    floor: medianRun(runs.floor, (f) => f.seconds)!,
    restic: medianRun(runs.restic, (r) => r.timed.seconds),
    borg: medianRun(runs.borg, (r) => r.timed.seconds),
    repoBytesAfter: { ours: treeBytes(oursRepo), plain: treeBytes(plainRepo), restic: restic ? treeBytes(restic.repo) : null, borg: borg ? treeBytes(borg.repo) : null },
    borgTuned: null as PeerBackup | null,
  };
  if (borgTuned) {
    m.borgTuned = borgTuned.backup('full', work, path.basename(current), BORG_TUNED);
    progress(`  (borg ${BORG_TUNED.join(' ')} into a second repository, untimed, warm: ${m.borgTuned.timed.seconds.toFixed(2)} s)`);
  }
  return {
    ...m,
    rows: fullBackupRows(ctx, m),
    workRow: ctx.rows.inProcess('full backup', m.ours, m.restic?.timed),
    results: { ours: m.ours, plain: m.plain, pairs: m.pairs, restic: m.restic, borg: m.borg, copy: m.copy, deviceLimit: m.floor, repoBytesAfter: m.repoBytesAfter, rounds: roundSeconds(runs) },
  };
}

function fullBackupRows(ctx: BenchContext, m: Omit<FullBackupPhase, 'rows' | 'workRow' | 'results'>): Row[] {
  const { secs, bytes, ratio, cpu, absent, deviceRows, rssRow } = ctx.rows;
  const fullR = ratio(m.restic?.timed.seconds, m.ours.timed.seconds);
  return [
    {
      metric: `full backup wall (${mb(m.c1.bytes)}, ${m.c1.files} files, cold cache) (info)`,
      ours: secs(m.ours.timed),
      restic: secs(m.restic?.timed, 'restic'),
      borg: secs(m.borg?.timed, 'borg'),
      ratio: fullR,
      goal: '-',
      met: null,
    },
    timesRow('full backup wall, encrypted / unencrypted (format 3, --insecure-no-encryption), same rounds', m.pairs.plain, 'unencrypted', 1.15),
    timesRow('full backup in-process work (start, imports and key unlock apart), encrypted / unencrypted (info)', m.pairs.work, 'unencrypted', null),
    timesRow('full backup encrypted, wall + sync / the device limit (the faster of cp -r + sync and direct I/O, each round)', m.pairs.limit, 'the limit', 1.25),
    timesRow('full backup unencrypted, wall + sync / the device limit (info)', m.pairs.plainLimit, 'the limit', null),
    ...deviceRows({
      phase: 'full backup',
      copied: 'the checkpoint',
      ours: durableSeconds(m.ours.timed),
      copy: durableSeconds(m.copy),
      floor: m.floor.seconds,
      limit: deviceLimitSeconds(m.copy, m.floor),
      restic: secs(m.restic?.timed, 'restic'),
      resticSeconds: m.restic?.timed.seconds,
      resticLabel: 'restic',
    }),
    {
      metric: 'full backup CPU user+sys (info; ours encrypted, unencrypted)',
      ours: `${cpu(m.ours.timed)}, ${cpu(m.plain.timed)}`,
      restic: m.restic ? cpu(m.restic.timed) : absent('restic'),
      borg: m.borg ? cpu(m.borg.timed) : absent('borg'),
      ratio: ratio(m.restic?.timed.cpuSeconds, m.ours.timed.cpuSeconds),
      goal: '-',
      met: null,
    },
    {
      metric: 'full backup repository size on disk (info; ours encrypted, unencrypted)',
      ours: `${mb(m.repoBytesAfter.ours)}, ${mb(m.repoBytesAfter.plain)}`,
      restic: bytes(m.repoBytesAfter.restic, 'restic'),
      borg: bytes(m.repoBytesAfter.borg, 'borg'),
      ratio: null,
      goal: '-',
      met: null,
    },
    storedRow(m.ours),
    rssRow('full backup peak RSS', m.ours.timed, m.restic?.timed, m.borg?.timed),
    workAloneRow('full backup', m.ours, m.plain),
  ];
}

/** What the checkpoint's files became in the encrypted repository, by kind (stored-by-kind.ts): compressed where it paid, sealed. */
function storedRow(ours: OursRun): Row {
  const stored = ours.result.stored as Record<FileKind, StoredBytes> | null | undefined;
  const cell = (k: FileKind) => {
    const s = stored?.[k];
    if (!s || s.files === 0) return `${k} none`;
    return `${k} ${((s.stored / s.raw) * 100).toFixed(1)}% (${bytesText(s.raw)} -> ${bytesText(s.stored)})`;
  };
  return {
    metric: 'full backup: stored / raw size of the files by kind, encrypted repository (info: tables never compressed; sealing adds 57 B per 1 MiB chunk)',
    ours: stored ? (['manifest', 'log', 'table'] as const).map(cell).join('; ') : 'n/a',
    restic: '-',
    borg: '-',
    ratio: null,
    goal: '-',
    met: null,
  };
}

function bytesText(n: number): string {
  return n >= 1 << 20 ? mb(n) : `${(n / 1024).toFixed(1)} KiB`;
}
