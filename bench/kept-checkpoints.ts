import fs from 'node:fs';
import path from 'node:path';
import { timeCommand } from './command-timer.js';
import { startExampleNode } from './example-node.js';
import { progress } from './progress.js';
import { waitForQuietDir } from './quiet-dir.js';
import { timedRequest } from './socket-request.js';
import { summarize, type Summary } from './stats.js';

/**
 * What keeping many checkpoints costs: with `--keep-last K` and K checkpoints already kept, a create
 * through the socket (which then prunes the oldest: K are kept again), `GET /v1/status` through the
 * socket, and `node-admin checkpoint list` as a person runs it (CLI wall time). The same for each K:
 * with the counts kept on create and delete, they should not grow with K.
 */
export interface KeptResult {
  kept: number;
  createMs: Summary;
  statusMs: Summary;
  listCliMs: Summary;
  /** The list's answer alone, through the socket (informational). */
  listSocketMs: Summary;
}

export async function measureKeptCheckpoints(options: {
  exampleNode: string;
  cli: string;
  dataDir: string;
  socketPath: string;
  kept: number;
  runs: number;
}): Promise<KeptResult> {
  const checkpointDir = path.join(options.dataDir, 'checkpoints');
  fs.rmSync(checkpointDir, { recursive: true, force: true });
  const node = await startExampleNode(options.exampleNode, options.dataDir, options.socketPath, ['--keep-last', String(options.kept)]);
  const sock = options.socketPath;
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_ADMIN_SOCKET: '' };
  const listCli = () => timeCommand(process.execPath, [options.cli, 'checkpoint', 'list', '--socket', sock], env);
  try {
    await waitForQuietDir(path.join(options.dataDir, 'db'), 120_000);
    const t0 = performance.now();
    for (let i = 0; i < options.kept; i++) await timedRequest(sock, 'POST', '/v1/checkpoints', { label: `kept ${i + 1}` });
    progress(`  ${options.kept} checkpoints made in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // Unmeasured round: cold caches of dist/ and node_modules for the CLI.
    listCli();
    const createMs: number[] = [];
    const statusMs: number[] = [];
    const listCliMs: number[] = [];
    const listSocketMs: number[] = [];
    for (let i = 0; i < options.runs; i++) {
      createMs.push((await timedRequest(sock, 'POST', '/v1/checkpoints', {})).ms);
      // Queued behind the pruned tree's removal: what follows measures a settled agent.
      const listed = await timedRequest(sock, 'GET', '/v1/checkpoints');
      const count = (JSON.parse(listed.body) as unknown[]).length;
      if (count !== options.kept) throw new Error(`${count} checkpoints kept, expected ${options.kept}`);
      statusMs.push((await timedRequest(sock, 'GET', '/v1/status')).ms);
      listSocketMs.push((await timedRequest(sock, 'GET', '/v1/checkpoints')).ms);
      listCliMs.push(listCli().ms);
    }
    const r = { kept: options.kept, createMs: summarize(createMs), statusMs: summarize(statusMs), listCliMs: summarize(listCliMs), listSocketMs: summarize(listSocketMs) };
    progress(
      `  ${options.kept} kept: create p50 ${r.createMs.p50.toFixed(1)} ms, status p50 ${r.statusMs.p50.toFixed(2)} ms, ` +
        `list CLI p50 ${r.listCliMs.p50.toFixed(0)} ms (socket ${r.listSocketMs.p50.toFixed(1)} ms)`,
    );
    return r;
  } finally {
    const code = await node.stop();
    if (code !== 0) progress(`the example node exited with ${code}`);
    fs.rmSync(checkpointDir, { recursive: true, force: true });
  }
}
