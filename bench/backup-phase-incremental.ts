import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CheckpointRecord } from '../shared/api.js';
import { benchKey, mb, openBenchDb } from './bench-db.js';
import { treeBytes } from './backup-compare.js';
import type { PeerBackup } from './backup-peers.js';
import { runQuiet } from './backup-timed.js';
import { progress } from './progress.js';
import { BORG_TUNED, describe, medianRun, roundSeconds, stage, takeCheckpoint, type BenchContext, type OursRun } from './backup-bench-kit.js';
import { num, timesRow, type Row } from './backup-rows.js';
import type { FullBackupPhase } from './backup-phase-full.js';

const BATCH = 1000;

/** Files of checkpoint 2 that checkpoint 1 did not have (by inode). */
export interface NewFiles {
  files: number;
  bytes: number;
  tables: number;
  tableBytes: number;
  gone: number;
}

/** Phase 2 of the backup benchmark, measured and in rows. */
export interface IncrementalPhase {
  keys: number;
  change: { seconds: number; bytes: number };
  c2: CheckpointRecord;
  delta: NewFiles;
  ours: OursRun;
  /** Ours into the unencrypted repository, in the same rounds. */
  plain: OursRun;
  plainPairs: { ours: number; reference: number }[];
  /** Ours started without NODE_EXTRA_CA_CERTS (when set), on the same change. */
  oursNoCa: OursRun | null;
  restic: PeerBackup | null;
  resticTuned: PeerBackup | null;
  borg: PeerBackup | null;
  borgTuned: PeerBackup | null;
  repoGrowth: { ours: number; restic: number | null; borg: number | null };
  /** The backup of checkpoint 2 (every round made the same): what the restore restores. */
  latestId: unknown;
  /** The same in the unencrypted repository. */
  plainLatestId: unknown;
  rows: Row[];
  workRow: Row;
  /** backup-results.json's `incrementalBackup`. */
  results: Record<string, unknown>;
}

/**
 * 2. A ~5% change (new keys written into the clone), checkpoint 2, and incremental backups into the
 * full backup's repositories with their caches: ours and restic `repeat` times each, from the same
 * starting point every time; borg once. The peers once more ctime-blind (info), and ours once more
 * started without NODE_EXTRA_CA_CERTS (info).
 */
