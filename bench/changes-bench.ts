import '../shared/threadpool.js'; // as the agent and the CLI do, before anything uses libuv's pool
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent } from '../agent/index.js';
import { newCheckpointId } from '../agent/checkpoint/checkpoint-id.js';
import { dbSequence } from '../agent/log-archive/db-sequence.js';
import { baseName, decodeSegment, encodeSegment, segmentName, type BaseRecord, type SegmentBatch, type SegmentInfo } from '../agent/log-archive/segment.js';
import { HOUR_MS, listSegments, planMerges, runMerges, type SizedSegment } from '../agent/log-archive/segment-merger.js';
import { encodeBatch, type BatchEntry } from '../agent/log-archive/write-batch.js';
import { canonicalJson } from '../agent/repository/format.js';
import { passwordSource } from '../agent/repository/password-source.js';
import { Repository } from '../agent/repository/repository.js';
import { openStorage } from '../agent/storage/open-storage.js';
import type { ChangeBatch, ChangesSummary, LogArchiveTimelines } from '../shared/api.js';
import { benchPasswordFile } from './bench-password.js';
import { dropPageCache, GNU_TIME, hasGnuTime } from './backup-timed.js';
import { envNumber } from './env-number.js';
import { IndexerRecords, type IndexerOp } from './indexer-records.js';
import { progress } from './progress.js';
import { goalTable, type GoalRow } from './goal-table.js';

/**
 * `node-admin backup changes` over an hour of log archive at 1,000 writes/s (issue 21): how fast it
 * lists, and that its memory is bounded whatever the range.
 *
 * The hour is made without waiting an hour, as the archiver and its merger would have stored it:
 *
 * 1. A real base: a classic-level database with some of an indexer's records, a checkpoint of it and a
 *    backup through an embedded agent (no log archive), into an encrypted (format 3) `file://`
 *    repository; its sequence number read from the checkpoint as the archiver reads it.
 * 2. One timeline continuing from that sequence number: BENCH_CHANGES_RATE (1,000) writes a second for
 *    BENCH_CHANGES_MINUTES (60), each one LevelDB WriteBatch of about 1 KiB of the indexer's next records
 *    (indexer-records.ts; a handful of entries, as the log archive bench writes them), plus, in the first
 *    batch of every minute, a put of `meta/finalized` (the one key the `--key` run looks for: 60 changes
 *    in the hour). Batch i is read at the hour's start + (i+1)/rate s, so the last one at its end. The
 *    batches are encoded by the project's own encoders (encodeBatch, encodeSegment) into one segment per
 *    second, as the archiver ships them at its default 1 s interval, stored through
 *    Repository.putObject (compressed and sealed as the agent stores them), with the base's record stored
 *    after the first segment, as the archiver stores it. The hour lies in the past, aligned to a clock
 *    hour, so that the last second's segment ends it and the hour is finished.
 * 3. The merger's own plan and merge (segment-merger.ts) over that listing: what the agent does with a
 *    finished hour (pieces of at most MAX_MERGED_BYTES as the storage lists them). Then checks, untimed:
 *    `backup timeline` shows one timeline over the hour, and `backup restore --at` two minutes in
 *    opens at the expected sequence number with the expected `meta/finalized`.
 *
 * Then the built CLI, each run its own process under GNU time (peak RSS, CPU), the page cache dropped
 * before each where allowed (root), its output read through a pipe and its lines counted (as `| wc -l`
 * would; the listing waits for a slow pipe rather than buffer):
 *
 *   (a) `--json` over the whole hour: lines must be the batches of the hour, plus the summary;
 *   (b) `--key meta/finalized --json` over the whole hour: exactly the 60 changes written, by sequence;
 *   (c) `--values --json` over 10 minutes in the middle of the hour;
 *   (d) (a) over the hour's first 10 minutes: its peak RSS beside (a)'s shows whether memory grows with
 *       the range (the goal: ≤ 128 MiB, independent of the range);
 *
 * and, before them, `backup timeline` the same way: the CLI opening the repository (the key derivation,
 * scrypt at 128 MiB by the key's cost) and reading no segment, the floor of any command's peak RSS.
 *
 * Per run: wall seconds, log MB/s (the bytes of the segments it had to read, as encoded and as stored),
 * batches read per second, peak RSS and CPU. Beside them, the same segments of (d) read alone in this
 * process (get, open, decode; no listing, no output): what listing costs over reading.
 *
 * Environment: BENCH_CHANGES_MINUTES (60), BENCH_CHANGES_RATE (1000), BENCH_CHANGES_DROP_CACHE (1; 0
 * leaves the page cache alone), BENCH_KEEP=1 (keep the repository), BENCH_DIR (<repo>/.scratch/bench).
 * Results in <BENCH_DIR>/changes-results.json.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.cjs');
/** Keys and values per write (one batch of the indexer's next records), as the log archive bench writes. */
const WRITE_BYTES = 1024;
/** The key written once a minute: the `--key` run's target. */
const MARKER_KEY = 'meta/finalized';
/** Of the indexer's records in the base database (a real one, so that the restore has a base to open). */
const BASE_BYTES = 4 * 1024 * 1024;
const SECOND_MS = 1000;
const MINUTE_MS = 60_000;
const RSS_GOAL = 128 * 1024 * 1024;
/** (a)'s peak RSS against (d)'s, six times the range: the same, within noise. */
const RSS_RANGE_GOAL = 1.1;

