import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Runs a whole process the same way for every tool in the backup benchmark: wall time from spawn to
 * exit, peak RSS through GNU time (`/usr/bin/time -f %M`, the child's getrusage), then a `sync` timed
 * on its own, so that a tool that leaves its writes dirty in the page cache (no fsync) is not confused
 * with one that made them durable: the time a tool took, plus what the kernel still owed it.
 */

export const GNU_TIME = '/usr/bin/time';

export interface TimedProcess {
  command: string;
  /** Wall seconds from spawn to exit, as measured here. */
  seconds: number;
  /** Seconds of a `sync` run right after: dirty data the tool left behind. */
  syncSeconds: number;
  /** Peak resident set size (GNU time %M); null when GNU time is missing. */
  peakRssBytes: number | null;
  /** User + system CPU seconds of the child (GNU time %U + %S); null when GNU time is missing. */
  cpuSeconds: number | null;
  exitCode: number;
  stdout: string;
  stderr: string;
}

export function hasGnuTime(): boolean {
  const r = spawnSync(GNU_TIME, ['--version'], { encoding: 'utf8' });
  return !r.error && `${r.stdout}${r.stderr}`.includes('GNU');
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  /** Exit codes that are not failures (borg exits 1 for warnings). */
  okCodes?: readonly number[];
  gnuTime: boolean;
}

export function runTimed(command: string, args: readonly string[], o: RunOptions): TimedProcess {
  const shown = [command, ...args].map((a) => (a.length > 120 ? `${a.slice(0, 117)}...` : a)).join(' ');
  let file = command;
  let argv = [...args];
  let report: string | null = null;
  if (o.gnuTime) {
    report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'backup-bench-')), 'time');
    file = GNU_TIME;
    argv = ['-f', '%e %M %U %S', '-o', report, command, ...args];
  }
  const t0 = performance.now();
  const r = spawnSync(file, argv, {
    env: o.env ?? process.env,
    cwd: o.cwd,
    encoding: 'utf8',
    timeout: o.timeoutMs ?? 30 * 60_000,
    maxBuffer: 256 << 20,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const seconds = (performance.now() - t0) / 1000;
  const s0 = performance.now();
  spawnSync('sync');
  const syncSeconds = (performance.now() - s0) / 1000;
  if (r.error) throw new Error(`${shown}: ${r.error.message}`);
  const exitCode = r.status ?? -1;
  let peakRssBytes: number | null = null;
  let cpuSeconds: number | null = null;
  if (report) {
    // GNU time writes "Command exited with non-zero status N" first when it did; the numbers are last.
    const lines = fs.readFileSync(report, 'utf8').trim().split('\n');
    const m = /^([\d.]+) (\d+) ([\d.]+) ([\d.]+)$/.exec(lines.at(-1) ?? '');
    if (m) {
      peakRssBytes = Number(m[2]) * 1024;
      cpuSeconds = Number(m[3]) + Number(m[4]);
    }
    fs.rmSync(path.dirname(report), { recursive: true, force: true });
  }
  if (exitCode !== 0 && !(o.okCodes ?? []).includes(exitCode)) {
    const tail = `${r.stderr}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`${shown} exited with ${r.status ?? r.signal}:\n${tail}`);
  }
  return { command: shown, seconds, syncSeconds, peakRssBytes, cpuSeconds, exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** A plain untimed run that must succeed (setup steps: init, cp -al). */
export function runQuiet(command: string, args: readonly string[], o: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): string {
  const r = spawnSync(command, args, { env: o.env ?? process.env, cwd: o.cwd, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new Error(`${command} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** `sync; echo 3 > /proc/sys/vm/drop_caches`. False when not allowed (not root, read-only /proc/sys). */
export function dropPageCache(): boolean {
  spawnSync('sync');
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}
