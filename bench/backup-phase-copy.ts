import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CheckpointRecord } from '../shared/api.js';
import { openStorage } from '../agent/storage/open-storage.js';
import { Repository } from '../agent/repository/repository.js';
import { passwordSource } from '../agent/repository/password-source.js';
import { mb } from './bench-db.js';
import { compareDirs, type CompareResult } from './backup-compare.js';
import { describe, medianRun, verdict, type BenchContext } from './backup-bench-kit.js';
import { runTimed, type TimedProcess } from './backup-timed.js';
import { mib, num } from './backup-rows.js';
import { OBJECT_BYTES, runRaw, s3Table, type RawRun, type S3Row } from './backup-phase-s3.js';
import { progress } from './progress.js';
import { startSwift, swiftMissing, type SwiftServer } from './swift-server.js';
import { ROOT } from './backup-bench-config.js';
import { PACKS_READ_AT_ONCE, PACKS_STORED_AT_ONCE } from '../agent/backup/copy-snapshots.js';

const CLI = path.join(ROOT, 'dist', 'cli', 'main.cjs');
/** A copy moves bytes at ≥ 0.9× the raw SDK's rate for the same bytes: its time ≤ 1/0.9 of the raw time. */
const RATE_GOAL = 0.9;

export interface CopyPhase {
  rows: S3Row[];
  table: string;
  results: Record<string, unknown>;
  check: CompareResult | null;
}

interface CopyRun {
  timed: TimedProcess;
  summary: Record<string, unknown>;
}

/**
 * 6. `backup copy` (issue "a second copy"), the built CLI as a user runs it, between the encrypted
 * `file://` repository of the phases before (the full backup of checkpoint 1 and the incremental of
 * checkpoint 2) and Swift's s3api on loopback, each beside the raw AWS SDK moving the same bytes in the
 * same round: the full backup copied into a fresh prefix (made by the copy with the source's keys, so
 * packs move as they are) against PutObject; the incremental copied after it (what a 5 % change costs
 * a copy); both copied back from S3 into a fresh directory against GetObject. The raw SDK keeps as many
 * requests in flight as the copy does (copy-snapshots.ts: PACKS_STORED_AT_ONCE puts, PACKS_READ_AT_ONCE
 * gets), whatever BENCH_BACKUP_CONCURRENCY says: the same store, the same bytes, the same concurrency.
 * Both are processes timed spawn to exit: the copy's fixed costs (its key derivation, locks, index
 * loads, listings) count against it. Page cache dropped before each; `repeat` rounds, medians count. The first round's copy back is restored and compared with
 * checkpoint 2 byte for byte. Skipped, saying what to install, without Swift.
 */
