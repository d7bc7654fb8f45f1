import { spawnSync } from 'node:child_process';

/**
 * Wall time of a whole process, from spawn to exit, as a person at a shell sees it: process creation,
 * Node startup, module loading, the socket round trip and printing. Not a cheaper in-process call.
 */
export interface TimedRun {
  ms: number;
  stdout: string;
}

export function timeCommand(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): TimedRun {
  const t0 = performance.now();
  const r = spawnSync(command, args, { env, encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 });
  const ms = performance.now() - t0;
  if (r.error) throw new Error(`${command} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr.trim()}`);
  }
  return { ms, stdout: r.stdout };
}
