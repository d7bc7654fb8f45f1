import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compareDirs, findDirWith, type CompareResult } from './backup-compare.js';
import type { TimedProcess } from './backup-timed.js';
import type { DeviceFloor } from './device-floor.js';
import { progress } from './progress.js';
import { describe, deviceLimitSeconds, durableSeconds, measureDevice, medianRun, roundSeconds, verdict, type BenchContext, type OursRun } from './backup-bench-kit.js';
import { num, timesRow, workAloneRow, type Row } from './backup-rows.js';

/** Phase 3 of the backup benchmark, measured and in rows. */
export interface RestorePhase {
  ours: OursRun;
  /** From the unencrypted repository, in the same rounds. */
  plain: OursRun;
  pairs: { plain: { ours: number; reference: number }[]; limit: { ours: number; reference: number }[]; plainLimit: { ours: number; reference: number }[] };
  copy: TimedProcess;
  floor: DeviceFloor;
  restic: TimedProcess | null;
  borg: TimedProcess | null;
  checkOurs: CompareResult;
  checkRestic: CompareResult | null;
  checkBorg: CompareResult | null;
  rows: Row[];
  workRow: Row;
  /** backup-results.json's `restore`. */
  results: Record<string, unknown>;
}

/**
 * 3. Restore of the latest backup (checkpoint 2) into a fresh directory, checked byte for byte against
 * the checkpoint: ours and the device `repeat` times (every restore of ours checked); the peers once,
 * after.
 */
export async function restorePhase(ctx: BenchContext, latestId: unknown, plainLatestId: unknown): Promise<RestorePhase> {
  const { config, current, work, restic, borg } = ctx;
  ctx.loadAverages.restore = os.loadavg()[0]!;
  progress('3/5 restore of the latest backup into a fresh directory, then a byte-for-byte check against checkpoint 2');
  const dirs = { ours: path.join(work, 'restore-ours'), plain: path.join(work, 'restore-ours-plain'), restic: path.join(work, 'restore-restic'), borg: path.join(work, 'restore-borg') };
  const runs = { ours: [] as OursRun[], plain: [] as OursRun[], cp: [] as TimedProcess[], floor: [] as DeviceFloor[] };
  let checkOurs: CompareResult = { ok: true, files: 0, bytes: 0, problems: [] };
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    fs.rmSync(dirs.ours, { recursive: true, force: true });
    ctx.cold();
    const ours = ctx.runOurs('restore', { repo: ctx.oursUrl, id: latestId, to: dirs.ours, concurrency: config.restoreConcurrency });
    runs.ours.push(ours);
    const check = compareDirs(current, dirs.ours);
    if (checkOurs.ok) checkOurs = check;
    progress(`  ours:   ${describe(ours.timed)}; ${verdict(check)} (encrypted; key ${(num(ours.result.openMs) / 1000).toFixed(2)} s)`);
    fs.rmSync(dirs.plain, { recursive: true, force: true });
    ctx.cold();
    const plain = ctx.runOurs('restore', { repo: ctx.plainUrl, insecure: true, id: plainLatestId, to: dirs.plain, concurrency: config.restoreConcurrency });
    runs.plain.push(plain);
    const checkPlain = compareDirs(current, dirs.plain);
    if (checkOurs.ok) checkOurs = checkPlain;
    progress(`  ours unencrypted: ${describe(plain.timed)}; ${verdict(checkPlain)}`);
    fs.rmSync(dirs.plain, { recursive: true, force: true });
    const device = await measureDevice(ctx, current, work);
    runs.cp.push(device.copy);
    runs.floor.push(device.floor);
  }
  const ours = medianRun(runs.ours, (r) => r.timed.seconds)!;
  const plain = medianRun(runs.plain, (r) => r.timed.seconds)!;
  const pairs = {
    plain: runs.ours.map((r, i) => ({ ours: r.timed.seconds, reference: runs.plain[i]!.timed.seconds })),
    limit: runs.ours.map((r, i) => ({ ours: durableSeconds(r.timed), reference: deviceLimitSeconds(runs.cp[i]!, runs.floor[i]!) })),
    plainLimit: runs.plain.map((r, i) => ({ ours: durableSeconds(r.timed), reference: deviceLimitSeconds(runs.cp[i]!, runs.floor[i]!) })),
  };
  const copy = medianRun(runs.cp, durableSeconds)!;
  const floor = medianRun(runs.floor, (f) => f.seconds)!;
  let resticRun: TimedProcess | null = null;
  let checkRestic: CompareResult | null = null;
  if (restic) {
    ctx.cold();
    resticRun = restic.restore(dirs.restic);
    const dir = findDirWith(dirs.restic, 'CURRENT');
    checkRestic = dir ? compareDirs(current, dir) : { ok: false, files: 0, bytes: 0, problems: ['no CURRENT file restored'] };
    progress(`  restic: ${describe(resticRun)}; ${verdict(checkRestic)}`);
  }
  let borgRun: TimedProcess | null = null;
  let checkBorg: CompareResult | null = null;
  if (borg) {
    ctx.cold();
    borgRun = borg.restore('incr', dirs.borg);
    checkBorg = compareDirs(current, path.join(dirs.borg, path.basename(current)));
    progress(`  borg:   ${describe(borgRun)}; ${verdict(checkBorg)}`);
  }
  if (!config.keep) for (const d of Object.values(dirs)) fs.rmSync(d, { recursive: true, force: true });
  const m = { ours, plain, pairs, copy, floor, restic: resticRun, borg: borgRun, checkOurs, checkRestic, checkBorg };
  return {
    ...m,
    rows: restoreRows(ctx, m),
    workRow: ctx.rows.inProcess('restore', ours, resticRun),
    results: {
      rounds: roundSeconds(runs),
      copy,
      deviceLimit: floor,
      ours,
      plain,
      pairs,
      restic: resticRun,
      borg: borgRun,
      verified: { ours: checkOurs, restic: checkRestic, borg: checkBorg },
    },
  };
}

