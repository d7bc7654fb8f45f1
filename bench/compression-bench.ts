import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Compression, FRAME_SIZE, MIN_SAVING, compressPlaintext, decompressPlaintext, createDecompressor, policyForFile, type CompressionPolicy } from '../agent/repository/compression.js';
import { brotli, candidates, zstdSources, type Codec } from './compression-codecs.js';
import { buildDataSets, type DataSet } from './compression-data.js';
import { measureDeviceFloor } from './device-floor.js';
import { envNumber } from './env-number.js';
import { progress } from './progress.js';

/**
 * The compression benchmark (issue 18, item 5): ratio and speed of each candidate on the data a
 * repository really stores (bench/compression-data.ts), one thread, synchronous calls as a worker
 * thread makes them. Beside them, measured in the same run, what a backup already spends per byte
 * (SHA-256 and AES-256-GCM of the same blobs) and the device's limit (read + write at once, O_DIRECT:
 * bench/device-floor.ts), so each speed reads against what it would slow down.
 *
 * Speeds are MB (10^6 bytes) of uncompressed bytes, in and out alike, per second of this thread's CPU
 * time; each the best of BENCH_CMP_ROUNDS rounds (3) of at least 0.2 s, every candidate's rounds in turns.
 * The device floor is wall time.
 *
 * Environment: BENCH_CMP_LOG_MIB (8), BENCH_CMP_INDEXER_MIB (128), BENCH_CMP_ROUNDS, BENCH_DIR
 * (<repo>/.scratch/bench).
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MiB = 1024 * 1024;
const MIN_ROUND_MS = 200;

interface Cell {
  set: string;
  codec: string;
  source: string;
  raw: number;
  stored: number;
  compressMBps: number;
  decompressMBps: number;
  /** The repository codec's streaming decompressor, in 64 KiB pieces. */
  streamMBps?: number;
  /** The repository codec: how many items it kept compressed. */
  kept?: number;
}

