import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { progress } from './progress.js';
import { waitUntilStable } from './wait-stable.js';

/**
 * The benchmark's database: `keyCount` keys of `valueBytes` random (incompressible) bytes, default
 * classic-level options (4 MiB memtable, 2 MiB tables), as a real node would have it. Building one
 * takes about a minute per GB, so a populated database is kept in <dataDir>/db and reused while it
 * still matches the requested size; the marker beside it is written only once a build completed.
 */

export type BenchLevel = ClassicLevel<string, Buffer>;

export interface BenchDbInfo {
  dbPath: string;
  keyCount: number;
  valueBytes: number;
  reused: boolean;
  /** Seconds the build took: in this run, or (reused) when it was built. */
  buildSeconds: number;
  builtAt: string;
  bytes: number;
  tables: number;
}

interface Marker {
  format: 1;
  targetBytes: number;
  keyCount: number;
  valueBytes: number;
  buildSeconds: number;
  builtAt: string;
}

const VALUE_BYTES = 1024;
const BATCH = 1000;
const MARKER = 'bench-db.json';

/** Zero-padded so that key order is numeric order, as a node's ids often are. */
export function benchKey(i: number): string {
  return `k/${String(i).padStart(10, '0')}`;
}

export function openBenchDb(dbPath: string): BenchLevel {
  // Defaults on purpose: the product must cope with what a node really runs.
  return new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', createIfMissing: false });
}

export async function prepareBenchDb(dataDir: string, targetBytes: number, forceRebuild: boolean): Promise<BenchDbInfo> {
  const dbPath = path.join(dataDir, 'db');
  const markerPath = path.join(dataDir, MARKER);
  const keyCount = Math.ceil(targetBytes / VALUE_BYTES);
  const marker = readMarker(markerPath);
  if (!forceRebuild && marker && marker.targetBytes === targetBytes && marker.keyCount === keyCount && fs.existsSync(path.join(dbPath, 'CURRENT'))) {
    const files = dbFiles(dbPath);
    // Overwrites by the write-latency phase leave garbage until compactions catch up: a database that
    // grew that way is still the same data set; one that shrank or doubled is not.
    if (files.bytes >= 0.9 * targetBytes && files.bytes <= 2 * targetBytes) {
      progress(`reusing the database in ${dbPath} (${mb(files.bytes)}, ${files.tables} tables; built ${marker.builtAt} in ${marker.buildSeconds} s); BENCH_REBUILD=1 or deleting ${dataDir} rebuilds it`);
      return { dbPath, keyCount, valueBytes: VALUE_BYTES, reused: true, buildSeconds: marker.buildSeconds, builtAt: marker.builtAt, ...files };
    }
    progress(`the database in ${dbPath} is ${mb(files.bytes)}, not about ${mb(targetBytes)}: rebuilding it`);
  }

  fs.rmSync(markerPath, { force: true });
  fs.rmSync(dbPath, { recursive: true, force: true });
  fs.mkdirSync(dataDir, { recursive: true });
  progress(`building a ${mb(targetBytes)} database in ${dbPath}: ${keyCount} keys of ${VALUE_BYTES} random bytes, in random order`);
  const started = performance.now();
  const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  try {
    // Random order, not ascending: ascending keys give non-overlapping tables that LevelDB merely moves
    // down a level, and a database of 4 MiB flush outputs that no real node has. Random order makes
    // compactions cut 2 MiB tables over every level (~540 tables per GB), like a database that has lived.
    const order = shuffledIndexes(keyCount);
    let lastReport = started;
    for (let i = 0; i < keyCount; i += BATCH) {
      const n = Math.min(BATCH, keyCount - i);
      const values = randomFillSync(Buffer.allocUnsafe(n * VALUE_BYTES));
      const ops = [];
      for (let j = 0; j < n; j++) {
        ops.push({ type: 'put' as const, key: benchKey(order[i + j]!), value: values.subarray(j * VALUE_BYTES, (j + 1) * VALUE_BYTES) });
      }
      await db.batch(ops);
      if (performance.now() - lastReport > 10_000) {
        lastReport = performance.now();
        progress(`  ${Math.round(((i + n) / keyCount) * 100)}% written`);
      }
    }
    progress(`  written in ${((performance.now() - started) / 1000).toFixed(1)} s; waiting for compactions to settle`);
    await waitForCompactions(db, dbPath, 120_000);
  } finally {
    await db.close();
  }
  const buildSeconds = Math.round((performance.now() - started) / 100) / 10;
  const builtAt = new Date().toISOString();
  const files = dbFiles(dbPath);
  const written: Marker = { format: 1, targetBytes, keyCount, valueBytes: VALUE_BYTES, buildSeconds, builtAt };
  fs.writeFileSync(markerPath, JSON.stringify(written, null, 2) + '\n');
  progress(`database built in ${buildSeconds} s: ${mb(files.bytes)}, ${files.tables} tables`);
  return { dbPath, keyCount, valueBytes: VALUE_BYTES, reused: false, buildSeconds, builtAt, ...files };
}