export async function incrementalPhase(ctx: BenchContext, full: FullBackupPhase): Promise<IncrementalPhase> {
  const { config, current, oursRepo, cacheFile, plainRepo, plainCacheFile, restic, borg, borgTuned, work } = ctx;
  ctx.loadAverages.incremental = os.loadavg()[0]!;
  const keys = Math.round((ctx.db0.keyCount * config.changePercent) / 100);
  progress(`2/5 writing ${keys} new keys of ${ctx.db0.valueBytes} random bytes (~${config.changePercent}%) into the clone, then checkpoint 2`);
  const change = await writeNewKeys(ctx.workDb, ctx.db0.keyCount, keys, ctx.db0.valueBytes);
  const c2 = takeCheckpoint(ctx.workDb, ctx.checkpointDir, 'backup-bench incremental');
  stage(c2.path, current);
  const delta = newFiles(full.c1.path, c2.path);
  progress(`  written in ${change.seconds.toFixed(1)} s; checkpoint 2: ${c2.files} files, ${mb(c2.bytes)}; ${delta.files} files (${mb(delta.bytes)}) not in checkpoint 1, ${delta.gone} gone`);

  // The ctime-blind runs need the repositories as they are before the default incremental runs.
  const resticTunedRepo = restic && config.tuned ? restic.cloneTo('tuned') : null;
  // Ours once more on the same change, started without NODE_EXTRA_CA_CERTS (info): a copy of our
  // repository and hash cache as they are now, so both runs do the same work.
  const oursNoCaRepo = process.env.NODE_EXTRA_CA_CERTS ? { repo: `${oursRepo}-noca`, cache: `${cacheFile}-noca` } : null;
  if (oursNoCaRepo) {
    runQuiet('cp', ['-a', oursRepo, oursNoCaRepo.repo]);
    fs.copyFileSync(cacheFile, oursNoCaRepo.cache);
  }
  const repoBefore = { ours: treeBytes(oursRepo), restic: restic ? treeBytes(restic.repo) : null, borg: borg ? treeBytes(borg.repo) : null };

  // Ours and restic `repeat` times each, from the same starting point every time: hard-linked copies of
  // the repositories as they are now (neither tool ever rewrites a file in place) and copies of caches.
  const oursPre = { repo: `${oursRepo}-pre`, cache: `${cacheFile}-pre` };
  runQuiet('cp', ['-al', oursRepo, oursPre.repo]);
  fs.copyFileSync(cacheFile, oursPre.cache);
  const plainPre = { repo: `${plainRepo}-pre`, cache: `${plainCacheFile}-pre` };
  runQuiet('cp', ['-al', plainRepo, plainPre.repo]);
  fs.copyFileSync(plainCacheFile, plainPre.cache);
  const resticPre = restic && config.repeat > 1 ? restic.cloneTo('pre') : null;
  const runs = { ours: [] as OursRun[], plain: [] as OursRun[], restic: [] as PeerBackup[] };
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    if (round > 1) {
      fs.rmSync(oursRepo, { recursive: true, force: true });
      runQuiet('cp', ['-al', oursPre.repo, oursRepo]);
      fs.copyFileSync(oursPre.cache, cacheFile);
      fs.rmSync(plainRepo, { recursive: true, force: true });
      runQuiet('cp', ['-al', plainPre.repo, plainRepo]);
      fs.copyFileSync(plainPre.cache, plainCacheFile);
    }
    ctx.cold();
    const ours = ctx.runOurs('backup', { repo: ctx.oursUrl, checkpoint: { ...c2, path: current }, cache: cacheFile, concurrency: config.concurrency });
    runs.ours.push(ours);
    progress(`  ours:   ${describe(ours.timed)}, read ${mb(num(ours.result.bytesRead))}, uploaded ${mb(num(ours.result.bytesUploaded))}`);
    ctx.cold();
    const plain = ctx.runOurs('backup', { repo: ctx.plainUrl, insecure: true, checkpoint: { ...c2, path: current }, cache: plainCacheFile, concurrency: config.concurrency });
    runs.plain.push(plain);
    progress(`  ours unencrypted: ${describe(plain.timed)}, read ${mb(num(plain.result.bytesRead))}, uploaded ${mb(num(plain.result.bytesUploaded))}`);
    if (restic) {
      if (round > 1 && resticPre) restic.resetTo(resticPre);
      ctx.cold();
      const r = restic.backup(current);
      runs.restic.push(r);
      progress(`  restic: ${describe(r.timed)}, added ${mb(r.bytesAdded ?? 0)}`);
    }
  }
  fs.rmSync(oursPre.repo, { recursive: true, force: true });
  fs.rmSync(oursPre.cache, { force: true });
  fs.rmSync(plainPre.repo, { recursive: true, force: true });
  fs.rmSync(plainPre.cache, { force: true });
  if (resticPre) {
    fs.rmSync(resticPre.repo, { recursive: true, force: true });
    fs.rmSync(resticPre.cacheDir, { recursive: true, force: true });
  }
  const ours = medianRun(runs.ours, (r) => r.timed.seconds)!;
  const resticRun = medianRun(runs.restic, (r) => r.timed.seconds);
  // Every round made the same backup (same checkpoint, same content): the last one's is in the repository.
  const latestId = runs.ours.at(-1)!.result.id;
  const plainLatestId = runs.plain.at(-1)!.result.id;
  const plain = medianRun(runs.plain, (r) => r.timed.seconds)!;
  const plainPairs = runs.ours.map((r, i) => ({ ours: r.timed.seconds, reference: runs.plain[i]!.timed.seconds }));
  let oursNoCa: OursRun | null = null;
  if (oursNoCaRepo) {
    ctx.cold();
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    oursNoCa = ctx.runOurs('backup', { repo: pathToFileURL(oursNoCaRepo.repo).href, checkpoint: { ...c2, path: current }, cache: oursNoCaRepo.cache, concurrency: config.concurrency }, env);
    progress(`  ours without NODE_EXTRA_CA_CERTS: ${describe(oursNoCa.timed)}`);
    fs.rmSync(oursNoCaRepo.repo, { recursive: true, force: true });
    fs.rmSync(oursNoCaRepo.cache, { force: true });
  }
  let resticTuned: PeerBackup | null = null;
  let borgRun: PeerBackup | null = null;
  let borgTunedRun: PeerBackup | null = null;
  if (resticTunedRepo) {
    ctx.cold();
    resticTuned = resticTunedRepo.backup(current, ['--ignore-ctime']);
    progress(`  restic --ignore-ctime: ${describe(resticTuned.timed)}, added ${mb(resticTuned.bytesAdded ?? 0)}`);
    fs.rmSync(resticTunedRepo.repo, { recursive: true, force: true });
    fs.rmSync(resticTunedRepo.cacheDir, { recursive: true, force: true });
  }
  if (borg) {
    ctx.cold();
    borgRun = borg.backup('incr', work, path.basename(current));
    progress(`  borg:   ${describe(borgRun.timed)}, added ${mb(borgRun.bytesAdded ?? 0)}`);
  }
  if (borgTuned) {
    ctx.cold();
    borgTunedRun = borgTuned.backup('incr', work, path.basename(current), BORG_TUNED);
    progress(`  borg --files-cache=mtime,size,inode: ${describe(borgTunedRun.timed)}, added ${mb(borgTunedRun.bytesAdded ?? 0)}`);
    fs.rmSync(borgTuned.repo, { recursive: true, force: true });
    fs.rmSync(borgTuned.home, { recursive: true, force: true });
  }
  const repoGrowth = {
    ours: treeBytes(oursRepo) - repoBefore.ours,
    restic: restic && repoBefore.restic !== null ? treeBytes(restic.repo) - repoBefore.restic : null,
    borg: borg && repoBefore.borg !== null ? treeBytes(borg.repo) - repoBefore.borg : null,
  };
  const m = { keys, change, c2, delta, ours, plain, plainPairs, plainLatestId, oursNoCa, restic: resticRun, resticTuned, borg: borgRun, borgTuned: borgTunedRun, repoGrowth, latestId };
  return {
    ...m,
    rows: incrementalRows(ctx, m),
    workRow: ctx.rows.inProcess('incremental', ours, resticRun?.timed),
    results: {
      rounds: roundSeconds(runs),
      ours,
      plain,
      restic: resticRun,
      resticIgnoreCtime: resticTuned,
      borg: borgRun,
      borgFilesCacheMtime: borgTunedRun,
      borgFilesCacheMtimeFull: full.borgTuned,
      repoGrowthBytes: repoGrowth,
    },
  };
}

