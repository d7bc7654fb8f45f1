import { randomBytes, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { startLoad } from '../agent/example-node/load.js';
import { parseLog } from '../agent/leveldb/log-reader.js';
import { encodeSegment, type BaseRecord, type SegmentBatch } from '../agent/log-archive/segment.js';
import { CHUNK_SIZE, canonicalJson, type IndexFile, type Lock, type Snapshot, type Tree } from '../agent/repository/format.js';
import { progress, sleep } from './progress.js';
import { IndexerRecords } from './indexer-records.js';

/**
 * The compression benchmark's data: what a repository really stores, made here by real writes into
 * real LevelDB databases (classic-level, default options, as a node runs them):
 *
 *   example   the example node's own load (agent/example-node/load.ts): one random 1 KiB value written
 *             over and over, so it compresses far better than any real node's data
 *   random    a fresh random 1 KiB value per put (as bench/bench-db.ts builds): incompressible values
 *   indexer   bench/indexer-records.ts: JSON records, hex hashes, counters, signatures
 *
 * From each database: its write-ahead logs (every .log hard-linked as it appears, so the copy keeps
 * what LevelDB wrote before it deleted the file) cut into CHUNK_SIZE blobs as a backup stores them;
 * archived log segments made from those logs' batches by the log archive's own encoder; its MANIFEST
 * after the load's flushes and compactions; its tables in CHUNK_SIZE blobs. And the repository's JSON
 * objects in the shapes of agent/repository/format.ts, at the size of a 1 GiB database's backup.
 */

export type DataKind = 'log' | 'segment' | 'manifest' | 'table' | 'json';

export interface DataSet {
  name: string;
  kind: DataKind;
  /** What each item is, for the table's legend. */
  about: string;
  items: Buffer[];
}

export interface DataOptions {
  dir: string;
  /** MiB of write-ahead log to capture from each load (the indexer's: at least a merged segment's worth). */
  logMiB: number;
  /** MiB of records the indexer load writes in all (its MANIFEST's history of compactions grows with it). */
  indexerMiB: number;
}

const MiB = 1024 * 1024;
/** A fresh segment: about what one 1 s pass of the archive holds at a few thousand writes a second. */
const FRESH_SEGMENT = 1 * MiB;
/** A merged segment (agent/log-archive/segment-merger.ts, MAX_MERGED_BYTES). */
const MERGED_SEGMENT = 32 * MiB;
/** Tables to take from each database. */
const TABLE_BYTES = 8 * MiB;

export async function buildDataSets(opts: DataOptions): Promise<DataSet[]> {
  fs.rmSync(opts.dir, { recursive: true, force: true });
  fs.mkdirSync(opts.dir, { recursive: true });
  const sets: DataSet[] = [];

  progress('compression data: the example node\'s load (agent/example-node/load.ts)');
  const example = await runLoad(path.join(opts.dir, 'example'), opts.logMiB, async (db, enough) => {
    const load = startLoad(db, 50_000, pino({ level: 'silent' }));
    while (!enough()) await sleep(20);
    await load.stop();
  });
  progress('compression data: random 1 KiB values');
  const random = await runLoad(path.join(opts.dir, 'random'), opts.logMiB, async (db, enough) => {
    // Logs first, then on to about four times as much for tables and compactions.
    let written = 0;
    const target = 4 * opts.logMiB * MiB;
    while (!enough() || written < target) {
      const values = randomFillSync(Buffer.allocUnsafe(100 * 1024));
      const ops = [];
      for (let j = 0; j < 100; j++) ops.push({ type: 'put' as const, key: `k/${String(Math.floor(Math.random() * 1e9)).padStart(10, '0')}`, value: values.subarray(j * 1024, (j + 1) * 1024) });
      await db.batch(ops);
      written += 100 * 1024;
    }
  });
  progress(`compression data: indexer records (${opts.indexerMiB} MiB)`);
  const indexer = await runLoad(path.join(opts.dir, 'indexer'), Math.max(opts.logMiB, MERGED_SEGMENT / MiB), async (db, enough) => {
    const records = new IndexerRecords(1);
    let written = 0;
    while (!enough() || written < opts.indexerMiB * MiB) {
      const ops = records.nextBlock();
      for (const op of ops) written += op.key.length + (op.type === 'put' ? op.value.length : 0);
      await db.batch(ops);
    }
  });

  for (const [name, run] of [['example', example], ['random', random], ['indexer', indexer]] as const) {
    const logs = run.logs.slice();
    let logBytes = 0;
    const kept: Buffer[] = [];
    for (const log of logs) {
      if (logBytes >= opts.logMiB * MiB) break;
      kept.push(log);
      logBytes += log.length;
    }
    sets.push({ name: `log/${name}`, kind: 'log', about: `${name} load: its .log files in ${CHUNK_SIZE / MiB} MiB blobs`, items: kept.flatMap((b) => chunks(b, CHUNK_SIZE)) });
    const batches = run.logs.flatMap((b) => parseLog(b).records.map((r) => r.payload));
    sets.push({ name: `segment/${name}`, kind: 'segment', about: `${name} load: fresh archived segments (~${FRESH_SEGMENT / MiB} MiB)`, items: await segments(batches, FRESH_SEGMENT, Math.ceil((opts.logMiB * MiB) / FRESH_SEGMENT)) });
    if (name === 'indexer') {
      sets.push({ name: 'segment/indexer-merged', kind: 'segment', about: 'indexer load: one merged archived segment (up to 32 MiB)', items: await segments(batches, MERGED_SEGMENT, 1) });
    }
    sets.push({ name: `manifest/${name}`, kind: 'manifest', about: `${name} load: its MANIFEST after ${run.manifestNote}`, items: [run.manifest] });
    sets.push({ name: `table/${name}`, kind: 'table', about: `${name} load: .ldb tables in ${CHUNK_SIZE / MiB} MiB blobs`, items: run.tables.flatMap((b) => chunks(b, CHUNK_SIZE)) });
  }
  sets.push(...jsonObjects());
  return sets;
}

interface LoadRun {
  logs: Buffer[];
  manifest: Buffer;
  manifestNote: string;
  tables: Buffer[];
}

/**
 * Runs `load` against a new database until at least `logMiB` of write-ahead log has been captured and a
 * table written (the load may go on past that: it is told, and decides), then reads what the database left.
 */
async function runLoad(dir: string, logMiB: number, load: (db: ClassicLevel<string, Buffer>, enough: () => boolean) => Promise<void>): Promise<LoadRun> {
  const dbPath = path.join(dir, 'db');
  const captured = path.join(dir, 'logs');
  fs.mkdirSync(captured, { recursive: true });
  const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  const linked = new Set<string>();
  const capture = () => {
    for (const name of fs.readdirSync(dbPath)) {
      if (!name.endsWith('.log') || linked.has(name)) continue;
      try {
        fs.linkSync(path.join(dbPath, name), path.join(captured, name));
        linked.add(name);
      } catch {
        // deleted between the listing and the link: too short-lived to matter
      }
    }
  };
  capture();
  const timer = setInterval(capture, 5);
  const capturedBytes = () => [...linked].reduce((s, n) => s + fs.statSync(path.join(captured, n)).size, 0);
  try {
    // Enough once the logs are captured and at least one memtable was flushed into a table.
    await load(db, () => capturedBytes() >= logMiB * MiB && fs.readdirSync(dbPath).some((n) => n.endsWith('.ldb')));
    capture();
  } finally {
    clearInterval(timer);
  }
  const compactions = compactionCount(db);
  await db.close();
  const logs = [...linked].sort().map((n) => fs.readFileSync(path.join(captured, n)));
  const names = fs.readdirSync(dbPath).sort();
  const manifestName = names.find((n) => n.startsWith('MANIFEST-'));
  if (!manifestName) throw new Error(`${dbPath} has no MANIFEST`);
  const tables: Buffer[] = [];
  let tableBytes = 0;
  for (const n of names) {
    if (!n.endsWith('.ldb') || tableBytes >= TABLE_BYTES) continue;
    const b = fs.readFileSync(path.join(dbPath, n));
    tables.push(b);
    tableBytes += b.length;
  }
  if (tables.length === 0) throw new Error(`${dbPath} has no tables: the load wrote too little`);
  return { logs, manifest: fs.readFileSync(path.join(dbPath, manifestName)), manifestNote: `${compactions} flushes and compactions`, tables };
}

/** Flushes and compactions since open: the sum of the per-level compaction counts is not exposed, the MB written is. */
function compactionCount(db: ClassicLevel<string, Buffer>): string {
  let writeMB = 0;
  for (const line of db.getProperty('leveldb.stats').split('\n')) {
    const m = /^\s*\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+(\d+)\s*$/.exec(line);
    if (m) writeMB += Number(m[1]);
  }
  return `${writeMB} MB of`;
}

function chunks(b: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < b.length; at += size) out.push(b.subarray(at, Math.min(b.length, at + size)));
  return out;
}

