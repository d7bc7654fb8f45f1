import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kv, ROOT, runCli, startExampleNode, tempDir, type CliResult, type RunningNode } from './support/processes.js';
import { PrometheusServer, promtool, type Sample } from './support/prometheus.js';
import { dashboardQueries, expandVariables, type Dashboard } from './support/grafana-dashboard.js';
import { emptyAndClose, FaultProxy, s3Server, s3TestStorage } from './support/s3-server.js';
import type { AgentStatus, BackupRecord, CheckpointRecord } from '../dist/shared/index.js';

/**
 * The monitoring story through real parts only: a real Prometheus (Debian's package, its own temp
 * directory and loopback port, our alert rules loaded, scraping and evaluating every second) scrapes the
 * example node (a real process, backing up to the real S3 test server through a loopback proxy) while
 * the CLI takes a checkpoint and backups; then the proxy goes away and a backup fails. The node archives
 * its log (--log-archive on), so the log-archive metrics and panels have data too. Everything is read
 * back through Prometheus's HTTP API, polled with deadlines (never fixed sleeps).
 */

const execFileAsync = promisify(execFile);
const RULES = path.join(ROOT, 'monitoring', 'node-admin-alerts.yml');
const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'monitoring', 'grafana-dashboard.json'), 'utf8')) as Dashboard;

/** The log archiver's own base at start: one checkpoint and one backup before the test's. */
const ARCHIVE_BASE = 1;

