import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cloneDbSync } from '../agent/checkpoint/checkpoint-dir.js';
import { benchKey } from './bench-db.js';
import { startExampleNode } from './example-node.js';
import { dropPageCache } from './backup-timed.js';
import { summarize } from './stats.js';

/**
 * A backup as operators run it: the example node (the agent in its process, classic-level open, its KV
 * API on a port) on a copy of the benchmark's database: `node-admin checkpoint create`, then
 * `node-admin backup create --checkpoint <it> --json` through the admin socket. Measures what the
 * backup costs the node:
 *
 *   - the node process's peak RSS while the backup runs (VmHWM, reset through /proc/<pid>/clear_refs
 *     just before), and its RSS when idle before (after the checkpoint: the checkpoint's worker
 *     thread, which stays, is not the backup's);
 *   - the KV API's latency for a few seconds before the backup (quiet) and throughout it: GETs of
 *     random existing keys and PUTs of 1 KiB random values over random existing keys, each one at a
 *     time over a kept-alive connection of its own, the two side by side (the node's reads and writes).
 *
 * The node's backups are encrypted (format 3) with the bench's password (example-node.ts).
 *
 * Standalone: node dist/bench/agent-backup.js <database dir> <key count> <work dir> [auto|max]
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const NODE_SCRIPT = path.join(ROOT, 'dist', 'agent', 'example-node', 'main.cjs');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.cjs');
/** How long the quiet latencies are sampled before the backup. */
const QUIET_MS = 5000;

export interface LatencyStats {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface AgentBackupResult {
  idle: RssBreakdown;
  /** Peak RSS of the node process from just before the backup until it finished (VmHWM). */
  peakRssBytes: number;
  /** The largest of each part of RSS, sampled every 20 ms during the backup. */
  peakSampled: RssBreakdown;
  /** Wall time of `node-admin backup create --checkpoint <id>`. */
  seconds: number;
  kvIdle: LatencyStats;
  kvDuring: LatencyStats;
  /** PUT latency (1 KiB values), quiet and during the backup. */
  putIdle: LatencyStats;
  putDuring: LatencyStats;
  record: Record<string, unknown>;
  /** The --backup-pace it ran with. */
  pace: 'auto' | 'max';
}

/**
 * RSS in its parts: anonymous memory (heaps, buffers: what the process allocated) and file pages
 * (mapped files: LevelDB maps its tables, so every GET touches some; the kernel drops them at will).
 */
export interface RssBreakdown {
  rss: number;
  anon: number;
  file: number;
}

/** `pace`: the example node's --backup-pace (auto, its default; max: full speed). */
export async function measureAgentBackup(dbPath: string, keyCount: number, work: string, pace: 'auto' | 'max' = 'auto'): Promise<AgentBackupResult> {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const dataDir = path.join(work, 'node');
  fs.mkdirSync(dataDir);
  cloneDbSync(dbPath, path.join(dataDir, 'db')); // tables hard-linked: the node may compact its copy freely
  const socketDir = path.join(work, 'run');
  fs.mkdirSync(socketDir, { mode: 0o700 });
  const socket = path.join(socketDir, 'admin.sock');
  const node = await startExampleNode(NODE_SCRIPT, dataDir, socket, ['--backup-pace', pace]);
  const killOnExit = () => node.killNow();
  process.once('exit', killOnExit);
  const port = node.port;
  try {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const putAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () => timedGet(agent, port, benchKey(Math.floor(Math.random() * keyCount)));
    const put = () => timedPut(putAgent, port, benchKey(Math.floor(Math.random() * keyCount)), randomFillSync(Buffer.allocUnsafe(1024)));
    await Promise.all([sampleFor(get, 1000), sampleFor(put, 1000)]); // warm the connections and the code paths
    const checkpoint = await run(process.execPath, [CLI, 'checkpoint', 'create', '--json', '--socket', socket]);
    if (checkpoint.code !== 0) throw new Error(`node-admin checkpoint create failed (${checkpoint.code}): ${checkpoint.stderr.trim()}`);
    const checkpointId = (JSON.parse(checkpoint.stdout) as { id: string }).id;
    // Quiet from a cold page cache too, as the backup starts: only the backup differs between the two.
    dropPageCache();
    const [idle, putIdle] = await Promise.all([sampleFor(get, QUIET_MS), sampleFor(put, QUIET_MS)]);
    const idleBreakdown = breakdown(node.pid);

    dropPageCache();
    fs.writeFileSync(`/proc/${node.pid}/clear_refs`, '5'); // VmHWM := VmRSS (Linux ≥ 4.0)
    const during: number[] = [];
    const putDuring: number[] = [];
    let backupDone = false;
    const sampler = Promise.all([
      (async () => {
        while (!backupDone) during.push(await get());
      })(),
      (async () => {
        while (!backupDone) putDuring.push(await put());
      })(),
    ]);
    const peakSampled: RssBreakdown = { rss: 0, anon: 0, file: 0 };
    const rssTimer = setInterval(() => {
      const b = breakdown(node.pid);
      for (const k of ['rss', 'anon', 'file'] as const) peakSampled[k] = Math.max(peakSampled[k], b[k]);
    }, 20);
    const started = performance.now();
    const cli = await run(process.execPath, [CLI, 'backup', 'create', '--checkpoint', checkpointId, '--json', '--socket', socket]);
    const seconds = (performance.now() - started) / 1000;
    backupDone = true;
    clearInterval(rssTimer);
    await sampler;
    const peakRssBytes = status(node.pid, 'VmHWM');
    agent.destroy();
    putAgent.destroy();
    if (cli.code !== 0) throw new Error(`node-admin backup create failed (${cli.code}): ${cli.stderr.trim()}`);
    return {
      idle: idleBreakdown,
      peakRssBytes,
      peakSampled,
      seconds,
      kvIdle: stats(idle),
      kvDuring: stats(during),
      putIdle: stats(putIdle),
      putDuring: stats(putDuring),
      record: JSON.parse(cli.stdout) as Record<string, unknown>,
      pace,
    };
  } finally {
    await node.stop();
    process.off('exit', killOnExit);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function timedPut(agent: http.Agent, port: number, key: string, value: Buffer): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: `/kv/${encodeURIComponent(key)}`, agent, headers: { 'content-length': value.length } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 204 ? resolve(performance.now() - start) : reject(new Error(`PUT /kv/${key}: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(value);
  });
}

function timedGet(agent: http.Agent, port: number, key: string): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/kv/${encodeURIComponent(key)}`, agent }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - start) : reject(new Error(`GET /kv/${key}: ${res.statusCode}`))));
    });
    req.on('error', reject);
  });
}

