import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker, isMainThread } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_KDF_COST,
  EnvelopeReader,
  EnvelopeWriter,
  blobId,
  deriveKeys,
  newMasterKey,
  open,
  openAfterByteInto,
  openInto,
  seal,
  sealInto,
  sealedLength,
  unwrapMasterKey,
  wrapMasterKey,
} from '../agent/repository/crypto/index.js';
import { alignedBuffers } from '../agent/fs/direct-io.js';
import { envNumber } from './env-number.js';
import { progress } from './progress.js';

/**
 * The format 3 crypto micro-benchmark, one thread (a worker thread, as the crypto pool runs it): MB/s of blob ids, of seal/open of a 1 MiB blob (one
 * chunk) and of an 8 MiB object in 64 KiB chunks (a log segment's chunking), each beside its peer
 * measured in the same rounds on the same bytes: SHA-256 (what format 2 computes per blob) for blob
 * ids, and bare AES-256-GCM from node:crypto (one key, one nonce, 64 KiB updates, no envelope) for
 * seal and open; the ratio is ours over the peer's time. Then the cost of one small seal and the time
 * scrypt takes to unlock a key file at the default cost (and at the neighbouring N, for the choice).
 *
 * Rounds alternate ours and the peer's, and the median round is kept, so that load from other processes
 * (this machine is shared) falls on both alike; the load average is printed with the table.
 *
 * Environment: BENCH_CRYPTO_ROUNDS (7), BENCH_CRYPTO_ROUND_MS (300), BENCH_CRYPTO_SCRYPT_RUNS (3),
 * BENCH_DIR (<repo>/.scratch/bench).
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MIB = 1 << 20;

interface Row {
  name: string;
  ours: number;
  peerName: string;
  peer: number;
}

/** Runs `op` (which processes `bytes` bytes) repeatedly for about `ms` milliseconds; MB/s. */
function rate(op: () => unknown, bytes: number, ms: number): number {
  op(); // warm
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    op();
    n++;
    now = performance.now();
  }
  return (n * bytes) / 1e6 / ((now - start) / 1000);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function compare(name: string, ours: () => unknown, peerName: string, peer: () => unknown, bytes: number, rounds: number, ms: number): Row {
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < rounds; i++) {
    a.push(rate(ours, bytes, ms));
    b.push(rate(peer, bytes, ms));
  }
  progress(`  ${name}: ${median(a).toFixed(0)} MB/s; ${peerName}: ${median(b).toFixed(0)} MB/s`);
  return { name, ours: median(a), peerName, peer: median(b) };
}

/** Bare AES-256-GCM over `data` in 64 KiB updates, one key and nonce: the floor seal cannot beat. */
function bareGcm(key: Buffer, data: Buffer, decrypt: boolean, tag?: Buffer): Buffer[] {
  const nonce = Buffer.alloc(12);
  const c = decrypt ? crypto.createDecipheriv('aes-256-gcm', key, nonce) : crypto.createCipheriv('aes-256-gcm', key, nonce);
  const out: Buffer[] = [];
  for (let o = 0; o < data.length; o += 64 * 1024) out.push(c.update(data.subarray(o, o + 64 * 1024)));
  if (decrypt) {
    (c as crypto.DecipherGCM).setAuthTag(tag!);
    c.final();
  } else {
    c.final();
    out.push((c as crypto.CipherGCM).getAuthTag());
  }
  return out;
}

/** Seconds of wall time and of CPU time (the process's, scrypt's thread included). */
interface Timing {
  wall: number;
  cpu: number;
}

const fmt = (t: Timing) => `${t.wall.toFixed(2)} s (CPU ${t.cpu.toFixed(2)} s)`;

async function scryptSeconds(master: Buffer, cost: { N: number; r: number; p: number }, runs: number): Promise<Timing[]> {
  const password = Buffer.from('bench password');
  const file = await wrapMasterKey(master, password, 'bench', cost);
  const times: Timing[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const cpu = process.cpuUsage();
    const key = await unwrapMasterKey(file, password, 'bench');
    const c = process.cpuUsage(cpu);
    times.push({ wall: (performance.now() - t) / 1000, cpu: (c.user + c.system) / 1e6 });
    if (!key?.equals(master)) throw new Error('unwrap gave another key');
  }
  return times;
}

