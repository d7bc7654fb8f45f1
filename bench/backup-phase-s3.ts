import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CheckpointRecord } from '../shared/api.js';
import { mb } from './bench-db.js';
import { compareDirs, type CompareResult } from './backup-compare.js';
import { describe, medianRun, verdict, type BenchContext, type OursRun } from './backup-bench-kit.js';
import { runTimed, type TimedProcess } from './backup-timed.js';
import { mib, num, RSS_GOAL_BYTES } from './backup-rows.js';
import { progress } from './progress.js';
import { startSwift, swiftMissing, type SwiftServer } from './swift-server.js';
import { ROOT } from './backup-bench-config.js';

/** The raw SDK's objects: 8 MiB, the size of a pack. */
export const OBJECT_BYTES = 8 * 2 ** 20;
const RAW = path.join(ROOT, 'dist', 'bench', 's3-raw.js');
/** Backup ≤ 1.3× the raw PutObject time, restore ≤ 1.3× the raw GetObject time. */
const RATIO_GOAL = 1.3;

export interface S3Row {
  metric: string;
  ours: string;
  raw: string;
  /** ours / raw: how many times the raw SDK's time ours takes. */
  ratio: number | null;
  goal: string;
  met: boolean | null;
}

export interface S3Phase {
  rows: S3Row[];
  /** backup-results.json's `s3`. */
  results: Record<string, unknown>;
  /** The phase's own table (printed after the main one). */
  table: string;
  checkOurs: CompareResult | null;
}

export interface RawRun {
  timed: TimedProcess;
  bytes: number;
  /** First request to last answer, inside the process. */
  seconds: number;
}

/**
 * 5. The S3 path, against OpenStack Swift's s3api on loopback (swift-server.ts; the server the tests
 * use): a full backup of checkpoint 1 into a fresh prefix, the incremental of checkpoint 2 into the same
 * one, and the restore of that backup, each beside the plain AWS SDK moving the same bytes to or from the
 * same server in the same round (PutObject / GetObject of 8 MiB objects, `concurrency` at once: the
 * store's limit here). Ours and the raw SDK are both processes timed spawn to exit, the page cache
 * dropped before each. Requests per GB by S3 operation (counted by our storage's own client), peak RSS.
 * `repeat` rounds, each in fresh prefixes; the medians count. Skipped, saying what to install, without
 * Swift.
 */