async function sampleFor(get: () => Promise<number>, ms: number): Promise<number[]> {
  const out: number[] = [];
  const until = performance.now() + ms;
  while (performance.now() < until) out.push(await get());
  return out;
}

function stats(ms: number[]): LatencyStats {
  const s = summarize(ms);
  const r = (v: number) => Math.round(v * 100) / 100;
  return { count: s.n, p50Ms: r(s.p50), p99Ms: r(s.p99), maxMs: r(s.max) };
}

function breakdown(pid: number): RssBreakdown {
  return { rss: status(pid, 'VmRSS'), anon: status(pid, 'RssAnon'), file: status(pid, 'RssFile') };
}

function status(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [db, keys, work, pace = 'auto'] = process.argv.slice(2);
  if (!db || !keys || !work || (pace !== 'auto' && pace !== 'max')) {
    process.stderr.write('usage: node dist/bench/agent-backup.js <database dir> <key count> <work dir> [auto|max]\n');
    process.exit(2);
  }
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  measureAgentBackup(path.resolve(db), Number(keys), path.resolve(work), pace).then(
    (r) => {
      process.stdout.write(
        `backup through the agent (pace ${r.pace}): ${r.seconds.toFixed(2)} s, ${String(r.record.files)} files, ${mib(Number(r.record.bytes))}, ` +
          `held back ${Number(r.record.pacedSeconds ?? 0).toFixed(2)} s by the pace\n` +
          `node process RSS: idle ${mib(r.idle.rss)} (anonymous ${mib(r.idle.anon)}, file pages ${mib(r.idle.file)}); ` +
          `peak during the backup ${mib(r.peakRssBytes)} (sampled: anonymous ${mib(r.peakSampled.anon)}, file pages ${mib(r.peakSampled.file)})\n` +
          `KV GET latency idle: p50 ${r.kvIdle.p50Ms} ms, p99 ${r.kvIdle.p99Ms} ms, max ${r.kvIdle.maxMs} ms (${r.kvIdle.count})\n` +
          `KV GET latency during: p50 ${r.kvDuring.p50Ms} ms, p99 ${r.kvDuring.p99Ms} ms, max ${r.kvDuring.maxMs} ms (${r.kvDuring.count})\n` +
          `KV PUT latency idle: p50 ${r.putIdle.p50Ms} ms, p99 ${r.putIdle.p99Ms} ms, max ${r.putIdle.maxMs} ms (${r.putIdle.count})\n` +
          `KV PUT latency during: p50 ${r.putDuring.p50Ms} ms, p99 ${r.putDuring.p99Ms} ms, max ${r.putDuring.maxMs} ms (${r.putDuring.count})\n`,
      );
    },
    (err: unknown) => {
      process.stderr.write(`agent-backup failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