/** A one-second segment as stored: where it lies, and its size as encoded. */
interface SecondSegment {
  first: number;
  last: number;
  to: number;
  bytes: number;
}

/** What the synthesized hour holds, for the checks. */
interface Archive {
  timeline: string;
  t0: number;
  spanMs: number;
  /** The base's sequence number: the hour's first batch is baseSequence + 1. */
  baseSequence: number;
  lastSequence: number;
  batches: number;
  entries: number;
  /** Keys and values of the batches (what the node wrote). */
  dataBytes: number;
  /** The batches' payloads (LevelDB's WriteBatch bytes). */
  payloadBytes: number;
  seconds: SecondSegment[];
  /** Sequence number and value of each `meta/finalized` put, in order. */
  markers: { sequence: number; value: string }[];
  /** When batch i was read (ms). */
  readAt: (i: number) => number;
}

interface Listing {
  name: string;
  args: string[];
  from: number;
  to: number;
  seconds: number;
  peakRssBytes: number;
  cpuSeconds: number;
  lines: number;
  outBytes: number;
  summary: ChangesSummary;
  /** Every batch line, when kept (the `--key` run). */
  batches: ChangeBatch[];
  /** A batch line (the first), for a look at its shape. */
  sample: ChangeBatch | null;
  /** The segments it had to read, as this bench computes them from the names, as encoded and stored. */
  segments: number;
  encodedBytes: number;
  storedBytes: number;
  /** The largest of them, as encoded: the listing holds one segment at a time. */
  largestEncoded: number;
  /** Batches read (listed or passed over by the filter). */
  scanned: number;
  cacheDropped: boolean;
}

type Row = GoalRow;

