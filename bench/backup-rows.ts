import os from 'node:os';
import { mb } from './bench-db.js';
import { INSTALL_HINT, type PeerName } from './backup-peers.js';
import type { TimedProcess } from './backup-timed.js';
import type { Config, OursRun } from './backup-bench-config.js';
import { median } from './stats.js';

/**
 * The backup benchmark's table: a row type, the helpers every phase makes its rows with, the rows about
 * all phases at once, and the printed table.
 */

export const RSS_GOAL_BYTES = 128 * 2 ** 20;

export interface Row {
  metric: string;
  ours: string;
  restic: string;
  borg: string;
  /** restic / ours: how many times faster (or smaller) ours is. */
  ratio: number | null;
  goal: string;
  met: boolean | null;
}

/** What a device row compares: ours against `cp -r` + `sync`, the direct-I/O floor (device-floor.ts) and the faster of the two (the limit). */
export interface DeviceRowInput {
  phase: string;
  copied: string;
  ours: number;
  copy: number;
  floor: number;
  limit: number;
  restic: string;
  resticSeconds: number | undefined;
  resticLabel: string;
}

export type RowKit = ReturnType<typeof rowKit>;

/** Cell formatters that know which peers are missing (config.peers) or skipped. */
export function rowKit(config: Config, versions: Partial<Record<PeerName, string>>) {
  const absent = (name: PeerName) => (versions[name] === undefined ? (config.peers.includes(name) ? 'missing' : 'skipped') : 'n/a');
  const secs = (t: TimedProcess | null | undefined, name: PeerName | null = null) =>
    t ? `${t.seconds.toFixed(2)} s${t.syncSeconds >= 0.05 ? ` (+${t.syncSeconds.toFixed(2)} sync)` : ''}` : name ? absent(name) : 'n/a';
  const rss = (t: TimedProcess | null | undefined, name: PeerName | null = null) =>
    t ? (t.peakRssBytes === null ? 'no GNU time' : mib(t.peakRssBytes)) : name ? absent(name) : 'n/a';
  const bytes = (v: number | null | undefined, name: PeerName) => (v === null || v === undefined ? absent(name) : mb(v));
  const ratio = (peer: number | null | undefined, ours: number | null | undefined) =>
    peer === null || peer === undefined || ours === null || ours === undefined || ours <= 0 ? null : peer / ours;
  const rssMet = (t: TimedProcess) => (t.peakRssBytes === null ? null : t.peakRssBytes <= RSS_GOAL_BYTES);
  const cpu = (t: TimedProcess) => (t.cpuSeconds === null ? 'no GNU time' : `${t.cpuSeconds.toFixed(2)} s`);
  // Ours against the disk, measured in the same rounds: `cp -r` + `sync` of the data, and direct I/O
  // (device-floor.ts); and the most the faster of the two (the limit) lets any tool beat restic by. All
  // information: the goals are against the limit (timesRow), since no tool can beat restic by more than
  // this row shows.
  const deviceRows = (d: DeviceRowInput): Row[] => [
    {
      metric: `${d.phase} vs the device: cp -r of ${d.copied} + sync, cold (info; restic column: cp)`,
      ours: `${d.ours.toFixed(2)} s`,
      restic: `${d.copy.toFixed(2)} s`,
      borg: '-',
      ratio: ratio(d.copy, d.ours),
      goal: '-',
      met: null,
    },
    {
      metric: `${d.phase} vs the device: direct-I/O read + write of every byte, at once (info; restic column: direct I/O)`,
      ours: `${d.ours.toFixed(2)} s`,
      restic: `${d.floor.toFixed(2)} s`,
      borg: '-',
      ratio: ratio(d.floor, d.ours),
      goal: '-',
      met: null,
    },
    {
      metric: `${d.phase}: the most any tool could be faster than restic here, ${d.resticLabel} / the limit, the faster of the two above (info)`,
      ours: `${d.limit.toFixed(2)} s`,
      restic: d.restic,
      borg: '-',
      ratio: ratio(d.resticSeconds, d.limit),
      goal: '-',
      met: null,
    },
  ];
  // What an agent that runs backups in its own process (it does) pays: the work without Node's start and
  // the imports, which the child-process wall time includes. Information beside restic, no goal.
  const inProcess = (label: string, r: OursRun, peer: TimedProcess | null | undefined): Row => {
    const work = num(r.result.durationMs) / 1000;
    return {
      metric: `${label}: ours in-process work, start+imports apart (info)`,
      ours: `${work.toFixed(2)} s (+${(num(r.result.moduleLoadMs) / 1000).toFixed(2)} start)`,
      restic: peer ? `${peer.seconds.toFixed(2)} s` : absent('restic'),
      borg: '-',
      ratio: ratio(peer?.seconds, work),
      goal: '-',
      met: null,
    };
  };
  /** A phase's peak RSS row: ours against the 128 MiB goal, restic's and borg's beside it. */
  const rssRow = (metric: string, ours: TimedProcess, restic: TimedProcess | null | undefined, borg: TimedProcess | null | undefined): Row => ({
    metric,
    ours: rss(ours),
    restic: rss(restic, 'restic'),
    borg: rss(borg, 'borg'),
    ratio: ratio(restic?.peakRssBytes, ours.peakRssBytes),
    goal: '<= 128 MiB',
    met: rssMet(ours),
  });
  return { absent, secs, rss, bytes, ratio, rssMet, cpu, deviceRows, inProcess, rssRow };
}