async function main(): Promise<void> {
  const rounds = envNumber('BENCH_CMP_ROUNDS', 3, true);
  const benchDir = path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench'));
  const dir = path.join(benchDir, 'compression');
  const sets = await buildDataSets({ dir, logMiB: envNumber('BENCH_CMP_LOG_MIB', 8, true), indexerMiB: envNumber('BENCH_CMP_INDEXER_MIB', 128, true) });

  progress('peers: SHA-256 and AES-256-GCM of 1 MiB blobs, and the device floor');
  const tables = sets.find((s) => s.name === 'table/random')!.items;
  const sha = speed(tables, rounds, (b) => createHash('sha256').update(b).digest());
  const key = randomBytes(32);
  const gcm = speed(tables, rounds, (b) => {
    const c = createCipheriv('aes-256-gcm', key, randomBytes(12));
    c.update(b);
    c.final();
    return c.getAuthTag();
  });
  const floor = await measureDeviceFloor(path.join(dir, 'indexer', 'db'), path.join(dir, 'floor.tmp'));
  fs.rmSync(path.join(dir, 'floor.tmp'), { force: true });
  const floorMBps = floor.bytesRead / 1e6 / floor.seconds;

  const codecs = candidates();
  const cells: Cell[] = [];
  const ours: Cell[] = [];
  for (const set of sets) {
    progress(`${set.name}: ${set.items.length} items, ${(bytesOf(set.items) / MiB).toFixed(2)} MiB`);
    // Every candidate's rounds in turns (one round of each, then again): each meets the machine's other
    // work alike, where one after the other the last could meet a busier machine than the first.
    const pending = [...codecs.map((codec) => measure(set, codec)), measureOurs(set)];
    for (let r = 0; r < rounds; r++) for (const p of pending) for (const t of p.timings) t.best = Math.min(t.best, secondsPerPass(t.items, 1, t.fn));
    for (const p of pending.slice(0, -1)) cells.push(p.done());
    ours.push(pending.at(-1)!.done());
  }
  progress('probes: the first 64 KiB of each blob, at brotli quality 1');
  const probes = sets.filter((s) => s.kind === 'log' || s.kind === 'table' || s.kind === 'segment').map((s) => probe(s, rounds));

  const out: string[] = [];
  out.push('', `Compression: Node ${process.version}, one thread; zstd from ${zstdSources()}`);
  out.push(`Peers in this run: SHA-256 ${mbps(sha)} MB/s, AES-256-GCM ${mbps(gcm)} MB/s (1 MiB blobs, one core); device floor ${mbps(floorMBps)} MB/s (read + write at once, O_DIRECT, ${(floor.bytesRead / MiB).toFixed(0)} MiB)`);
  out.push('stored: compressed size / raw size (lower is better); speeds: MB of raw bytes per second of one core; "x floor": compress speed / device floor');
  out.push(`"repository": agent/repository/compression.ts as a writer calls it (policyForFile: tables never, the rest try; brotli q1 in ${FRAME_SIZE / MiB} MiB frames), mode byte and frame headers counted; decompress one-shot, and streamed in 64 KiB pieces`, '');
  for (const set of sets) {
    out.push(`${set.name} (${set.about}; ${set.items.length} items, ${(bytesOf(set.items) / MiB).toFixed(2)} MiB)`, '');
    out.push('| codec | source | stored | compress MB/s | x floor | decompress MB/s |', '|---|---|---:|---:|---:|---:|');
    for (const c of cells.filter((c) => c.set === set.name)) {
      out.push(`| ${c.codec} | ${c.source} | ${pct(c.stored / c.raw)} | ${mbps(c.compressMBps)} | ${(c.compressMBps / floorMBps).toFixed(2)} | ${mbps(c.decompressMBps)} |`);
    }
    const o = ours.find((c) => c.set === set.name)!;
    out.push(
      o.codec === 'never'
        ? `| repository, never | compression.ts | ${pct(o.stored / o.raw)} | not compressed | | |`
        : `| repository, ${o.codec} | compression.ts | ${pct(o.stored / o.raw)} | ${mbps(o.compressMBps)} | ${(o.compressMBps / floorMBps).toFixed(2)} | ${o.kept ? `${mbps(o.decompressMBps)}, streamed ${mbps(o.streamMBps ?? 0)}` : 'kept as is: no copy'} |`,
    );
    out.push('');
  }
  // The two views docs/benchmarks.md carries: stored size of every kind of data by codec, and speeds on the indexer's log.
  const label = (c: Cell) => (c.source === 'node:zlib' ? c.codec : `${c.codec} (npm)`);
  const columns = [...new Map(cells.map((c) => [label(c), c])).keys()];
  out.push('Summary: stored / raw, by codec', '');
  out.push(`| data | ${columns.join(' | ')} | repository |`, `|---|${columns.map(() => '---:|').join('')}---:|`);
  for (const set of sets) {
    const row = columns.map((col) => {
      const c = cells.find((x) => x.set === set.name && label(x) === col);
      return c ? pct(c.stored / c.raw) : '';
    });
    const o = ours.find((c) => c.set === set.name)!;
    out.push(`| ${set.name} | ${row.join(' | ')} | ${pct(o.stored / o.raw)} |`);
  }
  out.push('');
  out.push('Summary: MB/s of one core, compress / decompress', '');
  const speedSets = ['log/indexer', 'segment/indexer-merged', 'log/random'];
  out.push(`| codec | ${speedSets.join(' | ')} |`, `|---|${speedSets.map(() => '---:|').join('')}`);
  for (const col of columns) {
    const row = speedSets.map((name) => {
      const c = cells.find((x) => x.set === name && label(x) === col);
      return c ? `${mbps(c.compressMBps)} / ${mbps(c.decompressMBps)}` : '';
    });
    out.push(`| ${col} | ${row.join(' | ')} |`);
  }
  const oursRow = speedSets.map((name) => {
    const o = ours.find((x) => x.set === name)!;
    return o.kept ? `${mbps(o.compressMBps)} / ${mbps(o.decompressMBps)}` : `${mbps(o.compressMBps)} / kept as is`;
  });
  out.push(`| repository | ${oursRow.join(' | ')} |`, '');
  out.push('Does it pay? Brotli q1 on the first 64 KiB of each blob, against compressing the blob whole (saving at least 1/16) and hashing it (SHA-256)', '');
  out.push('| data | blobs | probe says it pays | whole blob pays | probe µs per blob | probe / SHA-256 of the blob |', '|---|---:|---:|---:|---:|---:|');
  for (const p of probes) out.push(`| ${p.set} | ${p.items} | ${p.probePays} | ${p.wholePays} | ${p.probeMicros.toFixed(0)} | ${pct(p.probeMicros / p.shaMicros)} |`);
  out.push('');
  const seg = ours.find((c) => c.set === 'segment/indexer')!;
  const log = ours.find((c) => c.set === 'log/indexer')!;
  out.push('What it costs where it runs (indexer data; brotli q1 as the repository writes it):');
  out.push(`- log archive at 1 MB/s of batches (about 1000 writes/s of 1 KiB): ${pct(1 / seg.compressMBps)} of one core; a day's 86.4 GB of batches stored as ${((86.4 * seg.stored) / seg.raw).toFixed(1)} GB`);
  out.push(`- a backup's .log of 256 MiB: ${((256 * MiB) / 1e6 / log.compressMBps).toFixed(2)} core-seconds, against ${((256 * MiB) / 1e6 / floorMBps).toFixed(2)} s to move it at the device floor`);
  out.push(`- restore: the archive's segments decompress at ${mbps(seg.decompressMBps)} MB/s of one core (streamed: ${mbps(seg.streamMBps ?? 0)})`);
  out.push('');
  process.stdout.write(out.join('\n') + '\n');
  const resultsPath = path.join(benchDir, 'compression-results.json');
  fs.writeFileSync(resultsPath, JSON.stringify({ node: process.version, peers: { sha256MBps: sha, aesGcmMBps: gcm, floorMBps }, cells, ours, probes }, null, 2) + '\n');
  progress(`compression: results in ${resultsPath}`);
  fs.rmSync(dir, { recursive: true, force: true });
}