async function main(): Promise<void> {
  const minutes = envNumber('BENCH_CHANGES_MINUTES', 60, true);
  const rate = envNumber('BENCH_CHANGES_RATE', 1000, true);
  const dropCache = process.env.BENCH_CHANGES_DROP_CACHE !== '0';
  if (minutes > 60) throw new Error('BENCH_CHANGES_MINUTES must be at most 60: the archive is one finished clock hour, or part of one');
  if (!hasGnuTime()) throw new Error(`GNU time (${GNU_TIME}) is needed for peak RSS and CPU: apt-get install -y time`);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: npm run build first`);
  const benchDir = path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench'));
  const dir = path.join(benchDir, 'changes');
  const loadStart = os.loadavg();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const passwordFile = benchPasswordFile(benchDir);
  const repoDir = path.join(dir, 'repo');
  const repoUrl = pathToFileURL(repoDir).href;
  const cliRepo = ['--repo', repoUrl, '--password-file', passwordFile];
  try {
    // 1. The base: a real database, checkpoint and backup.
    progress(`changes: a base database (${BASE_BYTES >> 20} MiB of the indexer's records), its checkpoint and backup (encrypted, file://)`);
    const base = await makeBase(dir, repoUrl, passwordFile);

    // 2. The hour of archive.
    const storage = await openStorage(repoUrl, {});
    const repo = await Repository.open(storage, { password: passwordSource({ file: passwordFile }) });
    repo.assertWritable();
    const spanMs = minutes * MINUTE_MS;
    // A clock hour in the past (a moment to come cannot be listed), which the last second ends.
    const t0 = Math.floor((Date.now() - spanMs) / HOUR_MS) * HOUR_MS;
    progress(`changes: ${minutes} min of archive at ${rate} writes/s (${(rate * minutes * 60).toLocaleString('en')} batches) from ${new Date(t0).toISOString()}, one segment a second`);
    const t1 = performance.now();
    const archive = await writeArchive(repo, { t0, spanMs, rate, baseSequence: base.sequence, backup: base.backup });
    const writeSeconds = (performance.now() - t1) / 1000;

    // 3. Merged as the agent merges a finished hour.
    const before = await listSegments(repo, archive.timeline);
    const plan = planMerges(before);
    progress(`changes: merging ${before.length} segments in ${plan.merges.length} merges (the merger's own plan)`);
    const rssBeforeMerge = process.resourceUsage().maxRSS * 1024;
    const t2 = performance.now();
    await runMerges(repo, plan);
    const mergeSeconds = (performance.now() - t2) / 1000;
    const rssAfterMerge = process.resourceUsage().maxRSS * 1024;
    const segments = chainOf(await listSegments(repo, archive.timeline));
    const encodedOf = encodedSizes(segments, archive.seconds);
    const storedTotal = segments.reduce((n, s) => n + s.size, 0);
    const encodedTotal = encodedOf.reduce((n, b) => n + b, 0);
    const largestStored = Math.max(...segments.map((s) => s.size));
    const largestEncoded = Math.max(...encodedOf);
    progress(`changes: ${segments.length} segments, ${mb(encodedTotal)} of log as encoded, ${mb(storedTotal)} stored; largest ${mb(largestStored)} stored, ${mb(largestEncoded)} encoded`);

    // Checks, untimed: the timeline, and a restore early in the hour.
    const checks: Row[] = [];
    const shown = JSON.parse(runCli(['backup', 'timeline', '--json', ...cliRepo])) as LogArchiveTimelines;
    const t = shown.timelines;
    const timelineOk =
      t.length === 1 &&
      t[0]!.id === archive.timeline &&
      t[0]!.from === new Date(t0).toISOString() &&
      t[0]!.to === new Date(t0 + spanMs).toISOString() &&
      t[0]!.firstSequence === archive.baseSequence &&
      t[0]!.lastSequence === archive.lastSequence &&
      t[0]!.segments === segments.length &&
      shown.gaps.length === 0;
    checks.push({
      metric: '`backup timeline`: one timeline over the span written, from the base to the last batch',
      value: t.map((x) => `${x.id} ${x.from} to ${x.to}, sequences ${x.firstSequence}..${x.lastSequence}, ${x.segments} segments`).join('; '),
      goal: `${new Date(t0).toISOString()} to ${new Date(t0 + spanMs).toISOString()}`,
      met: timelineOk,
    });
    const restoreAt = t0 + Math.min(2 * MINUTE_MS, Math.floor(spanMs / 2));
    checks.push(await checkRestore(dir, cliRepo, archive, restoreAt));

    // The timed runs.
    const window = Math.min(10 * MINUTE_MS, spanMs);
    const whole = minutes === 60 ? 'the whole hour' : `all ${minutes} min`;
    const middle = t0 + Math.floor((spanMs - window) / 2 / SECOND_MS) * SECOND_MS;
    const runs: { name: string; from: number; to: number; args: string[]; keep?: boolean }[] = [
      { name: `(a) --json, ${whole}`, from: t0, to: t0 + spanMs, args: [] },
      { name: `(b) --key ${MARKER_KEY} --json, ${whole}`, from: t0, to: t0 + spanMs, args: ['--key', MARKER_KEY], keep: true },
      { name: `(c) --values --json, ${window / MINUTE_MS} min in the middle`, from: middle, to: middle + window, args: ['--values'] },
      { name: `(d) --json, the first ${window / MINUTE_MS} min`, from: t0, to: t0 + window, args: [] },
    ];
    // The floor of any command that reads the repository: the CLI opening it (scrypt's key derivation,
    // 128 MiB by the key's cost) and listing it, reading no segment.
    progress('changes: backup timeline, timed (opens the repository, reads no segment): the floor of peak RSS');
    if (dropCache) dropPageCache();
    const opening = await timedCli(dir, ['backup', 'timeline', '--json', ...cliRepo], false);
    const listings: Listing[] = [];
    for (const r of runs) {
      progress(`changes: ${r.name}`);
      const cacheDropped = dropCache && dropPageCache();
      const args = ['backup', 'changes', '--from', new Date(r.from).toISOString(), '--to', new Date(r.to).toISOString(), ...r.args, '--json', ...cliRepo];
      const read = readRange(segments, encodedOf, r.from, r.to);
      const l = await timedListing(dir, args, r.keep === true);
      listings.push({ name: r.name, args, from: r.from, to: r.to, ...l, ...read, scanned: l.summary.scanned, cacheDropped });
      progress(`changes:   ${l.seconds.toFixed(1)} s, ${l.lines} lines, peak RSS ${mib(l.peakRssBytes)}`);
    }
    const [all, byKey, values, first] = listings as [Listing, Listing, Listing, Listing];
    for (const l of [all, values, first]) {
      const expected = countBatches(archive, l.from, l.to);
      checks.push({
        metric: `${l.name}: batch lines = batches in the range (summary: batches = read; segments as the names say)`,
        value: `${l.lines - 1} lines, ${expected} batches; summary ${l.summary.batches} / ${l.summary.scanned}; ${l.summary.segments} segments (${l.segments} by the names)`,
        goal: 'equal',
        met: l.lines - 1 === expected && l.summary.batches === expected && l.summary.scanned === expected && l.summary.segments === l.segments,
      });
    }
    const keyOk =
      byKey.batches.length === archive.markers.length &&
      byKey.batches.every((b, i) => {
        const m = archive.markers[i]!;
        return b.sequence <= m.sequence && m.sequence <= b.last && b.changes.length === 1 && b.changes[0]!.key === MARKER_KEY && b.changes[0]!.valueBytes === Buffer.byteLength(m.value);
      }) &&
      byKey.summary.scanned === archive.batches &&
      byKey.summary.batches === archive.markers.length;
    checks.push({
      metric: `${byKey.name}: every change of the key written, at its sequence number, and nothing else`,
      value: `${byKey.batches.length} found of ${archive.markers.length} written; ${byKey.summary.scanned} batches read`,
      goal: `${archive.markers.length}`,
      met: keyOk,
    });
    const withValues = values.sample?.changes.every((c) => c.type === 'del' || (typeof c.value === 'string' && c.valueBytes !== undefined)) ?? false;
    checks.push({ metric: `${values.name}: each put listed with its value`, value: withValues ? 'yes (first batch line)' : JSON.stringify(values.sample).slice(0, 80), goal: 'yes', met: withValues });

    // Reading the segments (d) read, alone in this process: get, decrypt, decompress, decode.
    progress('changes: the segments of (d) read alone in this process (get, open, decode)');
    if (dropCache) dropPageCache();
    const floor = await readAlone(repo, segments, first.from, first.to);
    await repo.codec.close();
    await storage.close();

    const rows: Row[] = [
      {
        metric: `the archive: ${minutes} min at ${rate} writes/s, one timeline; batches (entries) of about ${WRITE_BYTES} B of keys and values`,
        value: `${archive.batches.toLocaleString('en')} batches (${archive.entries.toLocaleString('en')} entries, ${mb(archive.dataBytes)} of keys and values, ${mb(archive.payloadBytes)} of WriteBatches)`,
        goal: '-',
        met: null,
      },
      {
        metric: 'its log segments as encoded -> as stored (compressed, sealed) after the merge',
        value: `${mb(encodedTotal)} -> ${mb(storedTotal)} (${((storedTotal / encodedTotal) * 100).toFixed(1)}%) in ${segments.length} segments (from ${before.length})`,
        goal: '-',
        met: null,
      },
      { metric: 'largest segment: stored / as encoded (the merger caps what the storage lists)', value: `${mb(largestStored)} / ${mb(largestEncoded)}`, goal: '-', met: null },
      {
        metric: 'making it (info): one-second segments written / merged by the merger in this process (its peak RSS before -> after the merge)',
        value: `${writeSeconds.toFixed(0)} s / ${mergeSeconds.toFixed(0)} s (${mib(rssBeforeMerge)} -> ${mib(rssAfterMerge)})`,
        goal: '-',
        met: null,
      },
      ...checks,
      ...listings.map((l) => ({
        metric: `${l.name}: wall; log MB/s as encoded (as stored); batches read/s; peak RSS; CPU`,
        value: `${l.seconds.toFixed(1)} s; ${rateMb(l.encodedBytes, l.seconds)} (${rateMb(l.storedBytes, l.seconds)}); ${Math.round(l.scanned / l.seconds).toLocaleString('en')}/s; ${mib(l.peakRssBytes)}; ${l.cpuSeconds.toFixed(1)} s (${((l.cpuSeconds / l.seconds) * 100).toFixed(0)}%)`,
        goal: '-',
        met: null,
      })),
      {
        metric: `reading (d)'s ${first.segments} segments alone, in this process (get, open, decode; no listing): log MB/s as encoded`,
        value: `${rateMb(floor.encodedBytes, floor.seconds)} (${floor.seconds.toFixed(1)} s); (d) lists at ${((first.encodedBytes / first.seconds / (floor.encodedBytes / floor.seconds)) * 100).toFixed(0)}% of it`,
        goal: '-',
        met: null,
      },
      { metric: '`backup timeline` (opens the repository: the key derivation; reads no segment): wall; peak RSS', value: `${opening.seconds.toFixed(2)} s; ${mib(opening.peakRssBytes)}`, goal: '-', met: null },
      ...listings.map((l) => ({ metric: `peak RSS, ${l.name} (largest segment read: ${mb(l.largestEncoded)} as encoded)`, value: mib(l.peakRssBytes), goal: '<= 128 MiB', met: l.peakRssBytes <= RSS_GOAL })),
      {
        metric: `peak RSS independent of the range: (a) ${whole} / (d) the first ${window / MINUTE_MS} min`,
        value: `${mib(all.peakRssBytes)} / ${mib(first.peakRssBytes)} = ${(all.peakRssBytes / first.peakRssBytes).toFixed(2)}x`,
        goal: `<= ${RSS_RANGE_GOAL}x`,
        met: all.peakRssBytes / first.peakRssBytes <= RSS_RANGE_GOAL,
      },
      { metric: 'page cache dropped before each run', value: listings.every((l) => l.cacheDropped) ? 'yes' : 'no', goal: '-', met: null },
    ];
    process.stdout.write(table(rows));
    const results = {
      minutes,
      rate,
      archive: {
        timeline: archive.timeline,
        from: new Date(t0).toISOString(),
        to: new Date(t0 + spanMs).toISOString(),
        batches: archive.batches,
        entries: archive.entries,
        dataBytes: archive.dataBytes,
        payloadBytes: archive.payloadBytes,
        segmentsBeforeMerge: before.length,
        segments: segments.length,
        encodedBytes: encodedTotal,
        storedBytes: storedTotal,
        largestStored,
        largestEncoded,
        writeSeconds,
        mergeSeconds,
        rssBeforeMerge,
        rssAfterMerge,
      },
      checks: checks.map((c) => ({ check: c.metric, value: c.value, ok: c.met })),
      runs: listings.map((l) => ({
        name: l.name,
        command: ['node', 'dist/cli/main.cjs', ...l.args.map((a) => (a === passwordFile ? '<password file>' : a === repoUrl ? '<repo>' : a))].join(' '),
        seconds: l.seconds,
        peakRssBytes: l.peakRssBytes,
        cpuSeconds: l.cpuSeconds,
        lines: l.lines,
        outBytes: l.outBytes,
        segments: l.segments,
        encodedBytes: l.encodedBytes,
        storedBytes: l.storedBytes,
        largestEncoded: l.largestEncoded,
        scanned: l.scanned,
        encodedMBps: l.encodedBytes / 1e6 / l.seconds,
        storedMBps: l.storedBytes / 1e6 / l.seconds,
        batchesPerSecond: l.scanned / l.seconds,
        summary: l.summary,
        cacheDropped: l.cacheDropped,
      })),
      readAlone: { ...floor, encodedMBps: floor.encodedBytes / 1e6 / floor.seconds },
      timelineCommand: { seconds: opening.seconds, peakRssBytes: opening.peakRssBytes, cpuSeconds: opening.cpuSeconds },
      node: process.version,
      cpus: os.cpus().length,
      loadAverages: { start: loadStart, end: os.loadavg() },
    };
    fs.writeFileSync(path.join(benchDir, 'changes-results.json'), JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v), 2) + '\n');
    progress(`changes: results in ${path.join(benchDir, 'changes-results.json')}`);
    // A listing or a restore that came back wrong fails the bench; a missed goal does not.
    if (checks.some((c) => c.met !== true)) {
      process.stderr.write('changes bench: a check failed (see the table)\n');
      process.exitCode = 1;
    }
  } finally {
    if (process.env.BENCH_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A database with some of the indexer's records, checkpointed and backed up by a real agent: the timeline's base. */
async function makeBase(dir: string, repoUrl: string, passwordFile: string): Promise<{ backup: string; sequence: number }> {
  const dbPath = path.join(dir, 'db');
  const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  try {
    const records = new IndexerRecords(7);
    let bytes = 0;
    while (bytes < BASE_BYTES) {
      const ops = records.nextBlock();
      await db.batch(ops);
      for (const op of ops) bytes += op.key.length + (op.type === 'put' ? op.value.length : 0);
    }
    const agent = createAgent({ dbPath, checkpointDir: path.join(dir, 'checkpoints'), backup: { repository: repoUrl, password: { file: passwordFile } }, logger: pino({ level: 'silent' }) });
    await agent.start();
    try {
      const checkpoint = await agent.createCheckpoint({ label: 'changes-bench-base' });
      const { sequence } = await dbSequence(checkpoint.path);
      const backup = await agent.createBackup({ checkpointId: checkpoint.id });
      return { backup: backup.id, sequence };
    } finally {
      await agent.stop();
    }
  } finally {
    await db.close();
  }
}

/**
 * The timeline's segments, one a second, and its base record (after the first segment, as the archiver
 * stores it: `to` the first shipment's end, `last` its last sequence number). Batch i is read at
 * t0 + floor((i+1)·1000/rate) ms: the first just after t0, the last at t0 + spanMs.
 */
async function writeArchive(repo: Repository, o: { t0: number; spanMs: number; rate: number; baseSequence: number; backup: string }): Promise<Archive> {
  const timeline = newCheckpointId(o.t0).toLowerCase();
  const total = Math.round((o.rate * o.spanMs) / SECOND_MS);
  const readAt = (i: number) => o.t0 + Math.floor(((i + 1) * SECOND_MS) / o.rate);
  const records = new IndexerRecords(1);
  const queue: IndexerOp[] = [];
  let queued = 0;
  const archive: Archive = { timeline, t0: o.t0, spanMs: o.spanMs, baseSequence: o.baseSequence, lastSequence: o.baseSequence, batches: 0, entries: 0, dataBytes: 0, payloadBytes: 0, seconds: [], markers: [], readAt };
  let next = o.baseSequence + 1;
  let minute = -1;
  let second: SegmentBatch[] = [];
  let secondEnd = o.t0 + SECOND_MS;
  const flush = async () => {
    const info: SegmentInfo = { timeline, first: second[0]!.seq, last: next - 1, from: secondEnd - SECOND_MS, to: secondEnd };
    const data = await encodeSegment(info, second);
    await repo.putObject(segmentName(info), data);
    archive.seconds.push({ first: info.first, last: info.last, to: info.to, bytes: data.length });
    if (archive.seconds.length === 1) {
      const record: BaseRecord = { version: 1, timeline, backup: o.backup, sequence: o.baseSequence, from: o.t0, to: info.to, last: info.last };
      await repo.putObject(baseName(record), Buffer.from(canonicalJson(record)));
    }
    if (archive.seconds.length % 300 === 0) progress(`changes:   ${archive.seconds.length / 60} min written`);
    second = [];
  };
  for (let i = 0; i < total; i++) {
    const at = readAt(i);
    while (at > secondEnd) {
      if (second.length > 0) await flush();
      secondEnd += SECOND_MS;
    }
    const entries: BatchEntry[] = [];
    const m = Math.floor((at - o.t0 - 1) / MINUTE_MS);
    if (m !== minute) {
      minute = m;
      const value = JSON.stringify({ minute: m, at: new Date(at).toISOString(), batch: i });
      archive.markers.push({ sequence: next, value });
      entries.push({ type: 'put', key: Buffer.from(MARKER_KEY), value: Buffer.from(value) });
      archive.dataBytes += MARKER_KEY.length + value.length;
    }
    let size = 0;
    while (size < WRITE_BYTES) {
      if (queued === queue.length) {
        queue.length = 0;
        queued = 0;
        queue.push(...records.nextBlock());
      }
      const op = queue[queued++]!;
      entries.push(op.type === 'put' ? { type: 'put', key: Buffer.from(op.key), value: op.value } : { type: 'del', key: Buffer.from(op.key) });
      size += op.key.length + (op.type === 'put' ? op.value.length : 0);
    }
    const payload = encodeBatch(next, entries);
    second.push({ seq: next, count: entries.length, payload, readAt: at });
    next += entries.length;
    archive.batches++;
    archive.entries += entries.length;
    archive.dataBytes += size;
    archive.payloadBytes += payload.length;
  }
  if (second.length > 0) await flush();
  archive.lastSequence = next - 1;
  return archive;
}

/** The segments a reader takes (the covering chain: after the merge, nothing is left beside it). */
function chainOf(listed: SizedSegment[]): SizedSegment[] {
  const sorted = [...listed].sort((a, b) => a.first - b.first);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.first !== sorted[i - 1]!.last + 1) throw new Error(`after the merge, segments overlap or leave a gap at ${sorted[i - 1]!.last}..${sorted[i]!.first}`);
  }
  return sorted;
}

