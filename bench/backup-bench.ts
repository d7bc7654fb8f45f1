import { randomFillSync } from 'node:crypto';
import { envNumber } from './env-number.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { CheckpointRecord } from '../shared/api.js';
import { cloneDbSync, createCheckpointSync } from '../agent/checkpoint/checkpoint-dir.js';
import { newCheckpointId } from '../agent/checkpoint/checkpoint-id.js';
import { benchKey, mb, openBenchDb, prepareBenchDb } from './bench-db.js';
import { measureAgentBackup, type AgentBackupResult } from './agent-backup.js';
import { measureDeviceFloor, type DeviceFloor } from './device-floor.js';
import { compareDirs, findDirWith, treeBytes, type CompareResult } from './backup-compare.js';
import { Borg, INSTALL_HINT, Restic, peerVersion, type PeerBackup, type PeerName } from './backup-peers.js';
import { dropPageCache, hasGnuTime, runQuiet, runTimed, type TimedProcess } from './backup-timed.js';
import { progress } from './progress.js';

/**
 * The backup benchmark: ours against restic and borg on the same checkpoint of the benchmark database
 * (bench-db.ts builds or reuses it), each tool a process of its own measured the same way (wall time,
 * peak RSS through GNU time, a trailing `sync`), the page cache dropped before every measured run:
 *
 *   1. full backup of checkpoint 1 into fresh repositories;
 *   2. incremental backup of checkpoint 2, taken after ~5% new data was written (same repositories,
 *      same caches); restic and borg also once more with their ctime check off (info: see below);
 *   3. restore of the latest backup into a fresh directory, checked byte for byte against checkpoint 2.
 *
 * Beside the peers, the device itself: `cp -r` of the checkpoint plus `sync`, cold, after our full
 * backup and after our restore (both read and write every byte once): how far we are from what the disk
 * allows. And, for information, our incremental once more started without NODE_EXTRA_CA_CERTS (when
 * set: Node then parses that certificate file at every start, which no peer pays).
 *
 * The database is not modified: the benchmark works on a clone of it (tables hard-linked, as the
 * checkpoints are), so the checkpoint benchmark's database keeps its size. Do not run it while the
 * checkpoint benchmark runs: the clone must be taken from a closed database.
 *
 * Every tool backs up the same path, <work>/ckpt-current (the checkpoint hard-linked there with cp -al),
 * so that restic and borg find their parent snapshot / files cache by path. Linking a table (a checkpoint
 * does, cp -al does) changes its ctime: restic's and borg's default change detection (ctime, size, inode)
 * then re-reads every table. That is what a restic or borg user backing up checkpoints gets; the runs
 * with `--ignore-ctime` / `--files-cache=mtime,size,inode` show the peers at their best (restic on a
 * hard-linked copy of its repository as it was before the incremental; borg on a second repository
 * whose full backup already used that files-cache mode, since borg's cache keeps only that timestamp).
 *
 * Prints the table on stdout, writes it and every detail to <BENCH_DIR>/backup-results.json, logs
 * progress on stderr. Exits non-zero only when something crashed or a restore was wrong, never because
 * a goal was missed.
 *
 * Environment: BENCH_DB_GB (1), BENCH_DIR (<repo>/.scratch/bench), BENCH_REBUILD=1, BENCH_CHANGE_PCT (5),
 * BENCH_BACKUP_CONCURRENCY (4, the agent's default), BENCH_RESTORE_CONCURRENCY (12, restore's default),
 * BENCH_PEERS (restic,borg), BENCH_TUNED=0 to skip the peers' ctime-blind runs, BENCH_AGENT=0 to skip the
 * backup through the agent (step 4), BENCH_REPEAT (3: each timed run that many times, medians count), BENCH_KEEP=1 to keep
 * the repositories and restored directories in <BENCH_DIR>/backup.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUN = path.join(ROOT, 'dist', 'bench', 'backup-run.js');
const BATCH = 1000;
const RSS_GOAL_BYTES = 128 * 2 ** 20;

interface Config {
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
  /** How many times each timed run is made; the medians count. */
  repeat: number;
}

interface OursRun {
  timed: TimedProcess;
  result: Record<string, unknown>;
}

interface Row {
  metric: string;
  ours: string;
  restic: string;
  borg: string;
  /** restic / ours: how many times faster (or smaller) ours is. */
  ratio: number | null;
  goal: string;
  met: boolean | null;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const t0 = performance.now();
  const config = readConfig();
  if (!fs.existsSync(RUN)) throw new Error(`${RUN} is missing: run \`npm run build\` first`);
  progress(`backup benchmark: database ${config.dbGb} GB, ${os.cpus().length} CPUs, Node ${process.version}, load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`);

  // Tools first: say what is missing before spending minutes on a database.
  const gnuTime = hasGnuTime();
  if (!gnuTime) progress(`GNU time is missing: peak RSS will not be measured. Install it: ${INSTALL_HINT.time}`);
  const versions: Partial<Record<PeerName, string>> = {};
  const missing: PeerName[] = [];
  for (const name of config.peers) {
    const v = peerVersion(name);
    if (v) versions[name] = v;
    else missing.push(name);
  }
  for (const name of missing) progress(`PEER MISSING: ${name} is not installed; its rows are skipped. Install it: ${INSTALL_HINT[name]}`);
  const has = (name: PeerName) => versions[name] !== undefined;
  // The machine may be shared: a busy neighbour shows up in every number, so say so up front.
  const loadAverages: Record<string, number> = { start: os.loadavg()[0]! };
  if (os.loadavg()[0]! > 0.5) progress(`other processes are busy (load average ${os.loadavg()[0]!.toFixed(2)}): expect noisy numbers`);
  progress(`peers: ${Object.values(versions).join('; ') || 'none'}`);

