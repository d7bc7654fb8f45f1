import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cloneDbSync } from '../agent/checkpoint/checkpoint-dir.js';
import { prepareBenchDb } from './bench-db.js';
import { INSTALL_HINT, peerVersion, type PeerName } from './backup-peers.js';
import { hasGnuTime } from './backup-timed.js';
import { progress } from './progress.js';
import { RUN, benchContext, readConfig } from './backup-bench-kit.js';
import { formatTable, overallRows, roundNumbers, totalRow, type Row } from './backup-rows.js';
import { fullBackupPhase } from './backup-phase-full.js';
import { incrementalPhase } from './backup-phase-incremental.js';
import { restorePhase } from './backup-phase-restore.js';
import { agentPhase, type AgentPhase } from './backup-phase-agent.js';
import { s3Phase, type S3Phase } from './backup-phase-s3.js';
import { copyPhase, type CopyPhase } from './backup-phase-copy.js';

/**
 * The backup benchmark: ours against restic and borg on the same checkpoint of the benchmark database
 * (bench-db.ts builds or reuses it), each tool a process of its own measured the same way (wall time,
 * peak RSS through GNU time, a trailing `sync`), the page cache dropped before every measured run:
 *
 * Ours is measured twice in every round: into an encrypted repository (format 3, the default: the
 * password in the bench directory, bench-password.ts) and into an unencrypted one (format 3 made with
 * insecureNoEncryption), so that what encryption costs is a ratio of two runs on the same data, in the
 * same round; the encrypted one is what the rows about peers and the device show.
 *
 *   1. full backup of checkpoint 1 into fresh repositories;
 *   2. incremental backup of checkpoint 2, taken after ~5% new data was written (same repositories,
 *      same caches); restic and borg also once more with their ctime check off (info: see below);
 *   3. restore of the latest backup into a fresh directory, checked byte for byte against checkpoint 2;
 *   4. a backup through the agent (backup-phase-agent.ts): the node's write p99 during it against quiet,
 *      and its KV GET latency during a backup at the default pace (auto) and at max, each round both;
 *   5. the S3 path on Swift's s3api (backup-phase-s3.ts): full, incremental and restore, each beside the
 *      raw AWS SDK moving the same bytes, and requests per GB;
 *   6. `backup copy` between our file:// repository and Swift, both ways (backup-phase-copy.ts), beside
 *      the raw AWS SDK moving the same bytes, and the copy of the incremental.
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
 * One file per phase, each producing its measurements and its rows: backup-phase-full.ts,
 * backup-phase-incremental.ts, backup-phase-restore.ts, backup-phase-agent.ts (what they share:
 * backup-bench-kit.ts; the table: backup-rows.ts). This file sequences them and prints.
 *
 * Prints the table on stdout, writes it and every detail to <BENCH_DIR>/backup-results.json, logs
 * progress on stderr. Exits non-zero only when something crashed or a restore was wrong, never because
 * a goal was missed.
 *
 * Environment: BENCH_DB_GB (1), BENCH_DIR (<repo>/.scratch/bench), BENCH_REBUILD=1, BENCH_CHANGE_PCT (5),
 * BENCH_BACKUP_CONCURRENCY (4, the agent's default), BENCH_RESTORE_CONCURRENCY (12, restore's default),
 * BENCH_PEERS (restic,borg), BENCH_TUNED=0 to skip the peers' ctime-blind runs, BENCH_AGENT=0 to skip the
 * backup through the agent (step 4), BENCH_S3=0 to skip the S3 phase (step 5; skipped anyway without Swift), BENCH_COPY=0 to skip the copy phase (step 6; likewise), BENCH_REPEAT (3: each timed run that many times, medians count), BENCH_KEEP=1 to keep
 * the repositories and restored directories in <BENCH_DIR>/backup.
 */

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
  // The machine may be shared: a busy neighbour shows up in every number, so say so up front.
  const loadAverages: Record<string, number> = { start: os.loadavg()[0]! };
  if (os.loadavg()[0]! > 0.5) progress(`other processes are busy (load average ${os.loadavg()[0]!.toFixed(2)}): expect noisy numbers`);
  progress(`peers: ${Object.values(versions).join('; ') || 'none'}`);

  const db0 = await prepareBenchDb(path.join(config.benchDir, 'data'), Math.round(config.dbGb * 2 ** 30), config.rebuild);

  const work = path.join(config.benchDir, 'backup');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const ctx = benchContext({ config, gnuTime, versions, db0, work, loadAverages });
  cloneDbSync(db0.dbPath, ctx.workDb);
  ctx.restic?.init();
  ctx.borg?.init();
  ctx.borgTuned?.init();

  const full = await fullBackupPhase(ctx);
  const incremental = await incrementalPhase(ctx, full);
  const restore = await restorePhase(ctx, incremental.latestId, incremental.plainLatestId);
  const agent: AgentPhase | null = config.agent ? await agentPhase(ctx) : null;
  const s3: S3Phase | null = config.s3 ? await s3Phase(ctx, full.c1, incremental.c2) : null;
  const copy: CopyPhase | null = config.copy ? await copyPhase(ctx, full.c1, incremental.c2) : null;

  const totalSeconds = (performance.now() - t0) / 1000;
  loadAverages.end = os.loadavg()[0]!;
  const rows: Row[] = [
    ...full.rows,
    ...incremental.rows,
    ...restore.rows,
    ...overallRows(
      ctx.rows,
      { ours: full.ours, restic: full.restic?.timed, borg: full.borg?.timed },
      { ours: incremental.ours, restic: incremental.restic?.timed, borg: incremental.borg?.timed },
      { ours: restore.ours, restic: restore.restic, borg: restore.borg },
    ),
    ...(agent?.rows ?? []),
    full.workRow,
    incremental.workRow,
    restore.workRow,
    totalRow(totalSeconds),
  ];
  process.stdout.write(formatTable(rows, config, db0.bytes, db0.reused, ctx.cacheDropped, versions, missing, gnuTime, loadAverages));
  if (s3) process.stdout.write(s3.table);
  if (copy) process.stdout.write(copy.table);

  const resultsPath = path.join(config.benchDir, 'backup-results.json');
  const results = {
    startedAt: startedAt.toISOString(),
    totalSeconds,
    config,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? null, memoryBytes: os.totalmem(), node: process.version, kernel: os.release(), nodeExtraCaCerts: Boolean(process.env.NODE_EXTRA_CA_CERTS), loadAverages },
    tools: { ours: 'node-admin (this tree)', ...versions, missing, gnuTime, pageCacheDropped: ctx.cacheDropped },
    database: db0,
    change: { keys: incremental.keys, ...incremental.change, newFilesInCheckpoint2: incremental.delta },
    checkpoints: { full: full.c1, incremental: incremental.c2, stagedAt: ctx.current },
    fullBackup: full.results,
    incrementalBackup: incremental.results,
    restore: restore.results,
    agent: agent?.result ?? null,
    s3: s3?.results ?? null,
    copy: copy?.results ?? null,
    table: rows,
  };
  fs.writeFileSync(resultsPath, JSON.stringify(results, roundNumbers, 2) + '\n');
  if (!config.keep) fs.rmSync(work, { recursive: true, force: true });
  else progress(`kept repositories and restores in ${work}`);
  progress(`done in ${totalSeconds.toFixed(0)} s; results in ${resultsPath}`);
  if (!restore.checkOurs.ok) {
    process.stderr.write(`OUR RESTORE IS WRONG: ${restore.checkOurs.problems.join('; ')}\n`);
    process.exitCode = 2;
  }
  if (s3?.checkOurs && !s3.checkOurs.ok) {
    process.stderr.write(`OUR RESTORE FROM S3 IS WRONG: ${s3.checkOurs.problems.join('; ')}\n`);
    process.exitCode = 2;
  }
  if (copy && !copy.check?.ok) {
    process.stderr.write(`OUR RESTORE OF A COPY IS WRONG: ${copy.check?.problems.join('; ') ?? 'not checked'}\n`);
    process.exitCode = 2;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`backup benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
