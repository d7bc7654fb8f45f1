import '../shared/threadpool.js'; // as the example node does: the archiver shares libuv's pool with classic-level
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../agent/index.js';
import { openStorage } from '../agent/storage/open-storage.js';
import { Repository } from '../agent/repository/repository.js';
import { dbSequence } from '../agent/log-archive/db-sequence.js';
import { readWindows, restoreToMoment } from '../agent/log-archive/restore-to-moment.js';
import { MAX_MERGED_BYTES, MAX_MERGED_RAW_BYTES } from '../agent/log-archive/segment-merger.js';
import { parseWalName } from '../agent/log-archive/segment.js';
import { envNumber } from './env-number.js';
import { benchPasswordFile } from './bench-password.js';
import { IndexerRecords } from './indexer-records.js';
import { indexerWrites, lagPerWrite, load, sampleStatus, until, untilFirstBase, type Op, type Shipped } from './log-archive-load.js';
import { passwordSource } from '../agent/repository/password-source.js';
import { replicaRounds } from './log-archive-replica-rounds.js';
import { cpuPairs } from './log-archive-cpu-pairs.js';
import type { ChildAfter, ChildWindow } from './log-archive-cpu-child.js';
import { progress, sleep } from './progress.js';
import { median, summarize } from './stats.js';
import { goalTable, type GoalRow } from './goal-table.js';

/**
 * The log archive's benchmark (issue "restore to any second"), one run, an embedded agent archiving to a
 * `file://` repository at the default 1 s interval, as a host node would run it; the repository is
 * encrypted (format 3: every segment compressed and sealed), with the bench's password.
 *
 * The writes are an indexer's records (indexer-records.ts: JSON transactions, index entries, accounts,
 * blocks, signatures), so that what the archive compresses is what a real node logs, not one value
 * repeated: each write is one batch of the next records, about 1 KiB of keys and values (a handful of
 * entries), the same records in both runs.
 *
 * 1. The same load without archiving and with, BENCH_LA_RUNS (3) pairs, alternating, each side a
 *    process of its own (log-archive-cpu-pairs.ts): BENCH_LA_RATE writes/s (1,000) of about 1 KiB, one
 *    at a time, for BENCH_LA_SECONDS (60: the windows issue 22's goals are set over): the node's write
 *    latency p99 with against without, and the process's CPU (user + system, libuv's and the archive's
 *    worker threads included) with minus without, over the window and the idle time after it (a
 *    minute's merge lands in either), per second of the window, as a share of one core: what the
 *    archiver costs (the median pair, every pair beside it; the windows alone, and their difference by
 *    thread). And, in this process (one window each, the RPO's below), how late the event loop ran
 *    (info).
 * 2. RPO under that load: for every write, from its acknowledgment to the moment a segment holding its
 *    sequence number was stored (the archiver's status, sampled every 10 ms in both runs alike).
 * 3. Storage requests per hour under the load and idle (the storage layer's debug lines: one per
 *    request; idle counted once the archive's own work after the load, its last merge, has settled:
 *    no request for SETTLE_MS), segments stored per hour of load, and what merging makes of them over
 *    an hour (projected from the bytes archived: a minute's run cannot show an hour's merge; the merge
 *    itself is tested in test/log-archive-merge.test.ts). What a day of that load stores: the segments' bytes as the
 *    archiver encoded them (its status's shippedBytes) against what lies in the repository (compressed,
 *    sealed; merged where a minute had passed), per second of load, times 86,400.
 * 4. A restore to the latest moment, BENCH_LA_RESTORE_MB (500) MB of archived log (more of the
 *    indexer's records, in 1 MiB batches) after its base: the time, and log bytes (as encoded, before
 *    compression) applied per second.
 * 5. With a continuous replica (log-archive-replica-rounds.ts; BENCH_LA_REPLICA=0 skips it): BENCH_LA_RUNS
 *    pairs of the same load on two more databases, archive only then archive + a file:// replica: the
 *    replica's lag per write, the primary's RPO with and without it, write p99 and CPU.
 *
 * Environment: BENCH_LA_RATE, BENCH_LA_SECONDS, BENCH_LA_RUNS, BENCH_LA_IDLE_SECONDS (10), BENCH_LA_RESTORE_MB,
 * BENCH_LA_REPLICA, BENCH_DIR (<repo>/.scratch/bench).
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Keys and values per write of the load (one batch of the indexer's next records). */
const WRITE_BYTES = 1024;
/**
 * Seconds of the load run before the measured windows, on each database (in each process of the CPU
 * pairs too): with 3 s, V8's compiler threads were still compiling the load's and the archiver's code
 * in the first window (perf, 2026-12-07).
 */