function parseOne<T>(r: CliResult): T {
  expect(r.stderr, r.stderr).toBe('');
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

/** The one sample of a query that must answer exactly one series. */
function only(samples: Sample[], what: string): number {
  expect(samples, `${what}: ${JSON.stringify(samples)}`).toHaveLength(1);
  return Number(samples[0]!.value[1]);
}

describe('a real Prometheus scraping the example node', () => {
  const dir = tempDir('monitoring');
  const prefix = `monitoring-${randomBytes(6).toString('hex')}`;
  let proxy: FaultProxy;
  let node: RunningNode;
  let prom: PrometheusServer;
  let socket: string[];
  /** Metric names the node's scrape exposes (the log-archive panels need the archiver's). */
  let exposed = new Set<string>();

  beforeAll(async () => {
    const s3 = s3Server();
    proxy = FaultProxy.forEndpoint(s3.endpoint);
    const endpoint = await proxy.start();
    const saved = { ...process.env };
    // The node reads S3 credentials from its environment, as the README says; ours passes them on.
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    try {
      // A replica on a directory too: the dashboard's replica panel and the replica metrics meet real data.
      const replica = pathToFileURL(path.join(dir, 'replica')).href;
      node = await startExampleNode(dir, ['--backup-repo', `s3://${s3.bucket}/${prefix}`, '--s3-endpoint', endpoint, '--s3-region', s3.region, '--log-archive', 'on', '--backup-replica', replica]);
    } finally {
      process.env = saved;
    }
    socket = ['--socket', node.socketPath];
    // The archiver's base (a checkpoint and a backup) first: a backup of ours meanwhile would be BUSY.
    const deadline = Date.now() + 60_000;
    while (parseOne<AgentStatus>(await runCli(['status', '--json', ...socket])).logArchive?.state !== 'following') {
      if (Date.now() > deadline) throw new Error('the log archiver did not start its timeline within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    prom = await PrometheusServer.start({ targets: [`127.0.0.1:${node.port}`], ruleFiles: [RULES] });
  });

  afterAll(async () => {
    await prom?.stop();
    await node?.stop();
    await proxy?.stop();
    await emptyAndClose(s3TestStorage({ prefix }));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function value(expr: string): Promise<number | null> {
    const samples = await prom.query(expr);
    return samples.length === 0 ? null : only(samples, expr);
  }

  it('scrapes the node; promtool check metrics finds nothing wrong in a real scrape (HTTP port and socket)', async () => {
    await prom.until('the node-admin target to be up', async () => ((await value('up{job="node-admin"}')) === 1 ? true : null));
    expect((await prom.targets()).map((t) => t.health)).toEqual(['up']);
    // Our rules loaded and evaluate without error against the node's real series.
    const rules = (await prom.rules()).flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThan(10);
    await prom.until('every rule evaluated once', async () => ((await prom.rules()).flatMap((g) => g.rules).every((r) => r.health === 'ok') ? true : null));

    const scrape = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
    exposed = new Set([...scrape.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    expect(exposed).toContain('node_admin_checkpoint_last_success_timestamp_seconds');
    const viaHttp = await promtool(['check', 'metrics'], scrape);
    expect(viaHttp.stdout + viaHttp.stderr).toBe('');
    expect(viaHttp.code).toBe(0);

    const { stdout: viaSocket } = await execFileAsync('curl', ['-sS', '--fail', '--unix-socket', node.socketPath, 'http://localhost/v1/metrics']);
    expect(viaSocket).toContain('# TYPE node_admin_operation_failures_total counter');
    const socketCheck = await promtool(['check', 'metrics'], viaSocket);
    expect(socketCheck.stdout + socketCheck.stderr).toBe('');
    expect(socketCheck.code).toBe(0);
  });

  it('negative control: promtool check metrics does object to a bad exposition', async () => {
    const bad = '# HELP node_admin_bad_failures Failures.\n# TYPE node_admin_bad_failures counter\nnode_admin_bad_failures 1\n';
    const r = await promtool(['check', 'metrics'], bad);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain('counter metrics should have "_total" suffix');
  });

  it('after a checkpoint and backups, the last-success timestamps are in Prometheus, within seconds of now', async () => {
    for (let i = 0; i < 50; i++) expect((await kv(node.port, 'PUT', `k/${i}`, `v${i}`)).status).toBe(204);
    const t0 = Date.now() / 1000;
    const checkpoint = parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));
    const first = parseOne<BackupRecord>(await runCli(['backup', 'create', '--json', ...socket]));
    expect(first.checkpoint.id).toBe(checkpoint.id);
    // A second round: durations and byte rates are read over a window, which needs a rise in it.
    for (let i = 0; i < 50; i++) expect((await kv(node.port, 'PUT', `k2/${i}`, `v${i}`)).status).toBe(204);
    parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));
    parseOne<BackupRecord>(await runCli(['backup', 'create', '--json', ...socket]));
    // An operator's listing: the agent learns how many backups the repository holds.
    expect(parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', ...socket]))).toHaveLength(ARCHIVE_BASE + 2);
    const t1 = Date.now() / 1000;

    const checkpointAt = await prom.until('the second checkpoint in Prometheus', async () => {
      const v = await value('node_admin_checkpoint_last_success_timestamp_seconds{job="node-admin"}');
      return v !== null && v >= Date.parse(checkpoint.createdAt) / 1000 + 0.0005 ? v : null;
    });
    // Both were set while we watched: not before t0, not after t1 (1 ms of rounding either way).
    expect(checkpointAt).toBeGreaterThanOrEqual(t0 - 0.001);
    expect(checkpointAt).toBeLessThanOrEqual(t1 + 0.001);
    const lastBackup = await prom.until('two backups counted in Prometheus', async () =>
      (await value('node_admin_operation_duration_seconds_count{job="node-admin", operation="backup"}')) === ARCHIVE_BASE + 2
        ? await value('node_admin_backup_last_success_timestamp_seconds{job="node-admin"}')
        : null,
    );
    expect(lastBackup).toBeGreaterThanOrEqual(checkpointAt);
    expect(lastBackup).toBeLessThanOrEqual(t1 + 0.001);
    // "Within seconds of now" as Prometheus computes it: no older than the time since we started.
    const age = only(await prom.query('time() - node_admin_backup_last_success_timestamp_seconds{job="node-admin"}'), 'backup age');
    expect(age).toBeGreaterThanOrEqual(-1); // Prometheus's time() is its evaluation time, in ms
    expect(age).toBeLessThanOrEqual(Date.now() / 1000 - t0 + 1);

    await prom.until('the backup count in Prometheus', async () => ((await value('node_admin_backups{job="node-admin"}')) === ARCHIVE_BASE + 2 ? true : null));
    expect(await value('node_admin_operation_duration_seconds_count{job="node-admin", operation="checkpoint"}')).toBe(ARCHIVE_BASE + 2);
    expect(await value('node_admin_backup_uploaded_bytes_total{job="node-admin"}')).toBeGreaterThan(0);
    expect(await value('node_admin_backup_read_bytes_total{job="node-admin"}')).toBeGreaterThan(0);
    expect(await value('sum(node_admin_checkpoints{job="node-admin"})')).toBe(ARCHIVE_BASE + 2);
    // The writes above were archived: the last shipment within seconds, a new timeline at start and no other break.
    const shipped = await prom.until('a log segment shipped', async () => {
      const v = await value('node_admin_log_archive_last_shipped_timestamp_seconds{job="node-admin"}');
      return v !== null && v >= t0 ? v : null;
    });
    expect(shipped).toBeLessThanOrEqual(Date.now() / 1000 + 0.001);
    expect(await value('node_admin_log_archive_timeline_breaks_total{job="node-admin", reason="start"}')).toBe(1);
    expect(await value('sum(node_admin_log_archive_timeline_breaks_total{job="node-admin", reason!="start"})')).toBeNull();
    expect(await value('node_admin_log_archive_shipped_segments_total{job="node-admin"}')).toBeGreaterThan(0);
    // Nothing failed yet: no failure series at all, and no alert about failures.
    expect(await prom.query('node_admin_operation_failures_total')).toEqual([]);
    expect((await prom.alerts()).filter((a) => /Failing|Damaged/.test(a.labels.alertname ?? ''))).toEqual([]);
  });

  it('a backup to an unreachable endpoint: the failure counter rises with its code, and the alert fires', async () => {
    const failures = 'node_admin_operation_failures_total{job="node-admin", operation="backup", code="STORAGE_UNAVAILABLE"}';
    const before = (await value(failures)) ?? 0;
    const lastSuccess = await value('node_admin_backup_last_success_timestamp_seconds{job="node-admin"}');
    await proxy.stop(); // the S3 endpoint now refuses every connection
    parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));
    const r = await runCli(['backup', 'create', ...socket]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/\(STORAGE_UNAVAILABLE\)\n$/);

    const after = await prom.until('the failure counter to rise', async () => {
      const v = await value(failures);
      return v !== null && v > before ? v : null;
    });
    expect(after).toBe(before + 1);
    const alert = await prom.until('NodeAdminBackupFailing to fire', async () => {
      return (await prom.alerts()).find((a) => a.labels.alertname === 'NodeAdminBackupFailing' && a.state === 'firing') ?? null;
    });
    expect(alert.labels).toMatchObject({ operation: 'backup', code: 'STORAGE_UNAVAILABLE', severity: 'warning', job: 'node-admin' });
    expect(alert.annotations.summary).toBe(`backups of 127.0.0.1:${node.port} fail with STORAGE_UNAVAILABLE`);
    // A failure moves no success timestamp, and the checkpoint's own success counted.
    expect(await value('node_admin_backup_last_success_timestamp_seconds{job="node-admin"}')).toBe(lastSuccess);
    expect((await prom.alerts()).filter((a) => a.labels.alertname === 'NodeAdminCheckpointFailing')).toEqual([]);
  });

  it('negative control: the dashboard check would catch a query that does not parse or finds nothing', async () => {
    await expect(prom.query(expandVariables('sum by (instance) (rate(node_admin_backup_uploaded_bytes_total{instance=~"$instance"}[$__rate_interval])'))).rejects.toThrow(
      /bad_data: .*parse error/,
    );
    // A misspelt metric parses and answers nothing: "no data", which the check below refuses.
    expect(await prom.query(expandVariables('node_admin_backup_upload_bytes_total{instance=~"$instance"}'))).toEqual([]);
    // An unknown variable left in place is a parse error too.
    await expect(prom.query(expandVariables('node_admin_backups{instance=~"$node"}[$interval]'))).rejects.toThrow(/bad_data/);
  });

  describe('every query of the Grafana dashboard returns data', () => {
    for (const q of dashboardQueries(dashboard)) {
      it(`${q.panel} [${q.refId}]`, async () => {
        const expr = expandVariables(q.expr);
        // Every metric the query names is in the node's scrape (the log archive's included: it is on).
        const names = [...expr.matchAll(/\bnode_admin_\w+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, ''));
        expect([...new Set(names)].filter((n) => !exposed.has(n))).toEqual([]);
        // Once outside the polling: a query Prometheus cannot parse fails here, at once.
        await prom.query(expr);
        const samples = await prom.until(`data for ${expr}`, async () => {
          const finite = (await prom.query(expr)).filter((x) => Number.isFinite(Number(x.value[1])));
          return finite.length > 0 ? finite : null;
        });
        expect(samples.length).toBeGreaterThan(0);
      });
    }
  });
});
