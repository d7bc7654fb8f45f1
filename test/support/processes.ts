import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root; tests run the BUILT code in dist/ (npm test builds first). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.cjs');
export const EXAMPLE_NODE = path.join(ROOT, 'dist', 'agent', 'example-node', 'main.cjs');

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `node-admin-${prefix}-`));
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as a real process. */
/**
 * The built CLI as a process. Its environment: this process's, with no default socket, and `env` over it;
 * with `inheritEnv: false`, exactly `env`.
 */
export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; inheritEnv?: boolean; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd ?? ROOT,
      env: options.inheritEnv === false ? options.env : { ...process.env, NODE_ADMIN_SOCKET: '', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RunningNode {
  child: ChildProcess;
  port: number;
  socketPath: string;
  dataDir: string;
  /** Everything the node logged so far (pino JSON lines). */
  output(): string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

/**
 * Starts the example node as a real process and waits for its "node ready" line. Its log archive (on by
 * default) is turned off unless the test says `--log-archive` itself or asks for the node's defaults
 * (`defaults: true`): a test about something else must not count the archive's base checkpoint,
 * backup and storage requests as its own.
 */
export async function startExampleNode(dataDir: string, extraArgs: string[] = [], options: { defaults?: boolean } = {}): Promise<RunningNode> {
  const socketPath = path.join(dataDir, 'run', 'admin.sock');
  const archive = options.defaults === true || extraArgs.includes('--log-archive') ? [] : ['--log-archive', 'off'];
  const child = spawn(process.execPath, [EXAMPLE_NODE, '--data-dir', dataDir, '--port', '0', '--socket', socketPath, ...archive, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`example node did not start:\n${out}`)), 60_000);
    const check = () => {
      for (const line of out.split('\n')) {
        if (!line.includes('"node ready"')) continue;
        clearTimeout(timer);
        child.stdout!.off('data', check);
        resolve((JSON.parse(line) as { port: number }).port);
        return;
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`example node exited with ${code} before it was ready:\n${out}`));
    });
  });
  return {
    child,
    port,
    socketPath,
    dataDir,
    output: () => out,
    exited,
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A request to the example node's KV API. */
export async function kv(port: number, method: 'GET' | 'PUT' | 'DELETE', key: string, value?: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/kv/${encodeURIComponent(key)}`, {
    method,
    ...(value !== undefined ? { body: value } : {}),
  });
  return { status: res.status, body: await res.text() };
}

/** Every key and value the example node holds (GET /kv). */
export async function kvAll(port: number): Promise<Record<string, string>> {
  const res = await fetch(`http://127.0.0.1:${port}/kv`);
  return (await res.json()) as Record<string, string>;
}

/**
 * Polls `probe` every 50 ms until it gives a value (null or false: not yet), and resolves with it;
 * rejects naming `what` after `timeoutMs`. A condition waited for, never a sleep standing in for one.
 */
export async function until<T>(what: string, probe: () => Promise<T | null | false> | T | null | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