/** One thing to time: a pass of `fn` over `items`; `best` is the least CPU seconds a round took. */
interface Timing {
  items: Buffer[];
  fn: (b: Buffer, i: number) => unknown;
  best: number;
}

interface Pending {
  timings: Timing[];
  /** The cell, once every timing ran. */
  done(): Cell;
}

const timing = (items: Buffer[], fn: Timing['fn']): Timing => ({ items, fn, best: Number.POSITIVE_INFINITY });

/** What agent/repository/compression.ts does with the set, as a writer calls it. */
function measureOurs(set: DataSet): Pending {
  const policy: CompressionPolicy = set.kind === 'table' ? policyForFile('000005.ldb') : policyForFile('000004.log');
  const results = set.items.map((b) => compressPlaintext(b, policy));
  const plaintexts = results.map((r) => Buffer.concat(r.pieces));
  set.items.forEach((b, i) => {
    if (!decompressPlaintext(plaintexts[i]!, b.length).equals(b)) throw new Error(`the repository codec does not round-trip ${set.name} item ${i}`);
  });
  const raw = bytesOf(set.items);
  const streamOne = (p: Buffer, i: number) => {
    const d = createDecompressor(p[0]!, set.items[i]!.length);
    for (let at = 1; at < p.length; at += 64 * 1024) d.push(p.subarray(at, at + 64 * 1024));
    d.end();
  };
  const compress = timing(set.items, (b) => compressPlaintext(b, policy));
  const decompress = timing(plaintexts, (p, i) => decompressPlaintext(p, set.items[i]!.length));
  const stream = timing(plaintexts, streamOne);
  return {
    timings: [compress, decompress, stream],
    done: () => ({
      set: set.name,
      codec: policy === 'never' ? 'never' : 'try',
      source: 'agent/repository/compression.ts',
      raw,
      stored: bytesOf(plaintexts),
      compressMBps: raw / 1e6 / compress.best,
      decompressMBps: raw / 1e6 / decompress.best,
      streamMBps: raw / 1e6 / stream.best,
      kept: results.filter((r) => r.mode !== Compression.none).length,
    }),
  };
}