function incrementalRows(ctx: BenchContext, m: Omit<IncrementalPhase, 'rows' | 'workRow' | 'results'>): Row[] {
  const { config } = ctx;
  const { secs, bytes, ratio, absent, rssRow } = ctx.rows;
  const rows: Row[] = [];
  const incR = ratio(m.restic?.timed.seconds, m.ours.timed.seconds);
  rows.push({
    metric: `incremental after ${config.changePercent}% change (${m.delta.files} new files, ${mb(m.delta.bytes)}) wall (info)`,
    ours: secs(m.ours.timed),
    restic: secs(m.restic?.timed, 'restic'),
    borg: secs(m.borg?.timed, 'borg'),
    ratio: incR,
    goal: '-',
    met: null,
  });
  rows.push(timesRow('incremental wall, encrypted / unencrypted, same rounds (info)', m.plainPairs, 'unencrypted', null));
  if (m.oursNoCa) {
    rows.push({
      metric: 'incremental, ours started without NODE_EXTRA_CA_CERTS (info: this machine sets it; Node parses it at every start)',
      ours: secs(m.oursNoCa.timed),
      restic: secs(m.restic?.timed, 'restic'),
      borg: '-',
      ratio: ratio(m.restic?.timed.seconds, m.oursNoCa.timed.seconds),
      goal: '-',
      met: null,
    });
  }
  if (config.tuned) {
    const tunedR = ratio(m.resticTuned?.timed.seconds, m.ours.timed.seconds);
    rows.push({
      metric: 'incremental, peers ctime-blind: restic --ignore-ctime, borg --files-cache=mtime,size,inode (info)',
      ours: secs(m.ours.timed),
      restic: secs(m.resticTuned?.timed, 'restic'),
      borg: secs(m.borgTuned?.timed, 'borg'),
      ratio: tunedR,
      goal: '-',
      met: null,
    });
  }
  rows.push({
    metric: 'incremental bytes read (ours) / added as reported (info)',
    ours: `read ${mb(num(m.ours.result.bytesRead))}, added ${mb(num(m.ours.result.bytesUploaded))}`,
    restic: m.restic ? `added ${bytes(m.restic.bytesAdded, 'restic')}` : absent('restic'),
    borg: m.borg ? `added ${bytes(m.borg.bytesAdded, 'borg')}` : absent('borg'),
    ratio: null,
    goal: '-',
    met: null,
  });
  rows.push({
    metric: 'incremental repository growth on disk (info)',
    ours: mb(m.repoGrowth.ours),
    restic: bytes(m.repoGrowth.restic, 'restic'),
    borg: bytes(m.repoGrowth.borg, 'borg'),
    ratio: null,
    goal: '-',
    met: null,
  });
  rows.push(rssRow('incremental peak RSS', m.ours.timed, m.restic?.timed, m.borg?.timed));
  return rows;
}