export async function copyPhase(ctx: BenchContext, c1: CheckpointRecord, c2: CheckpointRecord): Promise<CopyPhase | null> {
  const { config, work } = ctx;
  const missing = swiftMissing();
  if (missing) {
    progress(`copy phase skipped: ${missing}`);
    return null;
  }
  const ids = await backupIdsOf(ctx, [c1.id, c2.id]);
  ctx.loadAverages.copy = os.loadavg()[0]!;
  progress('6/6 backup copy: file:// -> S3 (full, then incremental), S3 -> file://, each beside the raw AWS SDK on the same bytes');
  const base = path.join(work, 'copy');
  fs.mkdirSync(base, { recursive: true });
  const server = await startSwift(base);
  const runs = { full: [] as CopyRun[], incr: [] as CopyRun[], back: [] as CopyRun[], rawPut: [] as RawRun[], rawGet: [] as RawRun[] };
  let check: CompareResult | null = null;
  try {
    for (let round = 1; round <= config.repeat; round++) {
      if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
      const s3Repo = `s3://${server.bucket}/copy-${round}`;
      ctx.cold();
      const full = runCopy(ctx, server, ctx.oursUrl, s3Repo, [ids[0]!]);
      runs.full.push(full);
      progress(`  copy full -> S3:  ${describe(full.timed)}, sent ${mb(num(full.summary.bytesSent))} in ${num(full.summary.packsSent)} packs`);
      const objects = Math.max(1, Math.ceil(num(full.summary.bytesSent) / OBJECT_BYTES));
      ctx.cold();
      const rawPut = runRaw(ctx, server, 'put', `raw-copy-${round}`, objects, objects, PACKS_STORED_AT_ONCE);
      runs.rawPut.push(rawPut);
      progress(`  raw PutObject:    ${describe(rawPut.timed)}, ${mb(rawPut.bytes)}`);

      ctx.cold();
      const incr = runCopy(ctx, server, ctx.oursUrl, s3Repo, [ids[1]!]);
      runs.incr.push(incr);
      progress(`  copy incremental: ${describe(incr.timed)}, sent ${mb(num(incr.summary.bytesSent))}`);

      const backDir = path.join(base, `back-${round}`);
      ctx.cold();
      const back = runCopy(ctx, server, s3Repo, pathToFileURL(backDir).href, ids);
      runs.back.push(back);
      progress(`  copy S3 -> file:  ${describe(back.timed)}, sent ${mb(num(back.summary.bytesSent))}`);
      const backObjects = Math.max(1, Math.ceil(num(back.summary.bytesSent) / OBJECT_BYTES));
      ctx.cold();
      const rawGet = runRaw(ctx, server, 'get', `raw-copy-${round}`, backObjects, objects, PACKS_READ_AT_ONCE);
      runs.rawGet.push(rawGet);
      progress(`  raw GetObject:    ${describe(rawGet.timed)}, ${mb(rawGet.bytes)}`);
      if (round === 1) {
        const to = path.join(base, 'restored');
        const restore = ctx.runOurs('restore', { repo: pathToFileURL(backDir).href, id: ids[1], to });
        check = compareDirs(c2.path, to);
        progress(`  restore of the copy back: ${describe(restore.timed)}; ${verdict(check)}`);
        fs.rmSync(to, { recursive: true, force: true });
      }
      fs.rmSync(backDir, { recursive: true, force: true });
    }
  } finally {
    server.stop();
    fs.rmSync(base, { recursive: true, force: true });
  }
  const byTime = (r: { timed: TimedProcess }) => r.timed.seconds;
  const m = {
    full: medianRun(runs.full, byTime)!,
    incr: medianRun(runs.incr, byTime)!,
    back: medianRun(runs.back, byTime)!,
    rawPut: medianRun(runs.rawPut, byTime)!,
    rawGet: medianRun(runs.rawGet, byTime)!,
  };
  const secs = (t: TimedProcess) => `${t.seconds.toFixed(2)} s`;
  const rss = (t: TimedProcess) => (t.peakRssBytes === null ? 'no GNU time' : mib(t.peakRssBytes));
  // Rates over the same bytes: ours / raw, as a share of the raw SDK's rate.
  const rate = (ours: CopyRun, raw: RawRun) => (ours.timed.seconds > 0 ? (num(ours.summary.bytesSent) / ours.timed.seconds) / (raw.bytes / raw.timed.seconds) : null);
  const putRate = rate(m.full, m.rawPut);
  const getRate = rate(m.back, m.rawGet);
  const fullSent = num(m.full.summary.bytesSent);
  const incrSent = num(m.incr.summary.bytesSent);
  const rows: S3Row[] = [
    {
      metric: `copy file:// -> S3 of the full backup (${mb(fullSent)} sent, ${m.full.summary.mode}): its rate / raw PutObject's`,
      ours: secs(m.full.timed),
      raw: secs(m.rawPut.timed),
      ratio: putRate,
      goal: `>= ${RATE_GOAL}x`,
      met: putRate === null ? null : putRate >= RATE_GOAL,
    },
    {
      metric: `copy of the incremental after a ${config.changePercent} % change: bytes sent / the full copy's (info)`,
      ours: `${secs(m.incr.timed)}, ${mb(incrSent)}`,
      raw: '-',
      ratio: fullSent > 0 ? incrSent / fullSent : null,
      goal: '-',
      met: null,
    },
    {
      metric: `copy S3 -> file:// of both backups (${mb(num(m.back.summary.bytesSent))} sent): its rate / raw GetObject's`,
      ours: secs(m.back.timed),
      raw: secs(m.rawGet.timed),
      ratio: getRate,
      goal: `>= ${RATE_GOAL}x`,
      met: getRate === null ? null : getRate >= RATE_GOAL,
    },
    { metric: 'copy peak RSS: to S3 / back from S3', ours: `${rss(m.full.timed)} / ${rss(m.back.timed)}`, raw: `${rss(m.rawPut.timed)} (PutObject)`, ratio: null, goal: '-', met: null },
    { metric: 'restore of the copy back == checkpoint 2, byte for byte', ours: check?.ok ? `identical (${check.files} files)` : 'DIFFERENT', raw: '-', ratio: null, goal: 'identical', met: check?.ok ?? false },
  ];
  const table = s3Table(rows, [
    `Copy phase: the built CLI's backup copy between the encrypted file:// repository and OpenStack Swift s3api on loopback; raw AWS SDK: 8 MiB objects, ` +
      `PutObject ${PACKS_STORED_AT_ONCE} at once and GetObject ${PACKS_READ_AT_ONCE} at once: as many as the copy keeps in flight (its pack stores to S3, its pack reads from S3), like with like; ` +
      'ratio: our bytes per second / the raw SDK\'s on the same bytes (higher is better); every run a process timed spawn to exit, page cache dropped before each',
  ]);
  const seconds = (list: { timed: TimedProcess }[]) => list.map((r) => r.timed.seconds);
  return {
    rows,
    table,
    check,
    results: {
      ids,
      ours: { full: m.full, incremental: m.incr, back: m.back },
      raw: { put: m.rawPut, get: m.rawGet },
      rounds: { full: seconds(runs.full), incremental: seconds(runs.incr), back: seconds(runs.back), rawPut: seconds(runs.rawPut), rawGet: seconds(runs.rawGet) },
      table: rows,
    },
  };
}