interface Probe {
  set: string;
  items: number;
  probePays: number;
  wholePays: number;
  probeMicros: number;
  shaMicros: number;
}

const PROBE = 64 * 1024;

/** A "does it pay?" probe: brotli q1 on the first 64 KiB of each item, its verdict against the whole item's, and its cost. */
function probe(set: DataSet, rounds: number): Probe {
  const q1 = brotli(1);
  const pays = (b: Buffer) => q1.compress(b).length <= b.length * (1 - MIN_SAVING);
  const samples = set.items.map((b) => b.subarray(0, PROBE));
  const microsPerItem = (items: Buffer[], fn: (b: Buffer) => unknown) => (secondsPerPass(items, rounds, fn) * 1e6) / items.length;
  return {
    set: set.name,
    items: set.items.length,
    probePays: samples.filter(pays).length,
    wholePays: set.items.filter(pays).length,
    probeMicros: microsPerItem(samples, (b) => q1.compress(b)),
    shaMicros: microsPerItem(set.items, (b) => createHash('sha256').update(b).digest()),
  };
}

function measure(set: DataSet, codec: Codec): Pending {
  const bodies = set.items.map((b) => codec.compress(b));
  // Every body must come back as its item: a codec that loses bytes has no speed worth printing.
  set.items.forEach((b, i) => {
    if (!codec.decompress(bodies[i]!, b.length).equals(b)) throw new Error(`${codec.name} (${codec.source}) does not round-trip ${set.name} item ${i}`);
  });
  const raw = bytesOf(set.items);
  const compress = timing(set.items, (b) => codec.compress(b));
  const decompress = timing(bodies, (b, i) => codec.decompress(b, set.items[i]!.length));
  return {
    timings: [compress, decompress],
    done: () => ({
      set: set.name,
      codec: codec.name,
      source: codec.source,
      raw,
      stored: bytesOf(bodies),
      compressMBps: raw / 1e6 / compress.best,
      decompressMBps: raw / 1e6 / decompress.best,
    }),
  };
}

/**
 * MB per second of one core's CPU time over `items` (or `raw` bytes per pass when the items are not what
 * is counted), best of `rounds`. CPU time, not wall time: the machine's cores are shared, and what a
 * codec costs a backup is core time; the work here is all synchronous on this thread.
 */
function speed(items: Buffer[], rounds: number, fn: (b: Buffer, i: number) => unknown, raw = bytesOf(items)): number {
  return raw / 1e6 / secondsPerPass(items, rounds, fn);
}

/** CPU seconds one pass of `fn` over `items` takes: the least over `rounds` rounds of at least MIN_ROUND_MS. */
function secondsPerPass(items: Buffer[], rounds: number, fn: (b: Buffer, i: number) => unknown): number {
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    let passes = 0;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    do {
      for (let i = 0; i < items.length; i++) fn(items[i]!, i);
      passes++;
    } while (performance.now() - t0 < MIN_ROUND_MS);
    const cpu = process.cpuUsage(cpu0);
    best = Math.min(best, (cpu.user + cpu.system) / 1e6 / passes);
  }
  return best;
}

const bytesOf = (items: Buffer[]) => items.reduce((s, b) => s + b.length, 0);
const mbps = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const pct = (v: number) => `${(v * 100).toFixed(1)} %`;

main().catch((err: unknown) => {
  process.stderr.write(`compression bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