/**
 * Ours against a reference measured in the same rounds (the unencrypted repository, the device's
 * limit), as times the reference's time: lower is better. Each round's ratio pairs two runs made
 * minutes apart on the same machine; the median of those counts, and the spread is shown.
 */
export function timesRow(metric: string, pairs: readonly { ours: number; reference: number }[], referenceLabel: string, goal: number | null): Row {
  const ratios = pairs.map((p) => p.ours / p.reference);
  const m = median(ratios);
  const ours = median(pairs.map((p) => p.ours));
  const reference = median(pairs.map((p) => p.reference));
  const spread = ratios.length > 1 ? `; rounds ${ratios.map((r) => `${r.toFixed(2)}x`).join(' ')}` : '';
  return {
    metric,
    ours: `${m.toFixed(2)}x${spread} (medians ${ours.toFixed(2)} s vs ${reference.toFixed(2)} s ${referenceLabel})`,
    restic: '-',
    borg: '-',
    ratio: null,
    goal: goal === null ? '-' : `<= ${goal}x`,
    met: goal === null ? null : m <= goal,
  };
}

/** What the rows about every phase at once need of each (the phases' own results). */
export interface PhaseRuns {
  ours: OursRun;
  restic: TimedProcess | null | undefined;
  borg: TimedProcess | null | undefined;
}

/** Peak RSS over the full backup, the incremental and the restore, and the event loop during the backups. */
export function overallRows(kit: RowKit, full: PhaseRuns, incremental: PhaseRuns, restore: PhaseRuns): Row[] {
  const oursRss = [full.ours.timed, incremental.ours.timed, restore.ours.timed].map((t) => t.peakRssBytes);
  const peak = oursRss.some((v) => v === null) ? null : Math.max(...(oursRss as number[]));
  const peerPeak = (ts: (TimedProcess | null | undefined)[]) => {
    const v = ts.filter((t): t is TimedProcess => Boolean(t)).map((t) => t.peakRssBytes);
    return v.length === 0 || v.some((x) => x === null) ? null : Math.max(...(v as number[]));
  };
  const resticPeak = peerPeak([full.restic, incremental.restic, restore.restic]);
  const borgPeak = peerPeak([full.borg, incremental.borg, restore.borg]);
  // Hashing and packing run on the event loop of the process that hosts the agent: how long it was held.
  const loopDelay = (r: OursRun) => {
    const d = r.result.eventLoopDelayMs as { p50?: number; p99?: number; max?: number } | undefined;
    return d ? `p99 ${num(d.p99).toFixed(1)} ms, max ${num(d.max).toFixed(1)} ms` : 'n/a';
  };
  return [
    {
      metric: 'peak RSS, max over backup/incremental/restore',
      ours: peak === null ? 'n/a' : mib(peak),
      restic: resticPeak === null ? kit.absent('restic') : mib(resticPeak),
      borg: borgPeak === null ? kit.absent('borg') : mib(borgPeak),
      ratio: kit.ratio(resticPeak, peak),
      goal: '<= 128 MiB',
      met: peak === null ? null : peak <= RSS_GOAL_BYTES,
    },
    {
      metric: 'event-loop delay during our full backup / incremental (info: what host node requests wait; idle ~1.1 ms)',
      ours: `${loopDelay(full.ours)} / ${loopDelay(incremental.ours)}`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '-',
      met: null,
    },
  ];
}

