import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { SocketClient } from '../shared/socket-client.js';
import { envNumber } from './env-number.js';
import { startExampleNode, type ExampleNode } from './example-node.js';
import { progress } from './progress.js';
import { timedRequest } from './socket-request.js';
import { summarize } from './stats.js';

/**
 * The metrics benchmark: the example node (a real process) with BENCH_METRICS_KEPT checkpoints and as
 * many backups (file://) listed, then BENCH_METRICS_SCRAPES scrapes of GET /metrics on its HTTP port
 * and of GET /v1/metrics on its socket, each on a new connection, timed to the last byte (p50/p99).
 * The node runs with debug logs, where the storage layer writes one line per storage request: the
 * lines written during the scrapes are the requests the scrapes made (goal: 0).
 *
 * Environment: BENCH_METRICS_KEPT (100), BENCH_METRICS_SCRAPES (500), BENCH_DIR (<repo>/.scratch/bench).
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const EXAMPLE_NODE = path.join(ROOT, 'dist', 'agent', 'example-node', 'main.cjs');

let runningNode: ExampleNode | null = null;

async function main(): Promise<void> {
  const kept = envNumber('BENCH_METRICS_KEPT', 100, true);
  const scrapes = envNumber('BENCH_METRICS_SCRAPES', 500, true);
  const benchDir = path.resolve(process.env.BENCH_DIR || path.join(ROOT, '.scratch', 'bench'));
  const dataDir = path.join(benchDir, 'metrics');
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.mkdirSync(dataDir, { recursive: true });
  // A small database (about 4 MB): the scrape's cost does not depend on its size, only on the counts.
  const db = new ClassicLevel<string, string>(path.join(dataDir, 'db'));
  await db.open();
  for (let i = 0; i < 400; i++) {
    const batch = db.batch();
    for (let j = 0; j < 50; j++) batch.put(`key-${i}-${j}`, `${i}-${j}-`.padEnd(200, 'v'));
    await batch.write();
  }
  await db.close();

  // Its own directory (the agent wants 0700 around its socket), short enough for a socket path.
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-admin-metrics-bench-'));
  const socketPath = path.join(socketDir, 'run', 'admin.sock');
  progress(`metrics: example node with ${kept} checkpoints and ${kept} backups (file://) in ${dataDir}`);
  runningNode = await startExampleNode(EXAMPLE_NODE, dataDir, socketPath, ['--log-level', 'debug', '--keep-last', String(kept)]);
  const node = runningNode;
  try {
    const client = new SocketClient({ socketPath });
    for (let i = 0; i < kept; i++) {
      const cp = await client.createCheckpoint({ label: `bench-${i}` });
      await client.createBackup({ checkpointId: cp.id });
      if ((i + 1) % 25 === 0) progress(`  ${i + 1}/${kept} checkpoints and backups`);
    }
    // "As last listed": the backup count comes from a listing (or the backups this agent made).
    const listed = await client.listBackups();
    const check = parse(await get(node.port, '/metrics'));
    const checkpoints = (check.get('node_admin_checkpoints{pinned="false"}') ?? 0) + (check.get('node_admin_checkpoints{pinned="true"}') ?? 0);
    const backups = check.get('node_admin_backups');
    if (checkpoints !== kept || backups !== kept || listed.length !== kept) {
      throw new Error(`expected ${kept} checkpoints and backups, the metrics say ${checkpoints} and ${String(backups)} (listed ${listed.length})`);
    }

    progress(`  ${scrapes} scrapes of GET /metrics (HTTP port), then of GET /v1/metrics (socket), each on a new connection`);
    // Settle: nothing else of ours is running; the storage lines so far belong to the setup.
    await new Promise((r) => setTimeout(r, 500));
    const before = storageRequests(node.output());
    for (let i = 0; i < 20; i++) await get(node.port, '/metrics'); // warm-up
    const httpMs: number[] = [];
    let bytes = 0;
    for (let i = 0; i < scrapes; i++) {
      const t0 = performance.now();
      const body = await get(node.port, '/metrics');
      httpMs.push(performance.now() - t0);
      bytes = Buffer.byteLength(body);
    }
    const socketMs: number[] = [];
    for (let i = 0; i < scrapes; i++) socketMs.push((await timedRequest(socketPath, 'GET', '/v1/metrics')).ms);
    // A status round trip after the scrapes: every line they made the node write is in by its answer.
    await client.status();
    const during = storageRequests(node.output()) - before;
    const total = 20 + 2 * scrapes;
    const http = summarize(httpMs);
    const socket = summarize(socketMs);
    const rows: [string, string, string][] = [
      ['scrape GET /metrics (HTTP port), p50 / p99', `${ms(http.p50)} / ${ms(http.p99)}`, 'milliseconds'],
      ['scrape GET /v1/metrics (socket), p50 / p99', `${ms(socket.p50)} / ${ms(socket.p99)}`, 'milliseconds'],
      ['storage requests per scrape', `${during} in ${total} scrapes`, '0'],
      // The same count over the setup: proof that it sees storage requests when there are some.
      ['storage requests of the setup (backups, one listing)', String(before), ''],
      ['exposition size', `${(bytes / 1024).toFixed(1)} KiB`, ''],
    ];
    process.stdout.write(table(rows, kept));
    const results = { kept, scrapes, http, socket, storageRequests: during, scrapesCounted: total, setupStorageRequests: before, expositionBytes: bytes };
    fs.writeFileSync(path.join(benchDir, 'metrics-results.json'), JSON.stringify(results, round, 2) + '\n');
    progress(`metrics: results in ${path.join(benchDir, 'metrics-results.json')}`);
  } finally {
    const code = await node.stop();
    runningNode = null;
    if (code !== 0) progress(`the example node exited with ${code}`);
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(socketDir, { recursive: true, force: true });
  }
}

/** GET on the node's HTTP port, a new connection each time (as Prometheus opens one per scrape, or more). */
function get(port: number, route: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: route, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(new Error(`GET ${route}: ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** Sample lines of an exposition, keyed by name and labels as written. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** The storage layer's debug lines (one per request, LoggingStorage) in the node's output. */
function storageRequests(output: string): number {
  let n = 0;
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as { storage?: unknown; op?: unknown };
      if (typeof o.storage === 'string' && typeof o.op === 'string') n++;
    } catch {
      // not one of pino's lines
    }
  }
  return n;
}

function ms(v: number): string {
  return `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
}

function table(rows: [string, string, string][], kept: number): string {
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  const lines = [
    '',
    `Metrics scrapes: example node with ${kept} checkpoints and ${kept} backups listed (Node ${process.version})`,
    ...rows.map(([a, b, goal]) => `  ${a.padEnd(w0)}  ${b.padEnd(w1)}  ${goal ? `goal: ${goal}` : ''}`.trimEnd()),
    '',
  ];
  return lines.join('\n') + '\n';
}

function round(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
}

process.on('SIGINT', () => {
  runningNode?.killNow();
  process.exit(130);
});

main().catch((err: unknown) => {
  runningNode?.killNow();
  process.stderr.write(`metrics bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
