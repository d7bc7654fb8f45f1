/**
 * The agent's Prometheus metrics against real parts: a real LevelDB, real checkpoints, real backups to
 * a file:// repository, induced failures (an S3 endpoint nobody listens on, a free-space guard above the
 * disk's free space, a repository that does not exist), a host's own registry, and the example node as
 * a real process scraped on its HTTP port, on the socket and with the CLI. A scrape must make no
 * storage request: every storage call is a debug log line (LoggingStorage), and those are counted.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { parseExposition, sampleValue, type Sample } from './support/exposition.js';
import { kv, runCli, startExampleNode, tempDir, until, type RunningNode } from './support/processes.js';
import { storageCallLogger, storageCallOf } from './support/storage-calls.js';

const execFileAsync = promisify(execFile);

/** A pino logger at debug level, and how many storage calls it has logged. */
function recordingLogger() {
  const { logger, calls } = storageCallLogger();
  return { logger, storageCalls: () => calls.length };
}

async function scrape(agent: Agent): Promise<Sample[]> {
  return parseExposition(await agent.metrics());
}

async function fillDb(dbPath: string): Promise<void> {
  const db = new ClassicLevel<string, string>(dbPath);
  await db.open();
  for (let i = 0; i < 2000; i++) await db.put(`key-${i}`, `value-${i}-${'x'.repeat(200)}`);
  await db.close();
}

const seconds = () => Date.now() / 1000;