  const dataDir = path.join(config.benchDir, 'data');
  const db0 = await prepareBenchDb(dataDir, Math.round(config.dbGb * 2 ** 30), config.rebuild);

  const work = path.join(config.benchDir, 'backup');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const workDb = path.join(work, 'db');
  cloneDbSync(db0.dbPath, workDb);
  const checkpointDir = path.join(work, 'checkpoints');
  const current = path.join(work, 'ckpt-current');
  const oursRepo = path.join(work, 'repo-ours');
  const oursUrl = pathToFileURL(oursRepo).href;
  const cacheFile = path.join(work, 'ours-hash-cache.json');
  const restic = has('restic') ? new Restic(path.join(work, 'repo-restic'), path.join(work, 'restic-cache'), gnuTime) : null;
  const borg = has('borg') ? new Borg(path.join(work, 'repo-borg'), path.join(work, 'borg-home'), gnuTime) : null;
  // borg's files cache keeps one timestamp, the one its mode names: a ctime-blind incremental needs a
  // repository whose full backup was ctime-blind too (untimed, after the measured full backups).
  const borgTuned = borg && config.tuned ? new Borg(path.join(work, 'repo-borg-tuned'), path.join(work, 'borg-home-tuned'), gnuTime) : null;
  const BORG_TUNED = ['--files-cache=mtime,size,inode'];
  restic?.init();
  borg?.init();
  borgTuned?.init();

  const c1 = takeCheckpoint(workDb, checkpointDir, 'backup-bench full');
  stage(c1.path, current);
  progress(`checkpoint 1: ${c1.files} files, ${mb(c1.bytes)}; staged at ${current}`);

  let cacheDropped = true;
  const cold = () => {
    cacheDropped = dropPageCache() && cacheDropped;
  };
  const runOurs = (mode: 'backup' | 'restore', args: object, env?: NodeJS.ProcessEnv): OursRun => {
    const timed = runTimed(process.execPath, [RUN, mode, JSON.stringify(args)], { gnuTime, ...(env ? { env } : {}) });
    const last = timed.stdout.trim().split('\n').at(-1) ?? '';
    return { timed, result: JSON.parse(last) as Record<string, unknown> };
  };

