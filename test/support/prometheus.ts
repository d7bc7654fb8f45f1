import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { tempDir } from './processes.js';

/**
 * A real Prometheus server (Debian's `prometheus`, installed by ensure-test-deps.sh) for the monitoring
 * tests: its own temp directory for config and TSDB, its own free loopback port, started and stopped by
 * the test. Never the system's instance, never :9090.
 */

export interface PrometheusOptions {
  /** host:port targets of the `node-admin` job (the job name the alert rules expect). */
  targets: string[];
  /** Rule files to load (absolute paths); evaluated every scrape interval. */
  ruleFiles?: string[];
  /** Default 1s. */
  scrapeInterval?: string;
}

/** One sample of an instant vector, as /api/v1/query returns it. */
export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PrometheusAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: 'pending' | 'firing';
  value: string;
}

export class PromQueryError extends Error {
  constructor(
    readonly expr: string,
    readonly errorType: string,
    message: string,
  ) {
    super(`${errorType}: ${message} (in ${expr})`);
  }
}

export class PrometheusServer {
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
    readonly dir: string,
    private readonly output: () => string,
    private readonly exited: Promise<number | null>,
  ) {}

  /** Starts Prometheus and waits until /-/ready answers 200 (or it exits: the error carries its log). */
  static async start(options: PrometheusOptions): Promise<PrometheusServer> {
    const dir = tempDir('prometheus');
    try {
      // Another process may take the port between our probe and Prometheus's bind: try a few ports.
      for (let attempt = 1; ; attempt++) {
        try {
          return await PrometheusServer.startOn(dir, await freePort(), options);
        } catch (err) {
          if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
        }
      }
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private static async startOn(dir: string, port: number, options: PrometheusOptions): Promise<PrometheusServer> {
    const interval = options.scrapeInterval ?? '1s';
    const config = [
      'global:',
      `  scrape_interval: ${interval}`,
      `  evaluation_interval: ${interval}`,
      ...(options.ruleFiles?.length ? ['rule_files:', ...options.ruleFiles.map((f) => `  - ${JSON.stringify(f)}`)] : []),
      'scrape_configs:',
      '  - job_name: node-admin',
      `    scrape_timeout: ${interval}`,
      '    static_configs:',
      `      - targets: ${JSON.stringify(options.targets)}`,
      '',
    ].join('\n');
    const configFile = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(configFile, config);
    const data = path.join(dir, `data-${port}`);
    const child = spawn(
      'prometheus',
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${data}`,
        `--web.listen-address=127.0.0.1:${port}`,
        // Debian's defaults point at /usr/share/prometheus; nothing here uses consoles.
        `--web.console.templates=${dir}`,
        `--web.console.libraries=${dir}`,
      ],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => {
      child.on('error', (err) => {
        out += `\nspawn failed: ${err.message} (ensure-test-deps.sh installs Debian's prometheus package)`;
        resolve(null);
      });
      child.on('exit', (code) => resolve(code));
    });
    const url = `http://127.0.0.1:${port}`;
    const server = new PrometheusServer(child, url, dir, () => out, exited);
    let gone = false;
    void exited.then(() => (gone = true));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (gone) throw new Error(`prometheus exited before it was ready:\n${out}`);
      const ready = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
      if (ready) return server;
      if (Date.now() > deadline) {
        await server.stop();
        throw new Error(`prometheus was not ready within 60 s:\n${out}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Prometheus's own log so far (for failure messages). */
  log(): string {
    return this.output();
  }

  /** An instant query; a PromQL error (bad_data, ...) rejects with PromQueryError. */
  async query(expr: string): Promise<Sample[]> {
    const res = await fetch(`${this.url}/api/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: expr }),
    });
    const body = (await res.json()) as {
      status: string;
      errorType?: string;
      error?: string;
      data?: { resultType: string; result: Sample[] | [number, string] };
    };
    if (body.status !== 'success') throw new PromQueryError(expr, body.errorType ?? String(res.status), body.error ?? '');
    const data = body.data!;
    // A scalar (e.g. `time()`) answers one value: present it as one sample without labels.
    if (data.resultType === 'scalar') return [{ metric: {}, value: data.result as [number, string] }];
    return data.result as Sample[];
  }

  /** The alerts the loaded rules have pending or firing now. */
  async alerts(): Promise<PrometheusAlert[]> {
    const res = await fetch(`${this.url}/api/v1/alerts`);
    const body = (await res.json()) as { data: { alerts: PrometheusAlert[] } };
    return body.data.alerts;
  }

  /** Rule groups as loaded, with each rule's health and last error. */
  async rules(): Promise<{ name: string; rules: { name: string; type: string; health: string; lastError?: string }[] }[]> {
    const res = await fetch(`${this.url}/api/v1/rules`);
    const body = (await res.json()) as { data: { groups: { name: string; rules: { name: string; type: string; health: string; lastError?: string }[] }[] } };
    return body.data.groups;
  }

  /** Scrape targets and their health (up, last error). */
  async targets(): Promise<{ scrapeUrl: string; health: string; lastError: string }[]> {
    const res = await fetch(`${this.url}/api/v1/targets`);
    const body = (await res.json()) as { data: { activeTargets: { scrapeUrl: string; health: string; lastError: string }[] } };
    return body.data.activeTargets;
  }

  /**
   * Polls `check` until it returns a value other than null, with a deadline; the timeout error names
   * what was awaited and the last thing seen.
   */
  async until<T>(what: string, check: () => Promise<T | null>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown = null;
    for (;;) {
      try {
        const v = await check();
        if (v !== null) return v;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** SIGTERM, wait for exit (SIGKILL after 30 s), remove the temp directory. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 30_000);
      await this.exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs promtool with `args`; `input` goes to its stdin (for `check metrics`). */
export function promtool(args: string[], input?: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}
