/**
 * `node-admin backup changes` as its output is read: a listing of many lines comes out whole and in
 * order (gathered into large writes), and a reader that stops early (`| head`) ends it quietly with
 * status 0 instead of leaving it waiting for a drain that never comes (before: status 13, Node's
 * "unsettled top-level await", and nothing said).
 *
 * The archive: a real base (an agent's checkpoint and backup of a classic-level database) and one
 * timeline after it, its segment made with the project's encoders (as bench/changes-bench.ts makes an
 * hour) and stored through the repository.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type ChangeBatch, type ChangesSummary } from '../dist/agent/index.js';
import { newCheckpointId } from '../dist/agent/checkpoint/checkpoint-id.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import { baseName, encodeSegment, segmentName, type SegmentBatch } from '../dist/agent/log-archive/segment.js';
import { encodeBatch } from '../dist/agent/log-archive/write-batch.js';
import { canonicalJson } from '../dist/agent/repository/format.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { CLI, ROOT, runCli, tempDir } from './support/processes.js';
import { TEST_REPO } from './support/test-password.js';

/** Enough lines (about 3 MB of output) that a reader closing after the first leaves the CLI writing into a closed pipe. */
const BATCHES = 20_000;

let dir: string;
let repoUrl: string;
let baseSequence: number;

beforeAll(async () => {
  dir = tempDir('changes-output');
  repoUrl = pathToFileURL(path.join(dir, 'repo')).href;
  const storage = await openStorage(repoUrl, {});
  const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
  const dbPath = path.join(dir, 'db');
  const db = new ClassicLevel<string, string>(dbPath);
  await db.open();
  let backup: string;
  try {
    await db.batch(Array.from({ length: 100 }, (_, i) => ({ type: 'put' as const, key: `base/${i}`, value: `v${i}` })));
    const agent = createAgent({ dbPath, checkpointDir: path.join(dir, 'checkpoints'), backup: { repository: repoUrl }, logger: pino({ level: 'silent' }) });
    await agent.start();
    try {
      const checkpoint = await agent.createCheckpoint({ label: 'base' });
      baseSequence = (await dbSequence(checkpoint.path)).sequence;
      backup = (await agent.createBackup({ checkpointId: checkpoint.id })).id;
    } finally {
      await agent.stop();
    }
  } finally {
    await db.close();
  }
  // One batch a millisecond, one put each, from a minute ago: one segment, then the base's record.
  const t0 = Date.now() - 60_000;
  const timeline = newCheckpointId(t0).toLowerCase();
  const batches: SegmentBatch[] = Array.from({ length: BATCHES }, (_, i) => {
    const seq = baseSequence + 1 + i;
    const payload = encodeBatch(seq, [{ type: 'put', key: Buffer.from(`key/${String(i).padStart(6, '0')}`), value: Buffer.from(`value ${i} ${'v'.repeat(64)}`) }]);
    return { seq, count: 1, payload, readAt: t0 + 1 + i };
  });
  const info = { timeline, first: baseSequence + 1, last: baseSequence + BATCHES, from: t0, to: t0 + BATCHES };
  await repo.putObject(segmentName(info), await encodeSegment(info, batches));
  await repo.putObject(baseName({ timeline, backup, sequence: baseSequence, from: t0, to: info.to, last: info.last }), Buffer.from(canonicalJson({ version: 1, timeline, backup, sequence: baseSequence, from: t0, to: info.to, last: info.last })));
  await repo.codec.close();
  await storage.close();
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The CLI with its stdout read until the first line, then closed, as `| head -n 1` does. */
function firstLineThenClose(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; first: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, NODE_ADMIN_SOCKET: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    let first: string | null = null;
    child.stdout.on('data', (d: Buffer) => {
      if (first !== null) return;
      out += d.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl !== -1) {
        first = out.slice(0, nl);
        child.stdout.destroy();
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    // A bound on a wait that must end (the failure this test is about was a wait that never did).
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, first: first ?? '', stderr });
    });
  });
}

describe('backup changes output', () => {
  it('lists every batch, whole and in order, then the summary (NDJSON and lines)', async () => {
    const json = await runCli(['backup', 'changes', '--repo', repoUrl, '--json']);
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const lines = json.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(BATCHES + 1);
    const listed = lines.slice(0, -1).map((l) => (JSON.parse(l) as { batch: ChangeBatch }).batch);
    expect(listed.map((b) => b.sequence)).toEqual(Array.from({ length: BATCHES }, (_, i) => baseSequence + 1 + i));
    expect(listed.every((b, i) => b.changes.length === 1 && b.changes[0]!.key === `key/${String(i).padStart(6, '0')}`)).toBe(true);
    const { summary } = JSON.parse(lines.at(-1)!) as { summary: ChangesSummary };
    expect(summary).toMatchObject({ batches: BATCHES, scanned: BATCHES, segments: 1, firstSequence: baseSequence + 1, lastSequence: baseSequence + BATCHES });

    const human = await runCli(['backup', 'changes', '--repo', repoUrl]);
    expect(human.code).toBe(0);
    const humanLines = human.stdout.trimEnd().split('\n');
    expect(humanLines).toHaveLength(BATCHES + 1);
    expect(humanLines[0]).toContain(`seq ${baseSequence + 1}  1 put  +key/000000`);
    expect(humanLines.at(-1)).toMatch(new RegExp(`^${BATCHES} batches \\(sequences ${baseSequence + 1}\\.\\.${baseSequence + BATCHES}\\)`));
  });

  it('ends quietly with status 0 when the reader closes the pipe early (| head)', async () => {
    for (const extra of [['--json'], []]) {
      const r = await firstLineThenClose(['backup', 'changes', '--repo', repoUrl, ...extra]);
      expect(r.signal).toBe(null);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.first).toContain(String(baseSequence + 1));
    }
  });
});