/** Each segment's size as encoded: the one-second segments it holds (their headers and digests differ from the merged one's by a few hundred bytes a segment). */
function encodedSizes(segments: readonly SizedSegment[], seconds: readonly SecondSegment[]): number[] {
  let j = 0;
  return segments.map((s) => {
    let bytes = 0;
    while (j < seconds.length && seconds[j]!.last <= s.last) {
      if (seconds[j]!.first < s.first) throw new Error(`a one-second segment ${seconds[j]!.first}..${seconds[j]!.last} straddles ${s.name}`);
      bytes += seconds[j++]!.bytes;
    }
    return bytes;
  });
}

/**
 * The segments a listing from `from` to `to` (times, both in the base's window) reads, by the names, as
 * archive-changes.ts chooses them: those whose span (from, to] meets (from, to].
 */
function readRange(segments: readonly SizedSegment[], encoded: readonly number[], from: number, to: number): { segments: number; encodedBytes: number; storedBytes: number; largestEncoded: number } {
  let n = 0;
  let encodedBytes = 0;
  let storedBytes = 0;
  let largestEncoded = 0;
  segments.forEach((s, i) => {
    if (s.to <= from || s.from >= to) return;
    n++;
    encodedBytes += encoded[i]!;
    storedBytes += s.size;
    largestEncoded = Math.max(largestEncoded, encoded[i]!);
  });
  return { segments: n, encodedBytes, storedBytes, largestEncoded };
}