export function totalRow(totalSeconds: number): Row {
  return { metric: 'total benchmark runtime', ours: `${totalSeconds.toFixed(0)} s`, restic: '-', borg: '-', ratio: null, goal: '<= ~600 s', met: totalSeconds <= 600 };
}

export function formatTable(
  rows: Row[],
  config: Config,
  bytes: number,
  reused: boolean,
  cacheDropped: boolean,
  versions: Partial<Record<PeerName, string>>,
  missing: PeerName[],
  gnuTime: boolean,
  loadAverages: Record<string, number>,
): string {
  const cells = rows.map((r) => [r.metric, r.ours, r.restic, r.borg, r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`, r.goal, r.met === null ? '-' : r.met ? 'yes' : 'NO']);
  const header = ['metric', 'ours', 'restic', 'borg', 'restic/ours', 'goal', 'met?'];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => v.padEnd(widths[i]!)).join(' | ').trimEnd();
  const notes = [
    `backup benchmark: ${mb(bytes)} database${reused ? ' (reused)' : ''}, ${os.cpus().length} CPUs, Node ${process.version}; ours: concurrency ${config.concurrency}, restore concurrency ${config.restoreConcurrency}, format 3 encrypted (AES-256-GCM, brotli where it pays; the key unlocked in every run: scrypt, about 0.5 s), and unencrypted beside it where said`,
    `peers: ${Object.values(versions).join('; ') || 'none'}; restic: default repo format and compression (auto), encrypted; borg: --encryption=none, default lz4 compression`,
    `page cache ${cacheDropped ? 'dropped before every measured run' : 'NOT dropped (not allowed here): the data is cached for every tool alike'}; every tool is a process timed spawn to exit${gnuTime ? ', peak RSS by GNU time' : ''}; "+N sync" = a sync right after (dirty data it left)`,
  ];
  if (config.repeat > 1) {
    notes.push(`every timed run was made ${config.repeat} times, the tools taking turns (the peers' restores and ctime-blind runs once); the table shows the median run; every run is in backup-results.json`);
  }
  notes.push(`1-min load average per phase (includes this benchmark's previous phase): ${Object.entries(loadAverages).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
  if (process.env.NODE_EXTRA_CA_CERTS) notes.push('NODE_EXTRA_CA_CERTS is set: our child processes parse those certificates at start (the AWS SDK import loads TLS), which their wall times include');
  for (const name of missing) notes.push(`MISSING PEER ${name}: its columns are empty. Install: ${INSTALL_HINT[name]}`);
  if (!gnuTime) notes.push(`GNU time missing: no peak RSS. Install: ${INSTALL_HINT.time}`);
  return [...notes, line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...cells.map(line), ''].join('\n');
}

/** results.json keeps milliseconds at most: more digits are noise. */
export function roundNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
}

/**
 * The work alone of our runs, encrypted and unencrypted (backup-run.ts's workCpuMs and workPeakRssKb:
 * without the process's start and the key's unlocking, whose scrypt takes about 0.5 s of CPU and
 * 64 MiB once, when an agent starts): what a backup costs an agent that already holds its key. Info:
 * the goals stay on the whole process.
 */
export function workAloneRow(phase: string, ours: OursRun, plain: OursRun): Row {
  const cell = (r: OursRun) => {
    const cpu = num(r.result.workCpuMs) / 1000;
    const rss = num(r.result.workPeakRssKb) * 1024;
    return Number.isNaN(cpu) || Number.isNaN(rss) ? 'n/a' : `${cpu.toFixed(2)} s CPU, ${mib(rss)}`;
  };
  return {
    metric: `${phase}, the work alone (start and key unlock apart): CPU all threads, peak RSS (info; ours encrypted, unencrypted)`,
    ours: `${cell(ours)}; ${cell(plain)}`,
    restic: '-',
    borg: '-',
    ratio: null,
    goal: '-',
    met: null,
  };
}

export function num(v: unknown): number {
  return typeof v === 'number' ? v : Number.NaN;
}

export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}
