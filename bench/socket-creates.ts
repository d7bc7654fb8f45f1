import fs from 'node:fs';
import path from 'node:path';
import { timeCommand } from './command-timer.js';
import { startExampleNode } from './example-node.js';
import { progress } from './progress.js';
import { waitForQuietDir } from './quiet-dir.js';
import { timedRequest } from './socket-request.js';
import { summarize, type Summary } from './stats.js';

/**
 * Checkpoint creates as an operator asks for them: `POST /v1/checkpoints` on the admin socket of the
 * example node (a separate process holding the database open), request included, against `cp -al` of
 * the same directory in the same run. The node keeps its default retention (the last 3), so each
 * create also prunes one, as in production. Before each `cp -al` the agent is asked for its list, which
 * queues behind the pruned tree's removal: `cp -al` never shares the disk with our leftover work.
 */
export interface SocketCreatesResult {
  runs: number;
  tables: number;
  filesPerCheckpoint: number;
  /** New connection, request, create, answer: timed in this (already running) process. */
  createMs: Summary;
  /** The same through `curl --unix-socket`: adds curl's own start-up (informational). */
  curlCreateMs: Summary;
  cpAlMs: Summary;
}

export async function measureSocketCreates(options: {
  exampleNode: string;
  dataDir: string;
  socketPath: string;
  scratchDir: string;
  runs: number;
}): Promise<SocketCreatesResult> {
  const dbPath = path.join(options.dataDir, 'db');
  const checkpointDir = path.join(options.dataDir, 'checkpoints');
  const copy = path.join(options.scratchDir, 'cp-al-socket');
  fs.rmSync(checkpointDir, { recursive: true, force: true });
  fs.rmSync(copy, { recursive: true, force: true });
  const node = await startExampleNode(options.exampleNode, options.dataDir, options.socketPath);
  const sock = options.socketPath;
  const barrier = () => timedRequest(sock, 'GET', '/v1/checkpoints');
  const curlCreate = () =>
    timeCommand('curl', ['-sS', '--fail', '--unix-socket', sock, '-o', '/dev/null', '-X', 'POST', '-H', 'content-type: application/json', '-d', '{}', 'http://localhost/v1/checkpoints']);
  const cpAl = () => {
    // A table compacted away under cp fails it: that run of the peer is taken again.
    for (let attempt = 1; ; attempt++) {
      try {
        return timeCommand('cp', ['-al', dbPath, copy]).ms;
      } catch (err) {
        if (attempt >= 5) throw err;
      } finally {
        fs.rmSync(copy, { recursive: true, force: true });
      }
    }
  };
  try {
    await waitForQuietDir(dbPath, 120_000);
    // Unmeasured: the first create starts the agent's workers and indexes the checkpoint directory.
    for (let i = 0; i < 2; i++) await timedRequest(sock, 'POST', '/v1/checkpoints', {});
    curlCreate();
    await barrier();
    cpAl();
    const createMs: number[] = [];
    const curlMs: number[] = [];
    const cpAlMs: number[] = [];
    let files = 0;
    for (let i = 0; i < options.runs; i++) {
      // Alternating which goes first, so that drift in the page cache or journal hits both alike.
      if (i % 2 === 1) cpAlMs.push(cpAl());
      const r = await timedRequest(sock, 'POST', '/v1/checkpoints', {});
      createMs.push(r.ms);
      files = (JSON.parse(r.body) as { files: number }).files;
      await barrier();
      curlMs.push(curlCreate().ms);
      await barrier();
      if (i % 2 === 0) cpAlMs.push(cpAl());
    }
    const tables = fs.readdirSync(dbPath).filter((n) => /\.(ldb|sst)$/.test(n)).length;
    const result = { runs: options.runs, tables, filesPerCheckpoint: files, createMs: summarize(createMs), curlCreateMs: summarize(curlMs), cpAlMs: summarize(cpAlMs) };
    progress(
      `  ${tables} tables: create via socket p50 ${result.createMs.p50.toFixed(1)} / p90 ${result.createMs.p90.toFixed(1)} ms, ` +
        `curl p50 ${result.curlCreateMs.p50.toFixed(1)} ms, cp -al p50 ${result.cpAlMs.p50.toFixed(1)} / p90 ${result.cpAlMs.p90.toFixed(1)} ms`,
    );
    return result;
  } finally {
    const code = await node.stop();
    if (code !== 0) progress(`the example node exited with ${code}`);
    fs.rmSync(checkpointDir, { recursive: true, force: true });
  }
}