/** New keys after every existing one (a node's ids grow), random values; flushes and compactions as they come. */
async function writeNewKeys(dbPath: string, first: number, count: number, valueBytes: number): Promise<{ seconds: number; bytes: number }> {
  const started = performance.now();
  const db = openBenchDb(dbPath);
  await db.open();
  try {
    for (let i = 0; i < count; i += BATCH) {
      const n = Math.min(BATCH, count - i);
      const values = randomFillSync(Buffer.allocUnsafe(n * valueBytes));
      const ops = [];
      for (let j = 0; j < n; j++) ops.push({ type: 'put' as const, key: benchKey(first + i + j), value: values.subarray(j * valueBytes, (j + 1) * valueBytes) });
      await db.batch(ops);
    }
  } finally {
    await db.close();
  }
  return { seconds: (performance.now() - started) / 1000, bytes: count * valueBytes };
}

/** Files of checkpoint 2 that checkpoint 1 did not have (by inode): what any tool must read at least. */
function newFiles(dir1: string, dir2: string): NewFiles {
  const inodes = (dir: string) => new Map(fs.readdirSync(dir).map((n) => [fs.statSync(path.join(dir, n)).ino, n] as const));
  const before = inodes(dir1);
  const after = inodes(dir2);
  let files = 0;
  let bytes = 0;
  let tables = 0;
  let tableBytes = 0;
  for (const [ino, name] of after) {
    if (before.has(ino)) continue;
    const size = fs.statSync(path.join(dir2, name)).size;
    files++;
    bytes += size;
    if (/\.(ldb|sst)$/.test(name)) {
      tables++;
      tableBytes += size;
    }
  }
  let gone = 0;
  for (const ino of before.keys()) if (!after.has(ino)) gone++;
  return { files, bytes, tables, tableBytes, gone };
}