  // 1. Full backup.
  loadAverages.fullBackup = os.loadavg()[0]!;
  progress('1/4 full backup of checkpoint 1 (page cache dropped before each tool)');
  // Each tool in turn, `repeat` times, every run into fresh repositories; the medians count. The last
  // round's repositories go on to the incremental.
  const fullRuns = { ours: [] as OursRun[], cp: [] as TimedProcess[], floor: [] as DeviceFloor[], restic: [] as PeerBackup[], borg: [] as PeerBackup[] };
  const floorFile = path.join(work, 'device-floor.bin');
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    fs.rmSync(oursRepo, { recursive: true, force: true });
    fs.rmSync(cacheFile, { force: true });
    cold();
    if (!cacheDropped) progress('  cannot drop the page cache (not root?): the checkpoint is cached for every tool alike');
    const ours = runOurs('backup', { repo: oursUrl, checkpoint: { ...c1, path: current }, cache: cacheFile, concurrency: config.concurrency });
    fullRuns.ours.push(ours);
    progress(`  ours:   ${describe(ours.timed)}, uploaded ${mb(num(ours.result.bytesUploaded))}`);
    cold();
    const copy = copyFloor(current, path.join(work, 'copy-floor'), gnuTime);
    fullRuns.cp.push(copy);
    progress(`  cp -r:  ${describe(copy)} (the device: read and write every byte once, durably)`);
    cold();
    const floor = await measureDeviceFloor(current, floorFile);
    fullRuns.floor.push(floor);
    progress(`  limit:  ${floor.seconds.toFixed(2)} s (the device: direct-I/O read of every byte and write of as many, at once, fsynced)`);
    if (restic) {
      if (round > 1) restic.reset();
      cold();
      const r = restic.backup(current);
      fullRuns.restic.push(r);
      progress(`  restic: ${describe(r.timed)}, added ${mb(r.bytesAdded ?? 0)}`);
    }
    if (borg) {
      if (round > 1) borg.reset();
      cold();
      const b = borg.backup('full', work, path.basename(current));
      fullRuns.borg.push(b);
      progress(`  borg:   ${describe(b.timed)}, added ${mb(b.bytesAdded ?? 0)}`);
    }
  }
  const fullOurs = medianRun(fullRuns.ours, (r) => r.timed.seconds)!;
  const fullCopy = medianRun(fullRuns.cp, durableSeconds)!;
  const fullFloor = medianRun(fullRuns.floor, (f) => f.seconds)!;
  const fullRestic = medianRun(fullRuns.restic, (r) => r.timed.seconds);
  const fullBorg = medianRun(fullRuns.borg, (r) => r.timed.seconds);
  const fullOursRepoBytes = treeBytes(oursRepo);
  const fullResticRepoBytes = restic ? treeBytes(restic.repo) : null;
  const fullBorgRepoBytes = borg ? treeBytes(borg.repo) : null;
  let fullBorgTuned: PeerBackup | null = null;
  if (borgTuned) {
    fullBorgTuned = borgTuned.backup('full', work, path.basename(current), BORG_TUNED);
    progress(`  (borg ${BORG_TUNED.join(' ')} into a second repository, untimed, warm: ${fullBorgTuned.timed.seconds.toFixed(2)} s)`);
  }

  // 2. A ~5% change, a new checkpoint, incremental backups.
  loadAverages.incremental = os.loadavg()[0]!;
  const keys = Math.round((db0.keyCount * config.changePercent) / 100);
  progress(`2/4 writing ${keys} new keys of ${db0.valueBytes} random bytes (~${config.changePercent}%) into the clone, then checkpoint 2`);
  const change = await writeNewKeys(workDb, db0.keyCount, keys, db0.valueBytes);
  const c2 = takeCheckpoint(workDb, checkpointDir, 'backup-bench incremental');
  stage(c2.path, current);
  const delta = newFiles(c1.path, c2.path);
  progress(`  written in ${change.seconds.toFixed(1)} s; checkpoint 2: ${c2.files} files, ${mb(c2.bytes)}; ${delta.files} files (${mb(delta.bytes)}) not in checkpoint 1, ${delta.gone} gone`);

  // The ctime-blind runs need the repositories as they are before the default incremental runs.
  const resticTuned = restic && config.tuned ? restic.cloneTo('tuned') : null;
  // Ours once more on the same change, started without NODE_EXTRA_CA_CERTS (info): a copy of our
  // repository and hash cache as they are now, so both runs do the same work.
  const oursNoCa = process.env.NODE_EXTRA_CA_CERTS ? { repo: `${oursRepo}-noca`, cache: `${cacheFile}-noca` } : null;
  if (oursNoCa) {
    runQuiet('cp', ['-a', oursRepo, oursNoCa.repo]);
    fs.copyFileSync(cacheFile, oursNoCa.cache);
  }
  const repoBefore = { ours: treeBytes(oursRepo), restic: restic ? treeBytes(restic.repo) : null, borg: borg ? treeBytes(borg.repo) : null };

  // Ours and restic `repeat` times each, from the same starting point every time: hard-linked copies of
  // the repositories as they are now (neither tool ever rewrites a file in place) and copies of caches.
  const oursPre = { repo: `${oursRepo}-pre`, cache: `${cacheFile}-pre` };
  runQuiet('cp', ['-al', oursRepo, oursPre.repo]);
  fs.copyFileSync(cacheFile, oursPre.cache);
  const resticPre = restic && config.repeat > 1 ? restic.cloneTo('pre') : null;
  const incRuns = { ours: [] as OursRun[], restic: [] as PeerBackup[] };
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    if (round > 1) {
      fs.rmSync(oursRepo, { recursive: true, force: true });
      runQuiet('cp', ['-al', oursPre.repo, oursRepo]);
      fs.copyFileSync(oursPre.cache, cacheFile);
    }
    cold();
    const ours = runOurs('backup', { repo: oursUrl, checkpoint: { ...c2, path: current }, cache: cacheFile, concurrency: config.concurrency });
    incRuns.ours.push(ours);
    progress(`  ours:   ${describe(ours.timed)}, read ${mb(num(ours.result.bytesRead))}, uploaded ${mb(num(ours.result.bytesUploaded))}`);
    if (restic) {
      if (round > 1 && resticPre) restic.resetTo(resticPre);
      cold();
      const r = restic.backup(current);
      incRuns.restic.push(r);
      progress(`  restic: ${describe(r.timed)}, added ${mb(r.bytesAdded ?? 0)}`);
    }
  }
  fs.rmSync(oursPre.repo, { recursive: true, force: true });
  fs.rmSync(oursPre.cache, { force: true });
  if (resticPre) {
    fs.rmSync(resticPre.repo, { recursive: true, force: true });
    fs.rmSync(resticPre.cacheDir, { recursive: true, force: true });
  }
  const incOurs = medianRun(incRuns.ours, (r) => r.timed.seconds)!;
  const incRestic = medianRun(incRuns.restic, (r) => r.timed.seconds);
  // Every round made the same backup (same checkpoint, same content): the last one's is in the repository.
  const latestId = incRuns.ours.at(-1)!.result.id;
  let incOursNoCa: OursRun | null = null;
  if (oursNoCa) {
    cold();
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    incOursNoCa = runOurs('backup', { repo: pathToFileURL(oursNoCa.repo).href, checkpoint: { ...c2, path: current }, cache: oursNoCa.cache, concurrency: config.concurrency }, env);
    progress(`  ours without NODE_EXTRA_CA_CERTS: ${describe(incOursNoCa.timed)}`);
    fs.rmSync(oursNoCa.repo, { recursive: true, force: true });
    fs.rmSync(oursNoCa.cache, { force: true });
  }
  let incResticTuned: PeerBackup | null = null;
  let incBorg: PeerBackup | null = null;
  let incBorgTuned: PeerBackup | null = null;
  if (resticTuned) {
    cold();
    incResticTuned = resticTuned.backup(current, ['--ignore-ctime']);
    progress(`  restic --ignore-ctime: ${describe(incResticTuned.timed)}, added ${mb(incResticTuned.bytesAdded ?? 0)}`);
    fs.rmSync(resticTuned.repo, { recursive: true, force: true });
    fs.rmSync(resticTuned.cacheDir, { recursive: true, force: true });
  }
  if (borg) {
    cold();
    incBorg = borg.backup('incr', work, path.basename(current));
    progress(`  borg:   ${describe(incBorg.timed)}, added ${mb(incBorg.bytesAdded ?? 0)}`);
  }
  if (borgTuned) {
    cold();
    incBorgTuned = borgTuned.backup('incr', work, path.basename(current), BORG_TUNED);
    progress(`  borg --files-cache=mtime,size,inode: ${describe(incBorgTuned.timed)}, added ${mb(incBorgTuned.bytesAdded ?? 0)}`);
    fs.rmSync(borgTuned.repo, { recursive: true, force: true });
    fs.rmSync(borgTuned.home, { recursive: true, force: true });
  }
  const repoGrowth = {
    ours: treeBytes(oursRepo) - repoBefore.ours,
    restic: restic && repoBefore.restic !== null ? treeBytes(restic.repo) - repoBefore.restic : null,
    borg: borg && repoBefore.borg !== null ? treeBytes(borg.repo) - repoBefore.borg : null,
  };

  // 3. Restore of the latest backup (checkpoint 2), checked byte for byte.
  loadAverages.restore = os.loadavg()[0]!;
  progress('3/4 restore of the latest backup into a fresh directory, then a byte-for-byte check against checkpoint 2');
  const restoreDirs = { ours: path.join(work, 'restore-ours'), restic: path.join(work, 'restore-restic'), borg: path.join(work, 'restore-borg') };
  // Ours and the device `repeat` times (every restore of ours checked); the peers once, after.
  const resRuns = { ours: [] as OursRun[], cp: [] as TimedProcess[], floor: [] as DeviceFloor[] };
  let checkOurs: CompareResult = { ok: true, files: 0, bytes: 0, problems: [] };
  for (let round = 1; round <= config.repeat; round++) {
    if (config.repeat > 1) progress(`  round ${round} of ${config.repeat}`);
    fs.rmSync(restoreDirs.ours, { recursive: true, force: true });
    cold();
    const ours = runOurs('restore', { repo: oursUrl, id: latestId, to: restoreDirs.ours, concurrency: config.restoreConcurrency });
    resRuns.ours.push(ours);
    const check = compareDirs(current, restoreDirs.ours);
    if (checkOurs.ok) checkOurs = check;
    progress(`  ours:   ${describe(ours.timed)}; ${verdict(check)}`);
    cold();
    const copy = copyFloor(current, path.join(work, 'copy-floor'), gnuTime);
    resRuns.cp.push(copy);
    progress(`  cp -r:  ${describe(copy)} (the device: read and write every byte once, durably)`);
    cold();
    const floor = await measureDeviceFloor(current, floorFile);
    resRuns.floor.push(floor);
    progress(`  limit:  ${floor.seconds.toFixed(2)} s (the device: direct-I/O read of every byte and write of as many, at once, fsynced)`);
  }
  const resOurs = medianRun(resRuns.ours, (r) => r.timed.seconds)!;
  const restoreCopy = medianRun(resRuns.cp, durableSeconds)!;
  const restoreFloor = medianRun(resRuns.floor, (f) => f.seconds)!;
  let resRestic: TimedProcess | null = null;
  let checkRestic: CompareResult | null = null;
  if (restic) {
    cold();
    resRestic = restic.restore(restoreDirs.restic);
    const dir = findDirWith(restoreDirs.restic, 'CURRENT');
    checkRestic = dir ? compareDirs(current, dir) : { ok: false, files: 0, bytes: 0, problems: ['no CURRENT file restored'] };
    progress(`  restic: ${describe(resRestic)}; ${verdict(checkRestic)}`);
  }
  let resBorg: TimedProcess | null = null;
  let checkBorg: CompareResult | null = null;
  if (borg) {
    cold();
    resBorg = borg.restore('incr', restoreDirs.borg);
    checkBorg = compareDirs(current, path.join(restoreDirs.borg, path.basename(current)));
    progress(`  borg:   ${describe(resBorg)}; ${verdict(checkBorg)}`);
  }
  if (!config.keep) for (const d of Object.values(restoreDirs)) fs.rmSync(d, { recursive: true, force: true });

  // 4. The agent as a node runs it: what a backup costs the node's process (memory, KV latency).
  let agent: AgentBackupResult | null = null;
  if (config.agent) {
    progress('4/4 a backup through the agent: the example node on a copy of the database, node-admin backup create');
    agent = await measureAgentBackup(db0.dbPath, db0.keyCount, path.join(work, 'agent'));
    progress(
      `  ${agent.seconds.toFixed(2)} s; node RSS idle ${mib(agent.idle.rss)} (anonymous ${mib(agent.idle.anon)}), ` +
        `peak ${mib(agent.peakRssBytes)} (anonymous ${mib(agent.peakSampled.anon)}); KV GET p50/p99 ${agent.kvIdle.p50Ms}/${agent.kvIdle.p99Ms} ms idle, ` +
        `${agent.kvDuring.p50Ms}/${agent.kvDuring.p99Ms} ms during`,
    );
  }

  const totalSeconds = (performance.now() - t0) / 1000;
  loadAverages.end = os.loadavg()[0]!;
  const m: Measurements = {
    c1,
    c2,
    delta,
    fullOurs,
    fullRestic,
    fullBorg,
    repoBytesAfterFull: { ours: fullOursRepoBytes, restic: fullResticRepoBytes, borg: fullBorgRepoBytes },
    fullCopy,
    fullFloor,
    incOurs,
    incOursNoCa,
    incRestic,
    incResticTuned,
    incBorg,
    incBorgTuned,
    repoGrowth,
    resOurs,
    restoreCopy,
    restoreFloor,
    resRestic,
    resBorg,
    checkOurs,
    checkRestic,
    checkBorg,
    agent,
    totalSeconds,
  };
  const rows = tableRows(m, config, versions);
  process.stdout.write(formatTable(rows, config, db0.bytes, db0.reused, cacheDropped, versions, missing, gnuTime, loadAverages));

  const resultsPath = path.join(config.benchDir, 'backup-results.json');
  const results = {
    startedAt: startedAt.toISOString(),
    totalSeconds,
    config,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? null, memoryBytes: os.totalmem(), node: process.version, kernel: os.release(), nodeExtraCaCerts: Boolean(process.env.NODE_EXTRA_CA_CERTS), loadAverages },
    tools: { ours: 'node-admin (this tree)', ...versions, missing, gnuTime, pageCacheDropped: cacheDropped },
    database: db0,
    change: { keys, ...change, newFilesInCheckpoint2: delta },
    checkpoints: { full: c1, incremental: c2, stagedAt: current },
    fullBackup: { ours: fullOurs, restic: fullRestic, borg: fullBorg, copy: fullCopy, deviceLimit: fullFloor, repoBytesAfter: m.repoBytesAfterFull, rounds: roundSeconds(fullRuns) },
    incrementalBackup: { rounds: roundSeconds(incRuns), ours: incOurs, restic: incRestic, resticIgnoreCtime: incResticTuned, borg: incBorg, borgFilesCacheMtime: incBorgTuned, borgFilesCacheMtimeFull: fullBorgTuned, repoGrowthBytes: repoGrowth },
    restore: { rounds: roundSeconds(resRuns), copy: restoreCopy, deviceLimit: restoreFloor, ours: resOurs, restic: resRestic, borg: resBorg, verified: { ours: checkOurs, restic: checkRestic, borg: checkBorg } },
    agent,
    table: rows,
  };
  fs.writeFileSync(resultsPath, JSON.stringify(results, roundNumbers, 2) + '\n');
  if (!config.keep) fs.rmSync(work, { recursive: true, force: true });
  else progress(`kept repositories and restores in ${work}`);
  progress(`done in ${totalSeconds.toFixed(0)} s; results in ${resultsPath}`);
  if (!checkOurs.ok) {
    process.stderr.write(`OUR RESTORE IS WRONG: ${checkOurs.problems.join('; ')}\n`);
    process.exitCode = 2;
  }
}