/** The ids of the backups of these checkpoints in our encrypted repository, in that order. */
async function backupIdsOf(ctx: BenchContext, checkpoints: string[]): Promise<string[]> {
  const storage = await openStorage(ctx.oursUrl, {});
  const repo = await Repository.open(storage, { password: passwordSource({ file: ctx.passwordFile }) });
  try {
    const snapshots = await repo.listSnapshots();
    return checkpoints.map((c) => {
      const s = snapshots.filter((x) => x.checkpoint.id === c).at(-1);
      if (!s) throw new Error(`no backup of checkpoint ${c} in ${ctx.oursUrl}`);
      return s.id;
    });
  } finally {
    await repo.codec.close();
    await storage.close();
  }
}

/** `node-admin backup copy <ids> --from --to --json`, timed; its summary line. */
function runCopy(ctx: BenchContext, server: SwiftServer, from: string, to: string, ids: string[]): CopyRun {
  const args = [CLI, 'backup', 'copy', ...ids, '--from', from, '--to', to, '--password-file', ctx.passwordFile, '--s3-endpoint', server.endpoint, '--s3-region', server.region, '--json'];
  const env = { ...process.env, AWS_ACCESS_KEY_ID: server.accessKeyId, AWS_SECRET_ACCESS_KEY: server.secretAccessKey };
  const timed = runTimed(process.execPath, args, { gnuTime: ctx.gnuTime, env });
  const lines = timed.stdout.trim().split('\n');
  const summary = lines.map((l) => JSON.parse(l) as { summary?: Record<string, unknown> }).find((l) => l.summary)?.summary;
  if (!summary) throw new Error(`backup copy printed no summary: ${timed.stdout.slice(-500)}`);
  return { timed, summary };
}