export async function s3Phase(ctx: BenchContext, c1: CheckpointRecord, c2: CheckpointRecord): Promise<S3Phase | null> {
  const { config, work } = ctx;
  const missing = swiftMissing();
  if (missing) {
    progress(`S3 phase skipped: ${missing}`);
    return null;
  }
  ctx.loadAverages.s3 = os.loadavg()[0]!;
  progress('5/5 S3 (OpenStack Swift s3api on loopback): full backup, incremental, restore, each beside the raw AWS SDK on the same bytes');
  const base = path.join(work, 's3');
  fs.mkdirSync(base, { recursive: true });
  const server = await startSwift(base);
  const s3 = { endpoint: server.endpoint, region: server.region, accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
  const runs = { full: [] as OursRun[], incr: [] as OursRun[], restore: [] as OursRun[], rawFull: [] as RawRun[], rawIncr: [] as RawRun[], rawGet: [] as RawRun[] };
  let checkOurs: CompareResult | null = null;
  try {
    for (let round = 1; round <= config.repeat; round++) {
      if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
      const repo = `s3://${server.bucket}/ours-${round}`;
      const cache = path.join(base, `hash-cache-${round}.json`);
      ctx.cold();
      const full = ctx.runOurs('backup', { repo, s3, checkpoint: c1, cache, concurrency: config.concurrency });
      runs.full.push(full);
      progress(`  ours full:        ${describe(full.timed)}, uploaded ${mb(num(full.result.bytesUploaded))} in ${num(full.result.packsUploaded)} packs`);
      const rawFullObjects = Math.ceil(num(full.result.bytesUploaded) / OBJECT_BYTES);
      ctx.cold();
      const rawFull = runRaw(ctx, server, 'put', `raw-${round}`, rawFullObjects, rawFullObjects);
      runs.rawFull.push(rawFull);
      progress(`  raw PutObject:    ${describe(rawFull.timed)}, ${mb(rawFull.bytes)}`);

      ctx.cold();
      const incr = ctx.runOurs('backup', { repo, s3, checkpoint: c2, cache, concurrency: config.concurrency });
      runs.incr.push(incr);
      progress(`  ours incremental: ${describe(incr.timed)}, read ${mb(num(incr.result.bytesRead))}, uploaded ${mb(num(incr.result.bytesUploaded))}`);
      const rawIncrObjects = Math.max(1, Math.ceil(num(incr.result.bytesUploaded) / OBJECT_BYTES));
      ctx.cold();
      const rawIncr = runRaw(ctx, server, 'put', `raw-incr-${round}`, rawIncrObjects, rawIncrObjects);
      runs.rawIncr.push(rawIncr);
      progress(`  raw PutObject:    ${describe(rawIncr.timed)}, ${mb(rawIncr.bytes)}`);

      const to = path.join(base, 'restored');
      fs.rmSync(to, { recursive: true, force: true });
      ctx.cold();
      // As the CLI restores from S3: the engine's default streams at once (BENCH_RESTORE_CONCURRENCY is
      // the directory restore's setting; more streams than the store serves only add memory).
      const restore = ctx.runOurs('restore', { repo, s3, id: incr.result.id, to });
      runs.restore.push(restore);
      const check = compareDirs(c2.path, to);
      if (checkOurs === null || checkOurs.ok) checkOurs = check;
      fs.rmSync(to, { recursive: true, force: true });
      progress(`  ours restore:     ${describe(restore.timed)}; ${verdict(check)}`);
      // The same bytes down: checkpoint 2's size, from the raw full's objects (read again if it needs more).
      ctx.cold();
      const rawGet = runRaw(ctx, server, 'get', `raw-${round}`, Math.ceil(c2.bytes / OBJECT_BYTES), rawFullObjects);
      runs.rawGet.push(rawGet);
      progress(`  raw GetObject:    ${describe(rawGet.timed)}, ${mb(rawGet.bytes)}`);
    }
  } finally {
    server.stop();
    fs.rmSync(base, { recursive: true, force: true });
  }
  const byTime = (r: OursRun) => r.timed.seconds;
  const rawTime = (r: RawRun) => r.timed.seconds;
  const m = {
    full: medianRun(runs.full, byTime)!,
    incr: medianRun(runs.incr, byTime)!,
    restore: medianRun(runs.restore, byTime)!,
    rawFull: medianRun(runs.rawFull, rawTime)!,
    rawIncr: medianRun(runs.rawIncr, rawTime)!,
    rawGet: medianRun(runs.rawGet, rawTime)!,
  };
  const rows = s3Rows(m, c1, c2, checkOurs!);
  const rounds = Object.fromEntries(Object.entries(runs).map(([k, list]) => [k, (list as (OursRun | RawRun)[]).map((r) => r.timed.seconds)]));
  return {
    rows,
    table: formatS3Table(rows, config.concurrency),
    checkOurs,
    results: {
      server: 'OpenStack Swift s3api (loopback)',
      objectBytes: OBJECT_BYTES,
      concurrency: config.concurrency,
      restoreConcurrency: 'default (as the CLI)',
      ours: { full: m.full, incremental: m.incr, restore: m.restore },
      raw: { putFull: m.rawFull, putIncremental: m.rawIncr, get: m.rawGet },
      rounds,
      verified: checkOurs,
      table: rows,
    },
  };
}

/** The raw SDK moving `objects` objects, `concurrency` at once (default: the benchmark's backup concurrency). */
export function runRaw(ctx: BenchContext, server: SwiftServer, mode: 'put' | 'get', prefix: string, objects: number, available: number, concurrency = ctx.config.concurrency): RawRun {
  const args = {
    endpoint: server.endpoint,
    region: server.region,
    bucket: server.bucket,
    prefix,
    objects,
    available,
    objectBytes: OBJECT_BYTES,
    concurrency,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
  };
  const timed = runTimed(process.execPath, [RAW, mode, JSON.stringify(args)], { gnuTime: ctx.gnuTime });
  const out = JSON.parse(timed.stdout.trim().split('\n').at(-1) ?? '{}') as { bytes: number; seconds: number };
  return { timed, bytes: out.bytes, seconds: out.seconds };
}

type Medians = Record<'full' | 'incr' | 'restore', OursRun> & Record<'rawFull' | 'rawIncr' | 'rawGet', RawRun>;

function s3Rows(m: Medians, c1: CheckpointRecord, c2: CheckpointRecord, check: CompareResult): S3Row[] {
  const secs = (t: TimedProcess) => `${t.seconds.toFixed(2)} s`;
  const ratio = (ours: number, raw: number) => (raw > 0 ? ours / raw : null);
  const rss = (t: TimedProcess) => (t.peakRssBytes === null ? 'no GNU time' : mib(t.peakRssBytes));
  const perGb = (r: OursRun, bytes: number) => {
    const counts = (r.result.requests ?? {}) as Record<string, number>;
    const gb = bytes / 1e9;
    return Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .map(([op, n]) => `${op} ${(n / gb).toFixed(n / gb >= 10 ? 0 : 1)} (${n})`)
      .join(', ');
  };
  const fullR = ratio(m.full.timed.seconds, m.rawFull.timed.seconds);
  const incrR = ratio(m.incr.timed.seconds, m.rawIncr.timed.seconds);
  const restR = ratio(m.restore.timed.seconds, m.rawGet.timed.seconds);
  const uploaded = (r: OursRun) => num(r.result.bytesUploaded);
  return [
    {
      metric: `S3 full backup (${mb(c1.bytes)}, cold cache) vs raw PutObject of the same ${mb(m.rawFull.bytes)}`,
      ours: secs(m.full.timed),
      raw: secs(m.rawFull.timed),
      ratio: fullR,
      goal: `<= ${RATIO_GOAL}x`,
      met: fullR === null ? null : fullR <= RATIO_GOAL,
    },
    {
      metric: `S3 incremental (${mb(uploaded(m.incr))} new) vs raw PutObject of as many bytes (info: listing, index load, fixed costs)`,
      ours: secs(m.incr.timed),
      raw: secs(m.rawIncr.timed),
      ratio: incrR,
      goal: '-',
      met: null,
    },
    {
      metric: `S3 restore (${mb(c2.bytes)}, offline, fsynced) vs raw GetObject of as many bytes (to memory)`,
      ours: secs(m.restore.timed),
      raw: secs(m.rawGet.timed),
      ratio: restR,
      goal: `<= ${RATIO_GOAL}x`,
      met: restR === null ? null : restR <= RATIO_GOAL,
    },
    { metric: 'S3 peak RSS: full backup / incremental', ours: `${rss(m.full.timed)} / ${rss(m.incr.timed)}`, raw: `${rss(m.rawFull.timed)} (PutObject)`, ratio: null, goal: '-', met: null },
    {
      metric: 'S3 peak RSS: restore',
      ours: rss(m.restore.timed),
      raw: `${rss(m.rawGet.timed)} (GetObject)`,
      ratio: null,
      goal: '<= 128 MiB',
      met: m.restore.timed.peakRssBytes === null ? null : m.restore.timed.peakRssBytes <= RSS_GOAL_BYTES,
    },
    { metric: 'S3 requests per GB uploaded (in all): full backup', ours: perGb(m.full, uploaded(m.full)), raw: `PutObject ${(m.rawFull.bytes / OBJECT_BYTES / (m.rawFull.bytes / 1e9)).toFixed(0)}`, ratio: null, goal: '-', met: null },
    { metric: 'S3 requests per GB uploaded: incremental', ours: perGb(m.incr, Math.max(uploaded(m.incr), 1)), raw: '-', ratio: null, goal: '-', met: null },
    { metric: 'S3 requests per GB restored', ours: perGb(m.restore, c2.bytes), raw: `GetObject ${(1e9 / OBJECT_BYTES).toFixed(0)}`, ratio: null, goal: '-', met: null },
    { metric: 'S3 restored files == checkpoint 2, byte for byte', ours: check.ok ? `identical (${check.files} files)` : 'DIFFERENT', raw: '-', ratio: null, goal: 'identical', met: check.ok },
  ];
}

function formatS3Table(rows: S3Row[], concurrency: number): string {
  return s3Table(rows, [
    `S3 phase: OpenStack Swift s3api on loopback (client and server share this machine's CPUs); ours: backup concurrency ${concurrency}, restore as the CLI does (its default streams at once); ` +
      `raw AWS SDK: 8 MiB objects, ${concurrency} at once, default payload signing; every run a process timed spawn to exit, page cache dropped before each`,
  ]);
}

/** A table of rows beside the raw SDK, after its notes. */
export function s3Table(rows: S3Row[], notes: string[]): string {
  const cells = rows.map((r) => [r.metric, r.ours, r.raw, r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`, r.goal, r.met === null ? '-' : r.met ? 'yes' : 'NO']);
  const header = ['S3 metric', 'ours', 'raw AWS SDK', 'ours/raw', 'goal', 'met?'];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => v.padEnd(widths[i]!)).join(' | ').trimEnd();
  return ['', ...notes, line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...cells.map(line), ''].join('\n');
}
