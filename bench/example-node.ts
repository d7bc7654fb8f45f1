import { spawn, type ChildProcess } from 'node:child_process';
import { benchPasswordFile } from './bench-password.js';

/**
 * The example node (dist/agent/example-node/main.cjs) as a real process, so that the CLI is measured
 * against an agent in another process exactly as in production.
 */
export interface ExampleNode {
  pid: number;
  /** The KV API's port (the node is started with `--port 0`), from its "node ready" log line. */
  port: number;
  /** Everything the node wrote on stdout and stderr so far (pino JSON lines). */
  output(): string;
  /** SIGTERM, then SIGKILL if it has not exited after 10 s; resolves with its exit code. */
  stop(): Promise<number | null>;
  /** For process exit handlers, which cannot wait. */
  killNow(): void;
}

/**
 * `env`: variables added to this process's environment for the node; `nodeArgs`: Node's own options,
 * before the script (host-memory.ts runs it with the settings the shipped unit and `npm start` give it).
 */
export async function startExampleNode(
  script: string,
  dataDir: string,
  socketPath: string,
  extraArgs: readonly string[] = [],
  env: Record<string, string> = {},
  nodeArgs: readonly string[] = [],
): Promise<ExampleNode> {
  // Without the log archive (on by default), unless asked: these benches measure checkpoints, backups
  // and scrapes alone; the archive has its own (log-archive-bench.ts).
  const archive = extraArgs.includes('--log-archive') ? [] : ['--log-archive', 'off'];
  // Its backups encrypted with the bench's password, given as an operator gives theirs, unless the
  // caller says otherwise.
  const keyFlags = ['--backup-password-file', '--backup-password-command', '--backup-insecure-no-encryption'];
  const password = extraArgs.some((a) => keyFlags.includes(a)) ? [] : ['--backup-password-file', benchPasswordFile()];
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, script, '--data-dir', dataDir, '--port', '0', '--socket', socketPath, ...archive, ...password, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code, signal) => {
      exitCode = code ?? (signal ? -1 : null);
      resolve(exitCode);
    }),
  );
  let port = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // not left running behind a failed bench (a node with --log-level warn never says it is ready)
      reject(new Error(`the example node did not get ready in 60 s:\n${out}`));
    }, 60_000);
    const check = () => {
      const at = out.indexOf('"node ready"');
      const end = at < 0 ? -1 : out.indexOf('\n', at);
      if (end < 0) return; // not yet, or not the whole line yet
      clearTimeout(timer);
      try {
        port = (JSON.parse(out.slice(out.lastIndexOf('\n', at) + 1, end)) as { port: number }).port;
      } catch {
        reject(new Error(`the example node's "node ready" line is not JSON:\n${out}`));
        return;
      }
      child.stdout!.off('data', check);
      resolve();
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the example node exited with ${code} before it was ready:\n${out}`));
    });
  });
  const pid = child.pid!;
  return {
    pid,
    port,
    output: () => out,
    async stop() {
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    killNow() {
      if (exitCode === undefined) child.kill('SIGKILL');
    },
  };
}