/** The batches read in (from, to]. */
function countBatches(a: Archive, from: number, to: number): number {
  let n = 0;
  for (let i = 0; i < a.batches; i++) {
    const at = a.readAt(i);
    if (at > from && at <= to) n++;
  }
  return n;
}

/** `backup restore --at` through the CLI, then the restored database opened: its sequence number and the marker key as of that moment. */
async function checkRestore(dir: string, cliRepo: string[], a: Archive, at: number): Promise<Row> {
  const to = path.join(dir, 'restored');
  progress(`changes: backup restore --at ${new Date(at).toISOString()} (a check, untimed)`);
  runCli(['backup', 'restore', '--at', new Date(at).toISOString(), '--to', to, ...cliRepo]);
  // What the moment holds: every batch read by then (in sequence order, the entries of each).
  let sequence = a.baseSequence;
  let marker: string | undefined;
  let m = 0;
  // Batches hold a varying number of entries: the one-second segments say which sequence numbers were
  // read by a whole second.
  for (const s of a.seconds) {
    if (s.to > at) break;
    sequence = s.last;
  }
  for (; m < a.markers.length && a.markers[m]!.sequence <= sequence; m++) marker = a.markers[m]!.value;
  const opened = (await dbSequence(to)).sequence;
  const db = new ClassicLevel<string, string>(to, { valueEncoding: 'utf8' });
  await db.open();
  let got: string | undefined;
  try {
    got = await db.get(MARKER_KEY);
  } finally {
    await db.close();
  }
  fs.rmSync(to, { recursive: true, force: true });
  return {
    metric: `\`backup restore --at\` ${Math.round((at - a.t0) / 1000)} s into the hour: the sequence number it opens with, and ${MARKER_KEY} there`,
    value: `${opened} (expected ${sequence}); ${got ?? 'absent'}`,
    goal: `${sequence}; ${marker ?? 'absent'}`,
    met: opened === sequence && got === marker,
  };
}