function readConfig(): Config {
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
    repeat: num('BENCH_REPEAT', 3, true),
  };
}

function takeCheckpoint(dbPath: string, checkpointDir: string, label: string): CheckpointRecord {
  return createCheckpointSync({ dbPath, checkpointDir, id: newCheckpointId(), label, pinned: false, trigger: 'manual' });
}

/** `cp -al <checkpoint db> <fixed path>`: the same inodes, at the path every tool backs up. */
function stage(from: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  runQuiet('cp', ['-al', from, to]);
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
function newFiles(dir1: string, dir2: string): { files: number; bytes: number; tables: number; tableBytes: number; gone: number } {
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

function num(v: unknown): number {
  return typeof v === 'number' ? v : Number.NaN;
}

function describe(t: TimedProcess): string {
  const rss = t.peakRssBytes === null ? '' : `, peak RSS ${mib(t.peakRssBytes)}`;
  const cpu = t.cpuSeconds === null ? '' : `, CPU ${t.cpuSeconds.toFixed(1)} s`;
  return `${t.seconds.toFixed(2)} s (+${t.syncSeconds.toFixed(2)} s sync)${rss}${cpu}`;
}

function verdict(c: CompareResult): string {
  return c.ok ? `identical (${c.files} files, ${mb(c.bytes)})` : `DIFFERENT: ${c.problems.join('; ')}`;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

interface Measurements {
  c1: CheckpointRecord;
  c2: CheckpointRecord;
  delta: ReturnType<typeof newFiles>;
  fullOurs: OursRun;
  /** cp -r of the same checkpoint + sync, cold: the floor the device sets. */
  fullCopy: TimedProcess;
  /** Direct-I/O read + write of every byte at once (device-floor.ts): no tool can be faster. */
  fullFloor: DeviceFloor;
  fullRestic: PeerBackup | null;
  fullBorg: PeerBackup | null;
  repoBytesAfterFull: { ours: number; restic: number | null; borg: number | null };
  incOurs: OursRun;
  incOursNoCa: OursRun | null;
  incRestic: PeerBackup | null;
  incResticTuned: PeerBackup | null;
  incBorg: PeerBackup | null;
  incBorgTuned: PeerBackup | null;
  repoGrowth: { ours: number; restic: number | null; borg: number | null };
  resOurs: OursRun;
  restoreCopy: TimedProcess;
  restoreFloor: DeviceFloor;
  resRestic: TimedProcess | null;
  resBorg: TimedProcess | null;
  checkOurs: CompareResult;
  checkRestic: CompareResult | null;
  checkBorg: CompareResult | null;
  agent: AgentBackupResult | null;
  totalSeconds: number;
}

function tableRows(m: Measurements, config: Config, versions: Partial<Record<PeerName, string>>): Row[] {
  const absent = (name: PeerName) => (versions[name] === undefined ? (config.peers.includes(name) ? 'missing' : 'skipped') : 'n/a');
  const secs = (t: TimedProcess | null | undefined, name: PeerName | null = null) =>
    t ? `${t.seconds.toFixed(2)} s${t.syncSeconds >= 0.05 ? ` (+${t.syncSeconds.toFixed(2)} sync)` : ''}` : name ? absent(name) : 'n/a';
  const rss = (t: TimedProcess | null | undefined, name: PeerName | null = null) =>
    t ? (t.peakRssBytes === null ? 'no GNU time' : mib(t.peakRssBytes)) : name ? absent(name) : 'n/a';
  const bytes = (v: number | null | undefined, name: PeerName) => (v === null || v === undefined ? absent(name) : mb(v));
  const ratio = (peer: number | null | undefined, ours: number | null | undefined) =>
    peer === null || peer === undefined || ours === null || ours === undefined || ours <= 0 ? null : peer / ours;
  const atLeast = (r: number | null, goal: number) => (r === null ? null : r >= goal);
  // Ours against the disk, measured in the same rounds: `cp -r` + `sync` of the data, and the device's
  // limit (device-floor.ts); and the most the limit lets any tool beat restic by.
  const deviceRows = (d: {
    phase: string;
    copied: string;
    ours: number;
    copy: number;
    limit: number;
    restic: string;
    resticSeconds: number | undefined;
    resticLabel: string;
    goal: string;
  }): Row[] => [
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
      metric: `${d.phase} vs the device limit: direct-I/O read + write of every byte, at once (info; restic column: the limit)`,
      ours: `${d.ours.toFixed(2)} s`,
      restic: `${d.limit.toFixed(2)} s`,
      borg: '-',
      ratio: ratio(d.limit, d.ours),
      goal: '-',
      met: null,
    },
    {
      metric: `${d.phase}: the most any tool could be faster than restic here, ${d.resticLabel} / the limit (info)`,
      ours: `${d.limit.toFixed(2)} s`,
      restic: d.restic,
      borg: '-',
      ratio: ratio(d.resticSeconds, d.limit),
      goal: d.goal,
      met: null,
    },
  ];
  const rssMet = (t: TimedProcess) => (t.peakRssBytes === null ? null : t.peakRssBytes <= RSS_GOAL_BYTES);
  const rows: Row[] = [];

  // 1. Full backup.
  const fullR = ratio(m.fullRestic?.timed.seconds, m.fullOurs.timed.seconds);
  rows.push({
    metric: `full backup wall (${mb(m.c1.bytes)}, ${m.c1.files} files, cold cache)`,
    ours: secs(m.fullOurs.timed),
    restic: secs(m.fullRestic?.timed, 'restic'),
    borg: secs(m.fullBorg?.timed, 'borg'),
    ratio: fullR,
    goal: '>= 4x',
    met: atLeast(fullR, 4),
  });
  rows.push(
    ...deviceRows({
      phase: 'full backup',
      copied: 'the checkpoint',
      ours: durableSeconds(m.fullOurs.timed),
      copy: durableSeconds(m.fullCopy),
      limit: m.fullFloor.seconds,
      restic: secs(m.fullRestic?.timed, 'restic'),
      resticSeconds: m.fullRestic?.timed.seconds,
      resticLabel: 'restic',
      goal: '(>= 4x)',
    }),
  );
  rows.push({
    metric: 'full backup CPU user+sys (info)',
    ours: cpu(m.fullOurs.timed),
    restic: m.fullRestic ? cpu(m.fullRestic.timed) : absent('restic'),
    borg: m.fullBorg ? cpu(m.fullBorg.timed) : absent('borg'),
    ratio: ratio(m.fullRestic?.timed.cpuSeconds, m.fullOurs.timed.cpuSeconds),
    goal: '-',
    met: null,
  });
  rows.push({
    metric: 'full backup repository size on disk (info)',
    ours: mb(m.repoBytesAfterFull.ours),
    restic: bytes(m.repoBytesAfterFull.restic, 'restic'),
    borg: bytes(m.repoBytesAfterFull.borg, 'borg'),
    ratio: null,
    goal: '-',
    met: null,
  });
  rows.push({
    metric: 'full backup peak RSS',
    ours: rss(m.fullOurs.timed),
    restic: rss(m.fullRestic?.timed, 'restic'),
    borg: rss(m.fullBorg?.timed, 'borg'),
    ratio: ratio(m.fullRestic?.timed.peakRssBytes, m.fullOurs.timed.peakRssBytes),
    goal: '<= 128 MiB',
    met: rssMet(m.fullOurs.timed),
  });

  // 2. Incremental.
  const incR = ratio(m.incRestic?.timed.seconds, m.incOurs.timed.seconds);
  rows.push({
    metric: `incremental after ${config.changePercent}% change (${m.delta.files} new files, ${mb(m.delta.bytes)}) wall`,
    ours: secs(m.incOurs.timed),
    restic: secs(m.incRestic?.timed, 'restic'),
    borg: secs(m.incBorg?.timed, 'borg'),
    ratio: incR,
    goal: '>= 10x',
    met: atLeast(incR, 10),
  });
  if (m.incOursNoCa) {
    rows.push({
      metric: 'incremental, ours started without NODE_EXTRA_CA_CERTS (info: this machine sets it; Node parses it at every start)',
      ours: secs(m.incOursNoCa.timed),
      restic: secs(m.incRestic?.timed, 'restic'),
      borg: '-',
      ratio: ratio(m.incRestic?.timed.seconds, m.incOursNoCa.timed.seconds),
      goal: '(>= 10x)',
      met: null,
    });
  }
  if (config.tuned) {
    const tunedR = ratio(m.incResticTuned?.timed.seconds, m.incOurs.timed.seconds);
    rows.push({
      metric: 'incremental, peers ctime-blind: restic --ignore-ctime, borg --files-cache=mtime,size,inode (info)',
      ours: secs(m.incOurs.timed),
      restic: secs(m.incResticTuned?.timed, 'restic'),
      borg: secs(m.incBorgTuned?.timed, 'borg'),
      ratio: tunedR,
      goal: '(>= 10x)',
      met: null,
    });
  }
  rows.push({
    metric: 'incremental bytes read (ours) / added as reported (info)',
    ours: `read ${mb(num(m.incOurs.result.bytesRead))}, added ${mb(num(m.incOurs.result.bytesUploaded))}`,
    restic: m.incRestic ? `added ${bytes(m.incRestic.bytesAdded, 'restic')}` : absent('restic'),
    borg: m.incBorg ? `added ${bytes(m.incBorg.bytesAdded, 'borg')}` : absent('borg'),
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
  rows.push({
    metric: 'incremental peak RSS',
    ours: rss(m.incOurs.timed),
    restic: rss(m.incRestic?.timed, 'restic'),
    borg: rss(m.incBorg?.timed, 'borg'),
    ratio: ratio(m.incRestic?.timed.peakRssBytes, m.incOurs.timed.peakRssBytes),
    goal: '<= 128 MiB',
    met: rssMet(m.incOurs.timed),
  });

  // 3. Restore.
  const resR = ratio(m.resRestic?.seconds, m.resOurs.timed.seconds);
  rows.push({
    metric: `restore latest wall (ours fsyncs; peers' dirty data shown as +sync)`,
    ours: secs(m.resOurs.timed),
    restic: secs(m.resRestic, 'restic'),
    borg: secs(m.resBorg, 'borg'),
    ratio: resR,
    goal: '>= 2x',
    met: atLeast(resR, 2),
  });
  const withSync = (t: TimedProcess | null | undefined) => (t ? durableSeconds(t) : null);
  rows.push({
    metric: 'restore wall + trailing sync, i.e. durable (info)',
    ours: `${withSync(m.resOurs.timed)!.toFixed(2)} s`,
    restic: m.resRestic ? `${withSync(m.resRestic)!.toFixed(2)} s` : absent('restic'),
    borg: m.resBorg ? `${withSync(m.resBorg)!.toFixed(2)} s` : absent('borg'),
    ratio: ratio(withSync(m.resRestic), withSync(m.resOurs.timed)),
    goal: '(>= 2x)',
    met: null,
  });
  rows.push(
    ...deviceRows({
      phase: 'restore',
      copied: 'checkpoint 2',
      ours: withSync(m.resOurs.timed)!,
      copy: withSync(m.restoreCopy)!,
      limit: m.restoreFloor.seconds,
      restic: m.resRestic ? `${m.resRestic.seconds.toFixed(2)} s (+${m.resRestic.syncSeconds.toFixed(2)} sync)` : absent('restic'),
      resticSeconds: m.resRestic?.seconds,
      resticLabel: 'restic (+sync)',
      goal: '(>= 2x)',
    }),
  );
  rows.push({
    metric: 'restore peak RSS',
    ours: rss(m.resOurs.timed),
    restic: rss(m.resRestic, 'restic'),
    borg: rss(m.resBorg, 'borg'),
    ratio: ratio(m.resRestic?.peakRssBytes, m.resOurs.timed.peakRssBytes),
    goal: '<= 128 MiB',
    met: rssMet(m.resOurs.timed),
  });
  const check = (c: CompareResult | null, name: PeerName | null) =>
    c ? (c.ok ? `identical (${c.files} files)` : 'DIFFERENT') : name ? absent(name) : 'n/a';
  rows.push({
    metric: 'restored files == checkpoint 2, byte for byte',
    ours: check(m.checkOurs, null),
    restic: check(m.checkRestic, 'restic'),
    borg: check(m.checkBorg, 'borg'),
    ratio: null,
    goal: 'identical',
    met: m.checkOurs.ok,
  });

  // 4. Memory over all of ours.
  const oursRss = [m.fullOurs.timed, m.incOurs.timed, m.resOurs.timed].map((t) => t.peakRssBytes);
  const peak = oursRss.some((v) => v === null) ? null : Math.max(...(oursRss as number[]));
  const peerPeak = (ts: (TimedProcess | null | undefined)[]) => {
    const v = ts.filter((t): t is TimedProcess => Boolean(t)).map((t) => t.peakRssBytes);
    return v.length === 0 || v.some((x) => x === null) ? null : Math.max(...(v as number[]));
  };
  const resticPeak = peerPeak([m.fullRestic?.timed, m.incRestic?.timed, m.resRestic]);
  const borgPeak = peerPeak([m.fullBorg?.timed, m.incBorg?.timed, m.resBorg]);
  rows.push({
    metric: 'peak RSS, max over backup/incremental/restore',
    ours: peak === null ? 'n/a' : mib(peak),
    restic: resticPeak === null ? absent('restic') : mib(resticPeak),
    borg: borgPeak === null ? absent('borg') : mib(borgPeak),
    ratio: ratio(resticPeak, peak),
    goal: '<= 128 MiB',
    met: peak === null ? null : peak <= RSS_GOAL_BYTES,
  });
  // What an agent that runs backups in its own process (it does) pays: the work without Node's start and
  // the imports, which the child-process wall time above includes.
  const inProcess = (label: string, r: OursRun, peer: TimedProcess | null | undefined, goal: string) => {
    const work = num(r.result.durationMs) / 1000;
    rows.push({
      metric: `${label}: ours in-process work, start+imports apart (info)`,
      ours: `${work.toFixed(2)} s (+${(num(r.result.moduleLoadMs) / 1000).toFixed(2)} start)`,
      restic: peer ? `${peer.seconds.toFixed(2)} s` : absent('restic'),
      borg: '-',
      ratio: ratio(peer?.seconds, work),
      goal,
      met: null,
    });
  };
  // Hashing and packing run on the event loop of the process that hosts the agent: how long it was held.
  const loopDelay = (r: OursRun) => {
    const d = r.result.eventLoopDelayMs as { p50?: number; p99?: number; max?: number } | undefined;
    return d ? `p99 ${num(d.p99).toFixed(1)} ms, max ${num(d.max).toFixed(1)} ms` : 'n/a';
  };
  rows.push({
    metric: 'event-loop delay during our full backup / incremental (info: what host node requests wait; idle ~1.1 ms)',
    ours: `${loopDelay(m.fullOurs)} / ${loopDelay(m.incOurs)}`,
    restic: '-',
    borg: '-',
    ratio: null,
    goal: '-',
    met: null,
  });
  if (m.agent) {
    const a = m.agent;
    rows.push({
      metric: 'agent process (example node) during a backup through it: peak RSS, anonymous (heaps, buffers) / all',
      ours: `${mib(a.peakSampled.anon)} / ${mib(a.peakRssBytes)} (idle ${mib(a.idle.anon)} / ${mib(a.idle.rss)})`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '<= 128 MiB',
      // "All" adds the pages of LevelDB's memory-mapped tables that the node's own reads touched: the
      // kernel's to drop, and the same with or without a backup. The goal is the agent's own memory.
      met: a.peakSampled.anon <= RSS_GOAL_BYTES,
    });
    rows.push({
      metric: 'agent process: KV GET latency p50 / p99, idle -> during that backup (info)',
      ours: `${a.kvIdle.p50Ms} / ${a.kvIdle.p99Ms} ms -> ${a.kvDuring.p50Ms} / ${a.kvDuring.p99Ms} ms`,
      restic: '-',
      borg: '-',
      ratio: null,
      goal: '-',
      met: null,
    });
  }
  inProcess('full backup', m.fullOurs, m.fullRestic?.timed, '(>= 4x)');
  inProcess('incremental', m.incOurs, m.incRestic?.timed, '(>= 10x)');
  inProcess('restore', m.resOurs, m.resRestic, '(>= 2x)');
  rows.push({ metric: 'total benchmark runtime', ours: `${m.totalSeconds.toFixed(0)} s`, restic: '-', borg: '-', ratio: null, goal: '<= ~600 s', met: m.totalSeconds <= 600 });
  return rows;
}

function cpu(t: TimedProcess): string {
  return t.cpuSeconds === null ? 'no GNU time' : `${t.cpuSeconds.toFixed(2)} s`;
}

function formatTable(
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
    `backup benchmark: ${mb(bytes)} database${reused ? ' (reused)' : ''}, ${os.cpus().length} CPUs, Node ${process.version}; ours: concurrency ${config.concurrency}, restore concurrency ${config.restoreConcurrency}, no compression, no encryption`,
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
function roundNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
}

main().catch((err: unknown) => {
  process.stderr.write(`backup benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});

/**
 * `cp -r <dir> <to>` then `sync`, timed like every tool, then removed: every byte read once and written
 * once, durably, with nothing else done. No backup or restore of the same bytes on the same device can
 * beat it by much; it tells how far a tool is from the device's own limit.
 */
function copyFloor(dir: string, to: string, gnuTime: boolean): TimedProcess {
  fs.rmSync(to, { recursive: true, force: true });
  const timed = runTimed('cp', ['-r', dir, to], { gnuTime });
  fs.rmSync(to, { recursive: true, force: true });
  return timed;
}

/** The run whose `key` is the median (the lower middle one of an even count); null for none. */
function medianRun<T>(runs: readonly T[], key: (run: T) => number): T | null {
  if (runs.length === 0) return null;
  return [...runs].sort((a, b) => key(a) - key(b))[Math.floor((runs.length - 1) / 2)]!;
}

/** Wall seconds of every round of every tool, for results.json. */
function roundSeconds(runs: Record<string, readonly (OursRun | PeerBackup | TimedProcess | DeviceFloor)[]>): Record<string, number[]> {
  const seconds = (r: OursRun | PeerBackup | TimedProcess | DeviceFloor) => ('timed' in r ? r.timed.seconds : r.seconds);
  return Object.fromEntries(Object.entries(runs).map(([tool, list]) => [tool, list.map(seconds)]));
}

/** A run's wall time plus the sync after it: the time until its writes were on disk. */
function durableSeconds(t: TimedProcess): number {
  return t.seconds + t.syncSeconds;
}