function readMarker(markerPath: string): Marker | null {
  try {
    const m = JSON.parse(fs.readFileSync(markerPath, 'utf8')) as Partial<Marker>;
    return m.format === 1 ? (m as Marker) : null;
  } catch {
    return null;
  }
}

function shuffledIndexes(n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

export interface DbFiles {
  tables: number;
  bytes: number;
}

/** Tables and total bytes of the database directory (every regular file: tables, WAL, MANIFEST). */
export function dbFiles(dbPath: string): DbFiles {
  let tables = 0;
  let bytes = 0;
  for (const name of fs.readdirSync(dbPath)) {
    let size: number;
    try {
      size = fs.statSync(path.join(dbPath, name)).size;
    } catch {
      continue; // deleted by a compaction while we listed
    }
    bytes += size;
    if (/\.(ldb|sst)$/.test(name)) tables++;
  }
  return { tables, bytes };
}

export interface LevelSnapshot {
  tables: number;
  bytes: number;
  /** Tables per level, 0..6, as LevelDB counts them. */
  filesPerLevel: number[];
  /** MB written by flushes and compactions since the database was opened (leveldb.stats). */
  compactionWriteMB: number;
  manifestBytes: number;
}

export function snapshotLevels(db: BenchLevel, dbPath: string): LevelSnapshot {
  const filesPerLevel: number[] = [];
  for (let level = 0; level < 7; level++) filesPerLevel.push(Number(db.getProperty(`leveldb.num-files-at-level${level}`)));
  let compactionWriteMB = 0;
  // Rows: level, files, size MB, time s, read MB, write MB.
  for (const line of db.getProperty('leveldb.stats').split('\n')) {
    const m = /^\s*\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+(\d+)\s*$/.exec(line);
    if (m) compactionWriteMB += Number(m[1]);
  }
  let manifestBytes = 0;
  for (const name of fs.readdirSync(dbPath)) {
    if (!name.startsWith('MANIFEST-')) continue;
    try {
      manifestBytes += fs.statSync(path.join(dbPath, name)).size;
    } catch {
      // replaced under us: only at open, not while we run
    }
  }
  return { ...dbFiles(dbPath), filesPerLevel, compactionWriteMB, manifestBytes };
}

/**
 * Waits until LevelDB's background work stops (same table set and compaction counters for 3 s), so a
 * measurement on an "idle" database is not one on a database still compacting after its build or open.
 */
export async function waitForCompactions(db: BenchLevel, dbPath: string, timeoutMs: number): Promise<void> {
  if (!(await waitUntilStable(() => `${db.getProperty('leveldb.stats')}|${tableNames(dbPath)}`, timeoutMs))) {
    progress(`  compactions still running after ${timeoutMs / 1000} s; going on`);
  }
}

function tableNames(dbPath: string): string {
  return fs
    .readdirSync(dbPath)
    .filter((n) => /\.(ldb|sst)$/.test(n))
    .sort()
    .join(',');
}

export function mb(bytes: number): string {
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(2)} GiB` : `${(bytes / (1 << 20)).toFixed(0)} MiB`;
}