/** One CLI run that must succeed (the checks). */
function runCli(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`node-admin ${args.slice(0, 2).join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

interface TimedCli {
  seconds: number;
  peakRssBytes: number;
  cpuSeconds: number;
  lines: number;
  outBytes: number;
  /** The first and last 64 KiB of the output; all of it when kept. */
  head: string;
  tail: string;
  all: string | null;
}

/**
 * The CLI as its own process under GNU time (wall from spawn to exit as measured here; peak RSS and CPU
 * from GNU time), its stdout read through a pipe: lines counted, its first and last 64 KiB kept (all of
 * it when `keep`: a small output).
 */
async function timedCli(dir: string, args: string[], keep: boolean): Promise<TimedCli> {
  const report = path.join(dir, 'time-report');
  const t0 = performance.now();
  const child = spawn(GNU_TIME, ['-f', '%e %M %U %S', '-o', report, process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let lines = 0;
  let outBytes = 0;
  let head = '';
  let tail = Buffer.alloc(0);
  const kept: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    outBytes += chunk.length;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
    if (head.length < 1 << 16) head += chunk.subarray(0, 1 << 16).toString('utf8');
    tail = Buffer.concat([tail, chunk]).subarray(-(1 << 16));
    if (keep) kept.push(chunk);
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c));
  });
  const seconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`node-admin ${args.join(' ')} exited with ${code}: ${stderr.trim().split('\n').slice(-10).join('\n')}`);
  const m = /^([\d.]+) (\d+) ([\d.]+) ([\d.]+)$/.exec(fs.readFileSync(report, 'utf8').trim().split('\n').at(-1) ?? '');
  if (!m) throw new Error(`GNU time said nothing usable: ${fs.readFileSync(report, 'utf8')}`);
  return { seconds, peakRssBytes: Number(m[2]) * 1024, cpuSeconds: Number(m[3]) + Number(m[4]), lines, outBytes, head, tail: tail.toString('utf8'), all: keep ? Buffer.concat(kept).toString('utf8') : null };
}

/** A `backup changes --json` run, timed: its summary (the last line), its first batch, and every batch when kept. */
async function timedListing(dir: string, args: string[], keep: boolean): Promise<{ seconds: number; peakRssBytes: number; cpuSeconds: number; lines: number; outBytes: number; summary: ChangesSummary; batches: ChangeBatch[]; sample: ChangeBatch | null }> {
  const r = await timedCli(dir, args, keep);
  const lastLine = r.tail.trimEnd().split('\n').at(-1)!;
  const summary = (JSON.parse(lastLine) as { summary?: ChangesSummary }).summary;
  if (!summary) throw new Error(`the last line is not the summary: ${lastLine.slice(0, 200)}`);
  const firstLine = r.head.split('\n')[0]!;
  const sample = firstLine.startsWith('{"batch"') ? (JSON.parse(firstLine) as { batch: ChangeBatch }).batch : null;
  const batches = r.all === null ? [] : r.all.trimEnd().split('\n').slice(0, -1).map((l) => (JSON.parse(l) as { batch: ChangeBatch }).batch);
  return { seconds: r.seconds, peakRssBytes: r.peakRssBytes, cpuSeconds: r.cpuSeconds, lines: r.lines, outBytes: r.outBytes, summary, batches, sample };
}

/** The segments a listing over (from, to] reads, got and decoded here, nothing else: what reading alone costs. */
async function readAlone(repo: Repository, segments: readonly SizedSegment[], from: number, to: number): Promise<{ seconds: number; encodedBytes: number; segments: number; batches: number }> {
  const t0 = performance.now();
  let encodedBytes = 0;
  let n = 0;
  let batches = 0;
  for (const s of segments) {
    if (s.to <= from || s.from >= to) continue;
    const data = await repo.getObject(s.name);
    encodedBytes += data.length;
    batches += (await decodeSegment(s.name, s, data)).length;
    n++;
  }
  return { seconds: (performance.now() - t0) / 1000, encodedBytes, segments: n, batches };
}

function table(rows: Row[]): string {
  return goalTable(
    `backup changes: the built CLI, file:// repository encrypted (format 3), each run its own process (Node ${process.version}, ${os.cpus().length} CPUs); load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`,
    rows,
  );
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const rateMb = (bytes: number, seconds: number) => `${(bytes / 1e6 / seconds).toFixed(0)} MB/s`;

main().catch((err: unknown) => {
  process.stderr.write(`changes bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