describe('metrics of an in-process agent', () => {
  let dir: string;
  let agent: Agent;
  let host: Registry;
  let log: ReturnType<typeof recordingLogger>;

  beforeAll(async () => {
    dir = tempDir('metrics');
    await fillDb(path.join(dir, 'db'));
    host = new Registry();
    new Counter({ name: 'host_requests_total', help: 'the host node\'s own metric', registers: [host] }).inc(3);
    log = recordingLogger();
    agent = createAgent({
      dbPath: path.join(dir, 'db'),
      checkpointDir: path.join(dir, 'checkpoints'),
      retention: { keepLast: 10 },
      backup: { repository: pathToFileURL(path.join(dir, 'backups')).href, retention: { keepLast: 1 } },
      metrics: { registry: host },
      logger: log.logger,
    });
    await agent.start();
  }, 60_000);

  afterAll(async () => {
    await agent?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('before any work: no last-success time, no failure; zero checkpoints, and zero backups once the listing at start is in', async () => {
    let s = await scrape(agent);
    // The agent lists the repository once at start, in the background: unknown (absent) until then, never a guess.
    const deadline = Date.now() + 20_000;
    while (sampleValue(s, 'node_admin_backups') === undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      s = await scrape(agent);
    }
    expect(sampleValue(s, 'node_admin_backups')).toBe(0);
    expect(sampleValue(s, 'node_admin_checkpoint_last_success_timestamp_seconds')).toBeUndefined();
    expect(sampleValue(s, 'node_admin_backup_last_success_timestamp_seconds')).toBeUndefined();
    expect(s.filter((x) => x.name === 'node_admin_operation_failures_total')).toEqual([]);
    expect(sampleValue(s, 'node_admin_checkpoints', { pinned: 'true' })).toBe(0);
    expect(sampleValue(s, 'node_admin_checkpoints', { pinned: 'false' })).toBe(0);
    expect(sampleValue(s, 'node_admin_checkpoint_filesystem_free_bytes')).toBeGreaterThan(0);
  });

  it('after two real checkpoints: counts, bytes and the last success as the index and the clock say', async () => {
    const t0 = seconds();
    await agent.createCheckpoint({ label: 'a', pin: true });
    await agent.createCheckpoint({ label: 'b' });
    const t1 = seconds();
    const records = await agent.listCheckpoints();
    const s = await scrape(agent);
    expect(sampleValue(s, 'node_admin_checkpoints', { pinned: 'true' })).toBe(1);
    expect(sampleValue(s, 'node_admin_checkpoints', { pinned: 'false' })).toBe(1);
    expect(sampleValue(s, 'node_admin_checkpoint_bytes')).toBe(records.reduce((n, r) => n + r.bytes, 0));
    expect(sampleValue(s, 'node_admin_checkpoint_exclusive_bytes')).toBe(records.reduce((n, r) => n + r.exclusiveBytes, 0));
    expect(sampleValue(s, 'node_admin_checkpoint_bytes')).toBeGreaterThan(100_000);
    const last = sampleValue(s, 'node_admin_checkpoint_last_success_timestamp_seconds')!;
    expect(last).toBeGreaterThanOrEqual(t0 - 0.001);
    expect(last).toBeLessThanOrEqual(t1 + 0.001);
    expect(sampleValue(s, 'node_admin_operation_duration_seconds_count', { operation: 'checkpoint' })).toBe(2);
    const free = sampleValue(s, 'node_admin_checkpoint_filesystem_free_bytes')!;
    const st = fs.statfsSync(path.join(dir, 'checkpoints'));
    expect(free).toBeGreaterThan(0);
    expect(free).toBeLessThanOrEqual(st.blocks * st.bsize);
  });

  it('after real backups to file://: last success, bytes read and uploaded as the records say, the count once listed', async () => {
    const t0 = seconds();
    const first = await agent.createBackup();
    const t1 = seconds();
    let s = await scrape(agent);
    const last = sampleValue(s, 'node_admin_backup_last_success_timestamp_seconds')!;
    expect(last).toBeGreaterThanOrEqual(t0 - 0.001);
    expect(last).toBeLessThanOrEqual(t1 + 0.001);
    expect(first.bytesRead).toBeGreaterThan(100_000);
    expect(sampleValue(s, 'node_admin_backup_read_bytes_total')).toBe(first.bytesRead);
    expect(sampleValue(s, 'node_admin_backup_uploaded_bytes_total')).toBe(first.bytesUploaded);
    expect(sampleValue(s, 'node_admin_operation_duration_seconds_count', { operation: 'backup' })).toBe(1);
    // The repository the agent made is encrypted, and says so (the alert on 0 has its own promtool tests).
    expect(sampleValue(s, 'node_admin_backup_repository_encrypted')).toBe(1);
    // The agent listed the (empty) repository at start, and counted the backup it made since.
    expect(sampleValue(s, 'node_admin_backups')).toBe(1);
    expect(await agent.listBackups()).toHaveLength(1);
    expect(sampleValue(await scrape(agent), 'node_admin_backups')).toBe(1);
    const second = await agent.createBackup({ checkpointId: (await agent.listCheckpoints())[0]!.id });
    s = await scrape(agent);
    expect(sampleValue(s, 'node_admin_backups')).toBe(2);
    expect(sampleValue(s, 'node_admin_backup_read_bytes_total')).toBe(first.bytesRead! + second.bytesRead!);
    expect(sampleValue(s, 'node_admin_backup_uploaded_bytes_total')).toBe(first.bytesUploaded! + second.bytesUploaded!);
  });

  it('prune and verify, of checkpoints and of backups, each set their last success; a dry run does not', async () => {
    const cp = (await agent.listCheckpoints())[0]!;
    await agent.prune({ dryRun: true });
    await agent.pruneBackups({ dryRun: true });
    let s = await scrape(agent);
    expect(s.filter((x) => x.name === 'node_admin_prune_last_success_timestamp_seconds')).toEqual([]);
    const t0 = seconds();
    expect((await agent.verify(cp.id)).ok).toBe(true);
    expect((await agent.verifyBackups()).ok).toBe(true);
    await agent.prune();
    await agent.pruneBackups(); // keepLast 1: one of the two goes
    const t1 = seconds();
    s = await scrape(agent);
    for (const [name, operation] of [
      ['node_admin_verify_last_success_timestamp_seconds', 'checkpoint_verify'],
      ['node_admin_verify_last_success_timestamp_seconds', 'backup_verify'],
      ['node_admin_prune_last_success_timestamp_seconds', 'checkpoint_prune'],
      ['node_admin_prune_last_success_timestamp_seconds', 'backup_prune'],
    ] as const) {
      const v = sampleValue(s, name, { operation });
      expect(v, `${name}{operation="${operation}"}`).toBeGreaterThanOrEqual(t0 - 0.001);
      expect(v).toBeLessThanOrEqual(t1 + 0.001);
      expect(sampleValue(s, 'node_admin_operation_duration_seconds_count', { operation })).toBe(1);
    }
    expect(sampleValue(s, 'node_admin_backups')).toBe(1);
  });

  it("the host's registry has our metrics beside its own; agent.metrics() has ours alone", async () => {
    const hostSamples = parseExposition(await host.metrics());
    const ours = await scrape(agent);
    expect(sampleValue(hostSamples, 'host_requests_total')).toBe(3);
    expect(sampleValue(ours, 'host_requests_total')).toBeUndefined();
    const names = (s: Sample[]) => [...new Set(s.map((x) => x.name).filter((n) => n.startsWith('node_admin_')))].sort();
    expect(names(ours).length).toBeGreaterThan(10);
    expect(names(hostSamples)).toEqual(names(ours));
    expect(sampleValue(hostSamples, 'node_admin_backups')).toBe(sampleValue(ours, 'node_admin_backups'));
  });

  it('a scrape makes no storage request (and the count would see one: listing the backups does)', async () => {
    const before = log.storageCalls();
    for (let i = 0; i < 20; i++) {
      await agent.metrics();
      await host.metrics();
    }
    expect(log.storageCalls()).toBe(before);
    // Positive control: the same counter sees the storage calls of an operation that makes them.
    await agent.listBackups();
    expect(log.storageCalls()).toBeGreaterThan(before);
  });

  it('a second agent on the same host registry is refused with a clear error, the registry left as it was', async () => {
    expect(() =>
      createAgent({ dbPath: path.join(dir, 'db'), checkpointDir: path.join(dir, 'other'), metrics: { registry: host }, logger: pino({ enabled: false }) }),
    ).toThrow(/node_admin_operation_duration_seconds is already registered/);
    // The host's registry is as it was: its own metric and the first agent's, all there.
    const s = parseExposition(await host.metrics());
    expect(sampleValue(s, 'host_requests_total')).toBe(3);
    expect(sampleValue(s, 'node_admin_backups')).toBe(1);
  });

  it('after a restart: the checkpoint time from the newest checkpoint at once, the backup time and count from the listing the agent makes at start', async () => {
    await agent.stop();
    const again = createAgent({
      dbPath: path.join(dir, 'db'),
      checkpointDir: path.join(dir, 'checkpoints'),
      backup: { repository: pathToFileURL(path.join(dir, 'backups')).href },
      logger: pino({ enabled: false }),
    });
    await again.start();
    try {
      const newestCheckpoint = (await again.listCheckpoints()).at(-1)!;
      let s = await scrape(again);
      expect(sampleValue(s, 'node_admin_checkpoint_last_success_timestamp_seconds')).toBe(Date.parse(newestCheckpoint.createdAt) / 1000);
      // The agent lists the repository once at start, in the background: wait for it (bounded).
      const deadline = Date.now() + 20_000;
      while (sampleValue(s, 'node_admin_backups') === undefined && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        s = await scrape(again);
      }
      // What the repository holds, read without the agent (the offline CLI).
      const listed = await runCli(['backup', 'list', '--repo', pathToFileURL(path.join(dir, 'backups')).href, '--json']);
      expect(listed.code).toBe(0);
      const backups = JSON.parse(listed.stdout) as { createdAt: string }[];
      expect(backups.length).toBeGreaterThan(0);
      expect(sampleValue(s, 'node_admin_backups')).toBe(backups.length);
      expect(sampleValue(s, 'node_admin_backup_last_success_timestamp_seconds')).toBe(Date.parse(backups.at(-1)!.createdAt) / 1000);
    } finally {
      await again.stop();
    }
  });
});

describe('failures are counted with their stable code', () => {
  const agents: Agent[] = [];
  let dir: string;

  beforeAll(async () => {
    dir = tempDir('metrics-fail');
    await fillDb(path.join(dir, 'db'));
  }, 60_000);

  afterAll(async () => {
    for (const a of agents) await a.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function agentWith(name: string, options: Partial<Parameters<typeof createAgent>[0]>): Promise<Agent> {
    const a = createAgent({ dbPath: path.join(dir, 'db'), checkpointDir: path.join(dir, name), logger: pino({ enabled: false }), ...options });
    agents.push(a);
    await a.start();
    return a;
  }

  it('a backup to an S3 endpoint nobody listens on: failures{operation="backup",code="STORAGE_UNAVAILABLE"} 1, no last success', async () => {
    // A port of ours, closed again: connection refused, at once, on every attempt.
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'test';
    process.env.AWS_SECRET_ACCESS_KEY = 'test-secret';
    try {
      const a = await agentWith('s3', {
        backup: { repository: 's3://no-such-bucket/node', s3: { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true } },
      });
      await a.createCheckpoint();
      const err = await a.createBackup().then(
        () => null,
        (e: unknown) => e as { code: string },
      );
      expect(err?.code).toBe('STORAGE_UNAVAILABLE');
      const s = await scrape(a);
      expect(sampleValue(s, 'node_admin_operation_failures_total', { operation: 'backup', code: 'STORAGE_UNAVAILABLE' })).toBe(1);
      expect(sampleValue(s, 'node_admin_backup_last_success_timestamp_seconds')).toBeUndefined();
      expect(sampleValue(s, 'node_admin_operation_duration_seconds_count', { operation: 'backup' })).toBe(0);
      // The checkpoint it took first did succeed.
      expect(sampleValue(s, 'node_admin_operation_duration_seconds_count', { operation: 'checkpoint' })).toBe(1);
    } finally {
      restoreEnv('AWS_ACCESS_KEY_ID', saved.id);
      restoreEnv('AWS_SECRET_ACCESS_KEY', saved.secret);
    }
  }, 60_000);

  it('a checkpoint refused by the free-space guard: failures{operation="checkpoint",code="INSUFFICIENT_SPACE"}', async () => {
    const a = await agentWith('guarded', { retention: { minFreeBytes: 2 ** 50 } });
    await expect(a.createCheckpoint()).rejects.toMatchObject({ code: 'INSUFFICIENT_SPACE' });
    await expect(a.createCheckpoint()).rejects.toMatchObject({ code: 'INSUFFICIENT_SPACE' });
    const s = await scrape(a);
    expect(sampleValue(s, 'node_admin_operation_failures_total', { operation: 'checkpoint', code: 'INSUFFICIENT_SPACE' })).toBe(2);
    expect(sampleValue(s, 'node_admin_checkpoint_filesystem_min_free_bytes')).toBe(2 ** 50);
    expect(sampleValue(s, 'node_admin_checkpoint_last_success_timestamp_seconds')).toBeUndefined();
  });

  it('verifying a repository that does not exist: failures{operation="backup_verify",code="REPOSITORY_NOT_FOUND"}', async () => {
    const a = await agentWith('norepo', { backup: { repository: pathToFileURL(path.join(dir, 'nothing-here')).href } });
    await expect(a.verifyBackups()).rejects.toMatchObject({ code: 'REPOSITORY_NOT_FOUND' });
    const s = await scrape(a);
    expect(sampleValue(s, 'node_admin_operation_failures_total', { operation: 'backup_verify', code: 'REPOSITORY_NOT_FOUND' })).toBe(1);
    expect(s.filter((x) => x.name === 'node_admin_verify_last_success_timestamp_seconds')).toEqual([]);
  });
});

describe('the example node serves the metrics on its HTTP port, and the socket and the CLI serve the agent\'s', () => {
  let dir: string;
  let node: RunningNode;

  beforeAll(async () => {
    dir = tempDir('metrics-node');
    node = await startExampleNode(dir, ['--log-level', 'debug']);
  }, 60_000);

  afterAll(async () => {
    await node?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const storageCalls = () => node.output().split('\n').filter((l) => l.startsWith('{') && storageCallOf(l) !== null).length;

  it('a checkpoint and a backup through the CLI show on GET /metrics, on GET /v1/metrics and in `node-admin metrics`', async () => {
    expect((await kv(node.port, 'PUT', 'greeting', 'hello')).status).toBe(204);
    const sock = ['--socket', node.socketPath];
    const t0 = seconds();
    expect((await runCli([...sock, 'checkpoint', 'create'])).code).toBe(0);
    expect((await runCli([...sock, 'backup', 'create'])).code).toBe(0);
    const t1 = seconds();

    const res = await fetch(`http://127.0.0.1:${node.port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const http = parseExposition(await res.text());
    // The node's own metric beside the agent's.
    expect(sampleValue(http, 'example_node_kv_requests_total', { method: 'PUT' })).toBe(1);
    for (const name of ['node_admin_checkpoint_last_success_timestamp_seconds', 'node_admin_backup_last_success_timestamp_seconds']) {
      const v = sampleValue(http, name)!;
      expect(v, name).toBeGreaterThanOrEqual(t0 - 0.001);
      expect(v, name).toBeLessThanOrEqual(t1 + 0.001);
    }
    expect(sampleValue(http, 'node_admin_checkpoints', { pinned: 'false' })).toBe(1);
    expect(sampleValue(http, 'node_admin_backup_read_bytes_total')).toBeGreaterThan(0);

    const { stdout, stderr } = await execFileAsync('curl', ['-sS', '-i', '--unix-socket', node.socketPath, 'http://localhost/v1/metrics']);
    expect(stderr).toBe('');
    const [head, body] = stdout.split('\r\n\r\n') as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(head.toLowerCase()).toContain('content-type: text/plain; version=0.0.4; charset=utf-8');
    const viaSocket = parseExposition(body);
    expect(sampleValue(viaSocket, 'example_node_kv_requests_total', { method: 'PUT' })).toBeUndefined();
    expect(sampleValue(viaSocket, 'node_admin_backup_last_success_timestamp_seconds')).toBe(
      sampleValue(http, 'node_admin_backup_last_success_timestamp_seconds'),
    );

    const cli = await runCli([...sock, 'metrics']);
    expect(cli.code, cli.stderr).toBe(0);
    expect(sampleValue(parseExposition(cli.stdout), 'node_admin_checkpoints', { pinned: 'false' })).toBe(1);
    // --json: one JSON document, the exposition as a string.
    const json = await runCli([...sock, 'metrics', '--json']);
    expect(json.code, json.stderr).toBe(0);
    expect(sampleValue(parseExposition(JSON.parse(json.stdout) as string), 'node_admin_checkpoints', { pinned: 'false' })).toBe(1);

    // The text route's errors are JSON like every other route's.
    const post = await execFileAsync('curl', ['-sS', '-i', '-X', 'POST', '--unix-socket', node.socketPath, 'http://localhost/v1/metrics']);
    const [postHead, postBody] = post.stdout.split('\r\n\r\n') as [string, string];
    expect(postHead).toMatch(/^HTTP\/1\.1 405/);
    expect((JSON.parse(postBody) as { error: { code: string } }).error.code).toBe('METHOD_NOT_ALLOWED');
  }, 120_000);

  it('scrapes of the node make no storage request (its debug log has one line per request)', async () => {
    const before = storageCalls();
    expect(before).toBeGreaterThan(0); // the backup above made some: the count sees them
    for (let i = 0; i < 20; i++) await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
    for (let i = 0; i < 5; i++) await execFileAsync('curl', ['-sS', '--unix-socket', node.socketPath, 'http://localhost/v1/metrics']);
    // Every line the node wrote for those requests is in: a status round trip after them comes back last.
    expect((await runCli(['--socket', node.socketPath, 'status'])).code).toBe(0);
    expect(storageCalls()).toBe(before);
  }, 60_000);
});

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

describe('node_admin_agent_buffered_bytes: what the agent itself holds in the host', () => {
  it("holds the log archive's batches while the repository refuses them, and every part returns to zero once it stores again", async () => {
    const dir = tempDir('metrics-buffered');
    const dbPath = path.join(dir, 'db');
    const repoDir = path.join(dir, 'backups');
    // A file where the archive's directory goes: every store under wal/ fails (ENOTDIR), root or not.
    fs.mkdirSync(repoDir);
    fs.writeFileSync(path.join(repoDir, 'wal'), 'not a directory');
    const db = new ClassicLevel<string, string>(dbPath);
    await db.open();
    const agent = createAgent({
      dbPath,
      checkpointDir: path.join(dir, 'checkpoints'),
      backup: { repository: pathToFileURL(repoDir).href, logArchive: { intervalMs: 100 } },
      logger: pino({ enabled: false }),
    });
    await agent.start();
    try {
      const parts = async () => {
        const s = await scrape(agent);
        const v = (part: string) => sampleValue(s, 'node_admin_agent_buffered_bytes', { part });
        return { pending: v('log_archive_pending'), outbox: v('log_archive_outbox'), inUse: v('pool_in_use'), free: v('pool_free'), shipped: sampleValue(s, 'node_admin_log_archive_shipped_segments_total') ?? 0 };
      };
      for (let i = 0; i < 200; i++) await db.put(`key-${i}`, 'v'.repeat(1000));
      const held = await until('the archive holds the writes it cannot store', async () => {
        const p = await parts();
        return p.pending! + p.outbox! >= 200 * 1000 ? p : null;
      });
      expect(held.shipped).toBe(0);
      fs.rmSync(path.join(repoDir, 'wal'));
      // The base then covers what was held; writes after it go into segments.
      await until('a segment stored', async () => {
        await db.put('after-base', 'v'.repeat(1000));
        return (await parts()).shipped > 0;
      });
      const idle = await until('everything stored and let go', async () => {
        const p = await parts();
        return p.pending === 0 && p.outbox === 0 && p.inUse === 0 ? p : null;
      });
      // The sender's segment buffer is kept for the next segment, not made again.
      expect(idle.free).toBeGreaterThan(0);
    } finally {
      await agent.stop();
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('an agent without the log archive shows the pool alone', async () => {
    const dir = tempDir('metrics-buffered-plain');
    await fillDb(path.join(dir, 'db'));
    const agent = createAgent({ dbPath: path.join(dir, 'db'), checkpointDir: path.join(dir, 'checkpoints'), logger: pino({ enabled: false }) });
    await agent.start();
    try {
      const labels = (await scrape(agent)).filter((s) => s.name === 'node_admin_agent_buffered_bytes').map((s) => s.labels.part);
      expect(labels.sort()).toEqual(['pool_free', 'pool_in_use']);
    } finally {
      await agent.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