const WARM_UP_SECONDS = 15;
const DAY_SECONDS = 86_400;

/** How long no storage request must come before the idle window starts. */
const SETTLE_MS = 2000;

/** Storage requests as the agent's storage layer logs them (one debug line each). */
class RequestCounter {
  count = 0;
  /** performance.now() of the last request counted. */
  lastAt = performance.now();
  readonly logger = pino(
    { level: 'debug' },
    new Writable({
      write: (chunk: Buffer, _enc, done) => {
        for (const line of chunk.toString().split('\n')) {
          if (!line) continue;
          const o = JSON.parse(line) as { msg?: unknown; op?: unknown; level?: unknown };
          if (typeof o.msg === 'string' && o.msg.startsWith('storage ') && typeof o.op === 'string') {
            this.count++;
            this.lastAt = performance.now();
          }
          // The agent's warnings and errors (a timeline break, a failed upload) belong in the bench's output.
          if (typeof o.level === 'number' && o.level >= 40) process.stderr.write(`  agent: ${line}\n`);
        }
        done();
      },
    }),
  );
}

async function main(): Promise<void> {
  const rate = envNumber('BENCH_LA_RATE', 1000, true);
  const seconds = envNumber('BENCH_LA_SECONDS', 60, false);
  const idleSeconds = envNumber('BENCH_LA_IDLE_SECONDS', 10, false);
  const restoreMb = envNumber('BENCH_LA_RESTORE_MB', 500, false);
  const runs = envNumber('BENCH_LA_RUNS', 3, true);
  const benchDir = path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench'));
  const dir = path.join(benchDir, 'log-archive');
  const loadStart = os.loadavg();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const silent = pino({ level: 'silent' });
  const passwordFile = benchPasswordFile(benchDir);
  const password = { file: passwordFile };
  progress(`log archive: making ${Math.round(rate * seconds)} writes of the indexer's records (about ${WRITE_BYTES} B each)`);
  const writes = indexerWrites(1, Math.round(rate * seconds), WRITE_BYTES);
  const writesBytes = writes.reduce((n, w) => n + w.reduce((m, op) => m + op.key.length + (op.type === 'put' ? op.value.length : 0), 0), 0);
  const agents: Agent[] = [];
  const dbs: ClassicLevel<string, Buffer>[] = [];
  try {
    // 1. Without archiving: the same agent, no logArchive.
    progress(`log archive: ${rate} writes/s (batches of the indexer's records, ${(writesBytes / writes.length).toFixed(0)} B on average) for ${seconds} s, without archiving`);
    const plainDb = new ClassicLevel<string, Buffer>(path.join(dir, 'plain-db'), { valueEncoding: 'buffer' });
    await plainDb.open();
    dbs.push(plainDb);
    const plain = createAgent({ dbPath: path.join(dir, 'plain-db'), checkpointDir: path.join(dir, 'plain-checkpoints'), backup: { repository: pathToFileURL(path.join(dir, 'plain-repo')).href, password }, logger: silent });
    agents.push(plain);
    await plain.start();
    // A warm-up first, on both databases (not measured): what is measured is the steady cost, not the
    // archiver's threads starting (about 0.1 s of CPU each) nor LevelDB's first memtable.
    await load(plainDb, writes, rate, WARM_UP_SECONDS, () => {});
    let sampler = sampleStatus(plain, () => {});
    const without = await load(plainDb, writes, rate, seconds, () => {});
    await sampler.stop();

    // 2. With archiving.
    progress(`log archive: the same load with archiving (file://, encrypted, 1 s interval)`);
    const dbPath = path.join(dir, 'db');
    const repoDir = path.join(dir, 'repo');
    const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
    await db.open();
    dbs.push(db);
    const counter = new RequestCounter();
    const agent = createAgent({
      dbPath,
      checkpointDir: path.join(dir, 'checkpoints'),
      retention: { keepLast: 5 },
      backup: { repository: pathToFileURL(repoDir).href, password, logArchive: { intervalMs: 1000 } },
      logger: counter.logger,
    });
    agents.push(agent);
    await agent.start();
    const storage = await openStorage(pathToFileURL(repoDir).href, {});
    await untilFirstBase(storage, 60_000);
    await load(db, writes, rate, WARM_UP_SECONDS, () => {});
    const checkpoint = await agent.createCheckpoint({ label: 'bench-sequence' });
    const s0 = (await dbSequence(checkpoint.path)).sequence;
    const segmentsBefore = countSegments(repoDir);
    const segmentBytesBefore = allSegmentBytes(repoDir);
    const statusBefore = (await agent.status()).logArchive!;
    const shippedBefore = statusBefore.shippedSegments;
    const shippedBytesBefore = statusBefore.shippedBytes;
    const requestsBefore = counter.count;
    const shipped: Shipped[] = [];
    sampler = sampleStatus(agent, (s) => shipped.push(s));
    const withArchive = await load(db, writes, rate, seconds, () => {});
    const n = withArchive.ackAt.length;
    const loadEntries = withArchive.entriesAfter[n - 1]!;
    await until(async () => (shipped.at(-1)?.sequence ?? 0) >= s0 + loadEntries, 30_000, 'every write of the load stored');
    const requestsLoad = counter.count - requestsBefore;
    const loadWindow = (shipped.at(-1)!.at - (withArchive.ackAt[0]! - 1)) / 1000;
    const statusAfter = (await agent.status()).logArchive!;
    const segmentsLoad = statusAfter.shippedSegments - shippedBefore;
    // The segments as the archiver encoded them (before compression and sealing) against what the
    // repository holds of them now.
    const rawLoad = statusAfter.shippedBytes - shippedBytesBefore;
    const segmentsListedLoad = countSegments(repoDir) - segmentsBefore;
    const bytesLoad = allSegmentBytes(repoDir) - segmentBytesBefore;
    // With merging (segment-merger.ts), per hour of this load: finished hours keep as many objects as the
    // larger of the two caps needs (MAX_MERGED_BYTES as stored, MAX_MERGED_RAW_BYTES of log); every segment
    // is read and deleted once by its minute's merge, every minute segment once by its hour's; one LIST
    // and at most one PUT per minute, plus the hour's PUTs.
    const segmentsPerHour = (segmentsLoad / loadWindow) * 3600;
    const keptPerHour = Math.max(1, Math.ceil(((bytesLoad / loadWindow) * 3600) / MAX_MERGED_BYTES), Math.ceil(((rawLoad / loadWindow) * 3600) / MAX_MERGED_RAW_BYTES));
    const mergeRequestsPerHour = 2 * (segmentsPerHour + 60) + 60 + 60 + keptPerHour;
    await sampler.stop();
    // RPO: the first sample at which a shipment covering the write's last sequence was seen.
    const rpoSummary = summarize(lagPerWrite(withArchive, s0, shipped));

    await plain.stop();
    agents.splice(agents.indexOf(plain), 1);
    await plainDb.close();
    dbs.splice(dbs.indexOf(plainDb), 1);

    // The load's last minute may still be merging (a merge starts with a shipment, and runs beside
    // shipping for seconds: its reads, its store, its deletes). That is the archive's work, not what an
    // idle node does: the idle window starts once no request came for SETTLE_MS.
    const settleStart = performance.now();
    const settleBefore = counter.count;
    while (performance.now() - counter.lastAt < SETTLE_MS && performance.now() - settleStart < 120_000) await sleep(100);
    const settled = { requests: counter.count - settleBefore, seconds: (performance.now() - settleStart) / 1000 };
    progress(`log archive: the archive's own work settled (${settled.requests} requests over ${settled.seconds.toFixed(1)} s); idle for ${idleSeconds} s`);
    const idleBefore = counter.count;
    await sleep(idleSeconds * 1000);
    const requestsIdle = counter.count - idleBefore;

    // 4. ≥ restoreMb of log after the base: big batches, the archiver keeping up (segments shipped early).
    progress(`log archive: ${restoreMb} MB of the indexer's records in 1 MiB batches, archived, then a restore to the latest moment`);
    const bulk = new IndexerRecords(2);
    let bulkBytes = 0;
    let bulkEntries = 0;
    while (bulkBytes < restoreMb * 1e6) {
      const ops: Op[] = [];
      let size = 0;
      while (size < 2 ** 20) {
        for (const op of bulk.nextBlock()) {
          ops.push(op);
          size += op.key.length + (op.type === 'put' ? op.value.length : 0);
        }
      }
      await db.batch(ops);
      bulkBytes += size;
      bulkEntries += ops.length;
    }
    // Nothing else writes: every put and every batch entry takes one sequence number.
    const finalSequence = s0 + loadEntries + bulkEntries;
    await until(async () => ((await agent.status()).logArchive?.lastShipped?.sequence ?? 0) >= finalSequence, 300_000, 'the bulk writes stored');
    const shippedBytesAll = (await agent.status()).logArchive!.shippedBytes;
    await agent.stop();
    agents.pop();
    const windows = await readWindows(storage);
    const timeline = windows.timelines.at(-1)!;
    if (timeline.bases.filter((b) => b.usable).length === 0) throw new Error('no usable base');
    const sizes = segmentSizes(repoDir, timeline.id);
    const storedLogBytes = sizes.reduce((a, b) => a + b, 0);
    // Every segment of the timeline as encoded (one timeline, one agent: what it shipped since its start).
    const logBytes = shippedBytesAll;
    const burst = segmentSizes(repoDir, timeline.id, s0 + loadEntries); // the segments holding the bulk writes only
    const largestSegment = Math.max(...burst);
    const repo = await Repository.open(storage, { password: passwordSource({ file: passwordFile }) });
    const to = path.join(dir, 'restored');
    const rss0 = process.resourceUsage().maxRSS;
    const t0 = performance.now();
    const result = await restoreToMoment({ repo, at: 'latest', to });
    const restoreSeconds = (performance.now() - t0) / 1000;
    const rssKb = process.resourceUsage().maxRSS;
    if (result.reached.sequence !== finalSequence) throw new Error(`the restore reached ${result.reached.sequence}, not ${finalSequence}`);
    await repo.codec.close();
    await storage.close();

    // 1b. The CPU and write-latency pairs, each side a process of its own (log-archive-cpu-pairs.ts).
    progress(`log archive: ${runs} pairs of ${seconds} s windows, without archiving then with, in two processes`);
    const pairs = await cpuPairs({ dir: path.join(dir, 'cpu-pairs'), passwordFile, rate, seconds, writeBytes: WRITE_BYTES, runs, warmUpSeconds: WARM_UP_SECONDS });
    // A side's CPU for one window's writes wherever it ran: the window's, plus the idle time's after it (a
    // merge of the minute's segments lands in either as the minute falls) per second of the window.
    const idle = (w: ChildWindow, after: ChildAfter) => (after.cpuSeconds / w.seconds) * 100;
    const withoutIdle = pairs.map((p) => idle(p.without, p.withoutAfter));
    const withIdle = pairs.map((p) => idle(p.withArchive, p.withArchiveAfter));
    const windowCpus = pairs.map((p) => p.withArchive.cpuPercent - p.without.cpuPercent);
    const cpus = windowCpus.map((d, i) => d + withIdle[i]! - withoutIdle[i]!);
    const ratios = pairs.map((p) => (p.without.p99 > 0 ? p.withArchive.p99 / p.without.p99 : Number.NaN));
    const byThread = pairs.map((p) => ({ main: p.withArchive.threads.main - p.without.threads.main, node: p.withArchive.threads.node - p.without.threads.node, started: p.withArchive.threads.started - p.without.threads.started }));

    // 5. The same load with a continuous replica attached (log-archive-replica-rounds.ts).
    const replica = process.env.BENCH_LA_REPLICA === '0' ? null : await replicaRounds({ dir: path.join(dir, 'replica-rounds'), passwordFile, writes, rate, seconds, runs });

    const ratio = median(ratios);
    const cpu = median(cpus);
    const spread = (values: number[], f: (v: number) => string) => (values.length > 1 ? `; ${values.length} pairs: ${values.map(f).join(', ')}` : '');
    const mbps = logBytes / 1e6 / restoreSeconds;
    const rows: Row[] = [
      { metric: `load achieved (writes/s, each a batch of the indexer's records, ${(writesBytes / writes.length).toFixed(0)} B on average; without / with archiving)`, value: `${without.rate.toFixed(0)} / ${withArchive.rate.toFixed(0)}`, goal: `${rate}`, met: null },
      { metric: 'RPO: acknowledgment -> stored in the repository, p50 / p99 (10 ms samples)', value: `${secs(rpoSummary.p50)} / ${secs(rpoSummary.p99)}`, goal: 'p99 <= 2 s', met: rpoSummary.p99 <= 2000 },
      {
        metric: 'write latency p99: with archiving / without (the median pair; every pair; each side a process of its own)',
        value: `${ratio.toFixed(2)}x (first pair ${ms(pairs[0]!.withArchive.p99)} / ${ms(pairs[0]!.without.p99)})${spread(ratios, (v) => `${v.toFixed(2)}x`)}`,
        goal: '<= 1.1x',
        met: ratio <= 1.1,
      },
      { metric: 'write latency p50: with / without (info; the first pair)', value: `${ms(pairs[0]!.withArchive.p50)} / ${ms(pairs[0]!.without.p50)}`, goal: '-', met: null },
      {
        metric: "the host's event loop late on a 10 ms timer over the load, p99 / max: with archiving; without (info)",
        value: `${ms(withArchive.loopDelay.p99)} / ${ms(withArchive.loopDelay.max)}; ${ms(without.loopDelay.p99)} / ${ms(without.loopDelay.max)}`,
        goal: '-',
        met: null,
      },
      {
        metric:
          "archiver's CPU: process CPU with archiving - without, in the window and the idle time after it, per second of the window, % of one core (the median pair; every pair; each side a process of its own)",
        value: `${cpu.toFixed(1)}% (first pair ${(pairs[0]!.withArchive.cpuPercent + withIdle[0]!).toFixed(1)}% - ${(pairs[0]!.without.cpuPercent + withoutIdle[0]!).toFixed(1)}%)${spread(cpus, (v) => `${v.toFixed(1)}%`)}`,
        goal: '<= 5%',
        met: cpu <= 5,
      },
      {
        metric: 'the same in the windows alone (info: work a window leaves for later is not in it), every pair',
        value: `${median(windowCpus).toFixed(1)}% (${windowCpus.map((v) => `${v.toFixed(1)}%`).join(', ')})`,
        goal: '-',
        met: null,
      },
      {
        metric: "each side's CPU in the idle time after its window, per second of the window, every pair (info): without archiving; with",
        value: `${withoutIdle.map((v) => `${v.toFixed(1)}%`).join(', ')}; ${withIdle.map((v) => `${v.toFixed(1)}%`).join(', ')}`,
        goal: '-',
        met: null,
      },
      {
        metric:
          "the windows' difference by thread, % of one core, every pair (info): the main thread / V8's and libuv's threads / the threads started with the agent (its workers, LevelDB's compaction thread)",
        value: byThread.map((g) => `${signed(g.main)} / ${signed(g.node)} / ${signed(g.started)}`).join('; '),
        goal: '-',
        met: null,
      },
      { metric: 'storage requests per hour under the load', value: `${perHour(requestsLoad, loadWindow)} (${requestsLoad} in ${loadWindow.toFixed(1)} s)`, goal: '-', met: null },
      {
        metric: `storage requests per hour idle (once the archive's own work after the load settled: no request for ${SETTLE_MS / 1000} s)`,
        value: `${perHour(requestsIdle, idleSeconds)} (${requestsIdle} in ${idleSeconds} s; ${settled.requests} requests over the ${settled.seconds.toFixed(1)} s it took to settle)`,
        goal: '0',
        met: requestsIdle === 0,
      },
      { metric: 'storage requests per hour under the load with merging (projected: + GET, DELETE of each segment, LIST, PUT)', value: `${(requestsLoad / loadWindow * 3600 + mergeRequestsPerHour).toFixed(0)}`, goal: '-', met: null },
      { metric: 'segments stored per hour of load (one per interval with something new)', value: `${perHour(segmentsLoad, loadWindow)} (${segmentsLoad} in ${loadWindow.toFixed(1)} s; ${segmentsListedLoad} listed after)`, goal: '-', met: null },
      { metric: 'objects kept per hour of load after merging (finished hours in pieces of at most MAX_MERGED_BYTES as stored and MAX_MERGED_RAW_BYTES of log)', value: `${keptPerHour} (${mb(bytesLoad / loadWindow * 3600)}/h stored)`, goal: 'few', met: null },
      {
        metric: "a day of this load's log segments: as encoded -> as stored (compressed and sealed), projected from the run",
        value: `${gb((rawLoad / loadWindow) * DAY_SECONDS)} -> ${gb((bytesLoad / loadWindow) * DAY_SECONDS)} a day (${((bytesLoad / rawLoad) * 100).toFixed(1)}%; ${mb(rawLoad)} -> ${mb(bytesLoad)} in ${loadWindow.toFixed(1)} s)`,
        goal: '-',
        met: null,
      },
      {
        metric: `the ${mb(logBytes)} of log of the restore below (the load and the bulk records): as encoded -> as stored`,
        value: `${mb(logBytes)} -> ${mb(storedLogBytes)} (${((storedLogBytes / logBytes) * 100).toFixed(1)}%)`,
        goal: '-',
        met: null,
      },
      { metric: `restore to the latest moment: ${mb(logBytes)} of log (as encoded) after its base`, value: `${restoreSeconds.toFixed(2)} s, ${mbps.toFixed(0)} MB/s of log (${result.batches} batches)`, goal: '>= 50 MB/s', met: mbps >= 50 },
      { metric: 'largest segment stored in that burst (a backlog goes up in pieces of whole passes, about 8 MiB)', value: `${mb(largestSegment)} (${burst.length} segments)`, goal: '-', met: null },
      { metric: 'restore: peak RSS of this process (info: segments streamed, one at a time)', value: `${(Math.max(rss0, rssKb) / 1024).toFixed(0)} MiB`, goal: '-', met: null },
    ];
    if (replica) rows.push(...replica.rows);
    process.stdout.write(table(rows));
    const results = {
      rate,
      seconds,
      writeBytes: writesBytes / writes.length,
      without: { ...without, ackAt: undefined, entriesAfter: undefined, threadCpuPercent: undefined },
      withArchive: { ...withArchive, ackAt: undefined, entriesAfter: undefined, threadCpuPercent: undefined },
      cpuByThread: byThread,
      rpo: rpoSummary,
      cpuPercent: cpu,
      pairs: pairs.map((p, i) => ({ ...p, cpuDifference: cpus[i], windowCpuDifference: windowCpus[i], p99Ratio: ratios[i] })),
      requestsLoad,
      requestsIdle,
      idleSettled: settled,
      loadWindow,
      segmentsLoad,
      rawLoad,
      bytesLoad,
      dayRawBytes: (rawLoad / loadWindow) * DAY_SECONDS,
      dayStoredBytes: (bytesLoad / loadWindow) * DAY_SECONDS,
      keptPerHour,
      mergeRequestsPerHour,
      restore: { seconds: restoreSeconds, logBytes, storedLogBytes, mbps, batches: result.batches, burstSegments: burst.length, largestSegment },
      replica: replica?.json ?? null,
      loadAverages: { start: loadStart, end: os.loadavg() },
    };
    fs.writeFileSync(path.join(benchDir, 'log-archive-results.json'), JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v), 2) + '\n');
    progress(`log archive: results in ${path.join(benchDir, 'log-archive-results.json')}`);
  } finally {
    for (const a of agents) await a.stop().catch(() => {});
    for (const d of dbs) await d.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function countSegments(repoDir: string): number {
  const wal = path.join(repoDir, 'wal');
  if (!fs.existsSync(wal)) return 0;
  let n = 0;
  for (const t of fs.readdirSync(wal)) {
    const seg = path.join(wal, t, 'seg');
    if (fs.existsSync(seg)) n += fs.readdirSync(seg).length;
  }
  return n;
}

function allSegmentBytes(repoDir: string): number {
  const wal = path.join(repoDir, 'wal');
  if (!fs.existsSync(wal)) return 0;
  return fs.readdirSync(wal).reduce((n, t) => (fs.existsSync(path.join(wal, t, 'seg')) ? n + segmentSizes(repoDir, t).reduce((a, b) => a + b, 0) : n), 0);
}

/** The sizes of a timeline's segments (bytes), of those whose first sequence is above `after` if given. */
function segmentSizes(repoDir: string, timeline: string, after = -1): number[] {
  const seg = path.join(repoDir, 'wal', timeline, 'seg');
  return fs.readdirSync(seg).flatMap((f) => {
    const parsed = parseWalName(`wal/${timeline}/seg/${f}`);
    return parsed?.kind === 'segment' && parsed.segment.first > after ? [fs.statSync(path.join(seg, f)).size] : [];
  });
}

type Row = GoalRow;

function table(rows: Row[]): string {
  return goalTable(
    `Log archive: embedded agent, file:// repository encrypted (format 3), 1 s interval (Node ${process.version}); load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`,
    rows,
  );
}

const secs = (v: number) => `${(v / 1000).toFixed(2)} s`;
const ms = (v: number) => `${v < 10 ? v.toFixed(3) : v.toFixed(1)} ms`;
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
const gb = (bytes: number) => `${(bytes / 1e9).toFixed(1)} GB`;
const perHour = (count: number, seconds: number) => ((count / seconds) * 3600).toFixed(0);

main().catch((err: unknown) => {
  process.stderr.write(`log archive bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});

function signed(pct: number): string {
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}`;
}