async function main(): Promise<void> {
  const rounds = envNumber('BENCH_CRYPTO_ROUNDS', 7, true);
  const roundMs = envNumber('BENCH_CRYPTO_ROUND_MS', 300, true);
  const scryptRuns = envNumber('BENCH_CRYPTO_SCRYPT_RUNS', 3, true);
  const benchDir = path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench'));
  const master = newMasterKey();
  const keys = deriveKeys(master);
  const label = 'node-admin v3 object bench';
  const one = crypto.randomBytes(MIB);
  const eight = crypto.randomBytes(8 * MIB);
  const bareKey = crypto.randomBytes(32);
  const load = os.loadavg()[0]!;
  progress(`crypto: ${rounds} rounds of ${roundMs} ms each, ours and the peer alternating; load average ${load.toFixed(2)} on ${os.cpus().length} cores`);

  const rows: Row[] = [];
  rows.push(compare('blobId, 1 MiB', () => blobId(keys.id, 'data', [one]), 'SHA-256', () => crypto.createHash('sha256').update(one).digest(), MIB, rounds, roundMs));

  const sealedOne = seal(keys.blob, label, [one]);
  const plainOut = Buffer.allocUnsafe(8 * MIB);
  const bareOne = bareGcm(bareKey, one, false);
  const bareOneCt = Buffer.concat(bareOne.slice(0, -1));
  const bareOneTag = bareOne[bareOne.length - 1]!;
  rows.push(compare('seal, 1 MiB (one chunk)', () => seal(keys.blob, label, [one]), 'bare AES-256-GCM', () => bareGcm(bareKey, one, false), MIB, rounds, roundMs));
  rows.push(compare('open, 1 MiB (one chunk)', () => open(keys.blob, label, sealedOne), 'bare AES-256-GCM', () => bareGcm(bareKey, bareOneCt, true, bareOneTag), MIB, rounds, roundMs));

  const sealedEight = seal(keys.object, label, [eight], 16);
  const bareEight = bareGcm(bareKey, eight, false);
  const bareEightCt = Buffer.concat(bareEight.slice(0, -1));
  const bareEightTag = bareEight[bareEight.length - 1]!;
  const oneOut = Buffer.allocUnsafe(sealedLength(MIB));
  rows.push(compare('sealInto a reused buffer, 1 MiB', () => sealInto(keys.blob, label, [one], oneOut, 0), 'bare AES-256-GCM', () => bareGcm(bareKey, one, false), MIB, rounds, roundMs));
  rows.push(compare('openInto a reused buffer, 1 MiB', () => openInto(keys.blob, label, sealedOne, plainOut, 0), 'bare AES-256-GCM', () => bareGcm(bareKey, bareOneCt, true, bareOneTag), MIB, rounds, roundMs));
  rows.push(compare('seal, 8 MiB in 64 KiB chunks', () => seal(keys.object, label, [eight], 16), 'bare AES-256-GCM', () => bareGcm(bareKey, eight, false), 8 * MIB, rounds, roundMs));
  rows.push(compare('open, 8 MiB in 64 KiB chunks', () => open(keys.object, label, sealedEight), 'bare AES-256-GCM', () => bareGcm(bareKey, bareEightCt, true, bareEightTag), 8 * MIB, rounds, roundMs));
  const eightOut = Buffer.allocUnsafe(sealedLength(8 * MIB, 16));
  rows.push(compare('sealInto a reused buffer, 8 MiB in 64 KiB chunks', () => sealInto(keys.object, label, [eight], eightOut, 0, 16), 'bare AES-256-GCM', () => bareGcm(bareKey, eight, false), 8 * MIB, rounds, roundMs));
  rows.push(compare('openInto a reused buffer, 8 MiB in 64 KiB chunks', () => openInto(keys.object, label, sealedEight, plainOut, 0), 'bare AES-256-GCM', () => bareGcm(bareKey, bareEightCt, true, bareEightTag), 8 * MIB, rounds, roundMs));
  // As a backup seals a chunk and a restore opens one: into a lane's page-aligned shared buffer
  // (direct-io.ts), the chunk preceded by its compression mode byte, opened straight into the lane.
  const [lane] = alignedBuffers(1, 4 * MIB);
  const mode = Buffer.of(0);
  const blobLength = sealInto(keys.blob, label, [mode, one], lane!, 0);
  const sealedBlob = Buffer.from(lane!.subarray(0, blobLength));
  const laneOut = lane!.subarray(2 * MIB);
  rows.push(compare('sealInto a lane (shared memory), mode byte + 1 MiB', () => sealInto(keys.blob, label, [mode, one], lane!, 0), 'bare AES-256-GCM', () => bareGcm(bareKey, one, false), MIB, rounds, roundMs));
  rows.push(compare('openAfterByteInto a lane (shared memory), 1 MiB', () => openAfterByteInto(keys.blob, label, sealedBlob, 0, laneOut), 'bare AES-256-GCM', () => bareGcm(bareKey, bareOneCt, true, bareOneTag), MIB, rounds, roundMs));
  const pieces: Buffer[] = [];
  for (let o = 0; o < eight.length; o += 64 * 1024) pieces.push(eight.subarray(o, o + 64 * 1024));
  const sealedPieces: Buffer[] = [];
  for (let o = 0; o < sealedEight.length; o += 64 * 1024) sealedPieces.push(sealedEight.subarray(o, o + 64 * 1024));
  rows.push(
    compare(
      'EnvelopeWriter, 8 MiB written in 64 KiB pieces',
      () => {
        const w = new EnvelopeWriter(keys.object, label, 16);
        for (const p of pieces) w.write(p);
        return w.finish();
      },
      'bare AES-256-GCM',
      () => bareGcm(bareKey, eight, false),
      8 * MIB,
      rounds,
      roundMs,
    ),
  );
  rows.push(
    compare(
      'EnvelopeReader, 8 MiB pushed in 64 KiB pieces',
      () => {
        const r = new EnvelopeReader(keys.object, label);
        for (const p of sealedPieces) r.push(p);
        return r.end();
      },
      'bare AES-256-GCM',
      () => bareGcm(bareKey, bareEightCt, true, bareEightTag),
      8 * MIB,
      rounds,
      roundMs,
    ),
  );

  // One small seal: its fixed cost (salt, key derivation, cipher set-up) dominates.
  const small = crypto.randomBytes(64);
  const smallRate = median(Array.from({ length: rounds }, () => rate(() => seal(keys.blob, label, [small]), 1, roundMs)));
  const smallUs = 1 / smallRate; // rate() counts MB/s with 1 byte per op: ops per microsecond
  progress(`  seal of a 64-byte blob: ${smallUs.toFixed(1)} us`);

  progress(`  scrypt at the default cost (N=2^${Math.log2(DEFAULT_KDF_COST.N)}, r=${DEFAULT_KDF_COST.r}, p=${DEFAULT_KDF_COST.p}), ${scryptRuns} runs, and at N/2 and 2N once`);
  const scryptDefault = await scryptSeconds(master, DEFAULT_KDF_COST, scryptRuns);
  const scryptHalf = await scryptSeconds(master, { ...DEFAULT_KDF_COST, N: DEFAULT_KDF_COST.N / 2 }, 1);
  const scryptDouble = await scryptSeconds(master, { ...DEFAULT_KDF_COST, N: DEFAULT_KDF_COST.N * 2 }, 1);

  const lines = [
    `format 3 crypto, one thread (node ${process.version}, ${os.cpus().length} cores, load average ${load.toFixed(2)} at start, ${os.loadavg()[0]!.toFixed(2)} at end)`,
    '',
    `${'operation'.padEnd(52)}${'MB/s'.padStart(8)}  ${'peer'.padEnd(18)}${'MB/s'.padStart(8)}${'time ratio'.padStart(12)}`,
    ...rows.map((r) => `${r.name.padEnd(52)}${r.ours.toFixed(0).padStart(8)}  ${r.peerName.padEnd(18)}${r.peer.toFixed(0).padStart(8)}${`${(r.peer / r.ours).toFixed(2)}x`.padStart(12)}`),
    '',
    `seal of a 64-byte blob: ${smallUs.toFixed(1)} us`,
    `scrypt unlock, N=2^${Math.log2(DEFAULT_KDF_COST.N)} r=${DEFAULT_KDF_COST.r} p=${DEFAULT_KDF_COST.p} (default, ${(128 * DEFAULT_KDF_COST.N * DEFAULT_KDF_COST.r) / MIB} MiB): ${scryptDefault.map(fmt).join(', ')}`,
    `scrypt unlock, N=2^${Math.log2(DEFAULT_KDF_COST.N) - 1}: ${fmt(scryptHalf[0]!)}; N=2^${Math.log2(DEFAULT_KDF_COST.N) + 1}: ${fmt(scryptDouble[0]!)}`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  fs.mkdirSync(benchDir, { recursive: true });
  const results = { load, rows, sealSmallUs: smallUs, scrypt: { cost: DEFAULT_KDF_COST, seconds: scryptDefault, halfN: scryptHalf[0], doubleN: scryptDouble[0] } };
  fs.writeFileSync(path.join(benchDir, 'crypto-results.json'), JSON.stringify(results, null, 2) + '\n');
  progress(`crypto: results in ${path.join(benchDir, 'crypto-results.json')}`);
}

// Measured in a worker thread, as the crypto pool's threads run it.
if (isMainThread) {
  new Worker(new URL(import.meta.url)).on('error', (err: unknown) => {
    process.stderr.write(`crypto bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`crypto bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