/** `count` archived segments of about `size` bytes of batches each, by the archive's encoder. */
async function segments(batches: Buffer[], size: number, count: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let readAt = 1_700_000_000_000;
  let i = 0;
  while (i < batches.length && out.length < count) {
    const group: SegmentBatch[] = [];
    let bytes = 0;
    while (i < batches.length && (group.length === 0 || bytes + batches[i]!.length <= size)) {
      const payload = batches[i++]!;
      const seq = Number(payload.readBigUInt64LE(0));
      group.push({ seq, count: payload.readUInt32LE(8), payload, readAt });
      bytes += payload.length;
      if (group.length % 50 === 0) readAt += 1000; // passes of a second
    }
    // Batches from separate databases' logs never mix: each load's logs alone feed it.
    const first = group[0]!.seq;
    const lastBatch = group[group.length - 1]!;
    out.push(await encodeSegment({ timeline: '20250101t000000000z-abcd', first, last: lastBatch.seq + lastBatch.count - 1, from: readAt - 1000, to: readAt }, group));
  }
  return out;
}

/** The repository's JSON objects (agent/repository/format.ts), sized as for a backup of a 1 GiB database. */
function jsonObjects(): DataSet[] {
  const id = () => randomBytes(32).toString('hex');
  const files: Tree['files'] = [];
  let fileNumber = 1000;
  for (let i = 0; i < 540; i++) {
    fileNumber += 1 + Math.floor(Math.random() * 40);
    const size = 2 * MiB + Math.floor(Math.random() * 4096) - 2048;
    files.push({ name: `${String(fileNumber).padStart(6, '0')}.ldb`, size, chunks: [id(), id(), ...(size > 2 * MiB ? [id()] : [])] });
  }
  files.push({ name: 'CURRENT', size: 16, chunks: [id()] });
  files.push({ name: `MANIFEST-${String(fileNumber + 3).padStart(6, '0')}`, size: 81_234, chunks: [id()] });
  files.push({ name: `${String(fileNumber + 4).padStart(6, '0')}.log`, size: 3_456_789, chunks: [id(), id(), id(), id()] });
  const tree: Tree = { version: 1, files };
  const index: IndexFile = { version: 1, packs: [] };
  const blobIds = files.flatMap((f) => f.chunks);
  for (let p = 0; p * 8 < blobIds.length; p++) {
    const blobs: [string, number, number][] = blobIds.slice(p * 8, p * 8 + 8).map((b, k) => [b, k * MiB, MiB - Math.floor(Math.random() * 64)]);
    index.packs.push({ id: id(), size: 8 * MiB + 4096, blobs });
  }
  const now = new Date().toISOString();
  const snapshot: Snapshot = {
    version: 1,
    id: '20250101t120000123z-1a2b',
    createdAt: now,
    hostname: 'validator-eu-3',
    pinned: false,
    checkpoint: { id: '20250101t115959001z-9f8e', label: 'nightly', createdAt: now, trigger: 'schedule' },
    tree: id(),
    files: files.length,
    bytes: files.reduce((s, f) => s + f.size, 0),
  };
  const lock: Lock = { version: 1, id: 'l-20250101t120000000z-77aa', exclusive: false, hostname: 'validator-eu-3', pid: 41_234, operation: 'backup', createdAt: now, expiresAt: now };
  const base: BaseRecord = { version: 1, timeline: '20250101t000000000z-abcd', backup: '20250101t120000123z-1a2b', sequence: 123_456_789, from: 1_735_732_800_000, to: 1_735_732_801_000, last: 123_456_999 };
  return [
    { name: 'json/tree', kind: 'json', about: `a snapshot's tree: ${files.length} files, ${blobIds.length} chunk ids`, items: [Buffer.from(canonicalJson(tree))] },
    { name: 'json/index', kind: 'json', about: `an index object: ${index.packs.length} packs of 8 blobs`, items: [Buffer.from(canonicalJson(index))] },
    { name: 'json/small', kind: 'json', about: 'a snapshot, a lock and a base record', items: [snapshot, lock, base].map((o) => Buffer.from(canonicalJson(o))) },
  ];
}