function restoreRows(ctx: BenchContext, m: Omit<RestorePhase, 'rows' | 'workRow' | 'results'>): Row[] {
  const { secs, rss, ratio, rssMet, absent, deviceRows } = ctx.rows;
  const resR = ratio(m.restic?.seconds, m.ours.timed.seconds);
  const withSync = (t: TimedProcess | null | undefined) => (t ? durableSeconds(t) : null);
  const check = (c: CompareResult | null, name: 'restic' | 'borg' | null) => (c ? (c.ok ? `identical (${c.files} files)` : 'DIFFERENT') : name ? absent(name) : 'n/a');
  return [
    {
      metric: `restore latest wall (ours fsyncs; peers' dirty data shown as +sync) (info)`,
      ours: secs(m.ours.timed),
      restic: secs(m.restic, 'restic'),
      borg: secs(m.borg, 'borg'),
      ratio: resR,
      goal: '-',
      met: null,
    },
    {
      metric: 'restore wall + trailing sync, i.e. durable (info)',
      ours: `${withSync(m.ours.timed)!.toFixed(2)} s`,
      restic: m.restic ? `${withSync(m.restic)!.toFixed(2)} s` : absent('restic'),
      borg: m.borg ? `${withSync(m.borg)!.toFixed(2)} s` : absent('borg'),
      ratio: ratio(withSync(m.restic), withSync(m.ours.timed)),
      goal: '-',
      met: null,
    },
    timesRow('restore wall, encrypted / unencrypted repository, same rounds', m.pairs.plain, 'unencrypted', 1.15),
    timesRow('restore encrypted, wall + sync / the device limit (the faster of cp -r + sync and direct I/O, each round)', m.pairs.limit, 'the limit', 1.25),
    timesRow('restore unencrypted, wall + sync / the device limit (info)', m.pairs.plainLimit, 'the limit', null),
    ...deviceRows({
      phase: 'restore',
      copied: 'checkpoint 2',
      ours: withSync(m.ours.timed)!,
      copy: withSync(m.copy)!,
      floor: m.floor.seconds,
      limit: deviceLimitSeconds(m.copy, m.floor),
      restic: m.restic ? `${m.restic.seconds.toFixed(2)} s (+${m.restic.syncSeconds.toFixed(2)} sync)` : absent('restic'),
      resticSeconds: m.restic?.seconds,
      resticLabel: 'restic (+sync)',
    }),
    {
      metric: 'restore peak RSS',
      ours: rss(m.ours.timed),
      restic: rss(m.restic, 'restic'),
      borg: rss(m.borg, 'borg'),
      ratio: ratio(m.restic?.peakRssBytes, m.ours.timed.peakRssBytes),
      goal: '<= 128 MiB',
      met: rssMet(m.ours.timed),
    },
    workAloneRow('restore', m.ours, m.plain),
    {
      metric: 'restored files == checkpoint 2, byte for byte',
      ours: check(m.checkOurs, null),
      restic: check(m.checkRestic, 'restic'),
      borg: check(m.checkBorg, 'borg'),
      ratio: null,
      goal: 'identical',
      met: m.checkOurs.ok,
    },
  ];
}
