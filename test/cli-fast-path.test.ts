/**
 * The CLI's fast path (cli/fast-path.ts parses the most-run commands without yargs) against the full
 * parser (cli/cli.ts), command by command: the same request on the socket (method, path, body, as the
 * route table in shared/routes.ts says), the same output, the same exit code. The socket is real: the
 * agent's own AdminServer, over an AdminApi double that records each call and answers a fixture.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminServer } from '../dist/agent/admin-server/admin-server.js';
import { main } from '../dist/cli/cli.js';
import { fastPath } from '../dist/cli/fast-path.js';
import { AdminError, ErrorCodes, routes, type AdminApi, type AgentStatus, type CheckpointRecord, type Operation } from '../dist/shared/index.js';
import { tempDir } from './support/processes.js';

const record: CheckpointRecord = {
  id: '20261122T210045123Z-a1b2',
  createdAt: '2026-11-22T21:00:45.123Z',
  label: 'before upgrade',
  pinned: false,
  trigger: 'manual',
  path: '/data/checkpoints/20261122T210045123Z-a1b2/db',
  files: 12,
  bytes: 1.5 * 1024 ** 3,
  exclusiveBytes: 1024,
};

const status: AgentStatus = {
  version: '0.1.0',
  pid: 42,
  startedAt: '2026-11-22T20:00:00.000Z',
  dbPath: '/data/db',
  checkpointDir: '/data/checkpoints',
  socketPath: '/run/node-admin/admin.sock',
  checkpoints: { count: 1, pinned: 0, bytes: record.bytes, exclusiveBytes: 1024 },
  inProgress: null,
  queued: 0,
  schedule: { enabled: false, intervalMs: null, nextRunAt: null, lastRun: null },
  retention: { keepLast: 3, keepHourly: 0, keepDaily: 0, keepWeekly: 0, keepMonthly: 0, maxAgeMs: null, minFreeBytes: 0 },
  filesystem: { freeBytes: 10 * 1024 ** 3, totalBytes: 100 * 1024 ** 3 },
  backup: null,
  logArchive: {
    state: 'retrying',
    intervalMs: 1000,
    timeline: { id: '20261122t200001000z-ab12', sequence: 4242, startedAt: '2026-11-22T20:00:01.000Z' },
    lag: { seconds: 12.5, batches: 3, bytes: 3300, unreadBytes: 120 },
    lastShipped: { at: '2026-11-22T20:59:50.000Z', sequence: 9000, timeline: '20261122t200001000z-ab12' },
    shippedSegments: 17,
    shippedBytes: 123456,
    breaks: 1,
    lastBreak: { at: '2026-11-22T20:30:00.000Z', reason: 'gap', detail: 'sequence 5000 does not follow 4990' },
    lastError: { at: '2026-11-22T21:00:00.000Z', error: 'STORAGE_UNAVAILABLE: connection refused' },
  },
};

/** Every call the double received: the operation and its arguments as the server decoded them. */
let calls: { op: Operation; args: unknown[] }[] = [];

function recorded<T>(op: Operation, value: T | (() => T)) {
  return async (...args: unknown[]): Promise<T> => {
    calls.push({ op, args });
    return typeof value === 'function' ? (value as () => T)() : value;
  };
}

const unsupported = (op: Operation) => async () => {
  calls.push({ op, args: [] });
  throw new AdminError(ErrorCodes.INTERNAL, `${op} is not part of this test`);
};

const api: AdminApi = {
  status: recorded('status', status),
  listCheckpoints: recorded('listCheckpoints', [record]),
  getCheckpoint: async (id: string) => {
    calls.push({ op: 'getCheckpoint', args: [id] });
    if (id !== record.id) throw new AdminError(ErrorCodes.NOT_FOUND, `no checkpoint ${id}`);
    return record;
  },
  createCheckpoint: async (req = {}) => {
    calls.push({ op: 'createCheckpoint', args: [req] });
    return { ...record, label: req.label ?? null, pinned: req.pin === true };
  },
  deleteCheckpoint: unsupported('deleteCheckpoint'),
  pin: unsupported('pin'),
  unpin: unsupported('unpin'),
  prune: unsupported('prune'),
  verify: unsupported('verify'),
  cancel: unsupported('cancel'),
  createBackup: unsupported('createBackup'),
  cancelBackup: unsupported('cancelBackup'),
  copyBackups: unsupported('copyBackups'),
  cancelCopy: unsupported('cancelCopy'),
  listBackups: unsupported('listBackups'),
  getBackup: unsupported('getBackup'),
  pruneBackups: unsupported('pruneBackups'),
  verifyBackups: unsupported('verifyBackups'),
  backupTimeline: unsupported('backupTimeline'),
  backupChanges: unsupported('backupChanges'),
  metrics: unsupported('metrics'),
};

let dir: string;
let socketPath: string;
let server: AdminServer;

beforeAll(async () => {
  dir = tempDir('fast-path');
  socketPath = path.join(dir, 'run', 'admin.sock');
  server = new AdminServer(api, pino({ enabled: false }));
  await server.listen(socketPath, null);
});

afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  calls: typeof calls;
}

async function runWith(parser: 'fast' | 'full', args: string[]): Promise<Outcome> {
  calls = [];
  let stdout = '';
  let stderr = '';
  const io = { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) }, env: {} };
  const full = [...args, '--socket', socketPath];
  const code = parser === 'fast' ? await fastPath(full, io) : await main(full, io);
  return { code, stdout, stderr, calls };
}

/** Each command the fast path takes, in the shapes scripts write it. */
const cases: { args: string[]; op: Operation }[] = [
  { args: ['status'], op: 'status' },
  { args: ['status', '--json'], op: 'status' },
  { args: ['checkpoint', 'list'], op: 'listCheckpoints' },
  { args: ['checkpoint', 'list', '--json'], op: 'listCheckpoints' },
  { args: ['checkpoint', 'show', record.id], op: 'getCheckpoint' },
  { args: ['--json', 'checkpoint', 'show', record.id], op: 'getCheckpoint' },
  { args: ['checkpoint', 'show', '20261122T210045123Z-ffff'], op: 'getCheckpoint' },
  { args: ['checkpoint', 'create'], op: 'createCheckpoint' },
  { args: ['checkpoint', 'create', '--label', 'pre-upgrade 🚀', '--pin', '--json'], op: 'createCheckpoint' },
  { args: ['checkpoint', 'create', '--label=x', '--timeout', '30'], op: 'createCheckpoint' },
];

describe('fast path = full parser, command by command', () => {
  it.each(cases)('$args', async ({ args, op }) => {
    const fast = await runWith('fast', args);
    const full = await runWith('full', args);
    // The fast path took it (null would mean "left to the full parser", and prove nothing).
    expect(fast.code).not.toBeNull();
    expect(fast).toEqual(full);
    // One call, of the operation the route table routes this command's request to.
    expect(fast.calls.map((c) => c.op)).toEqual([op]);
    expect(routes[op]).toBeDefined();
  });

  it('refusals are the full parser\'s: the fast path leaves bad input to it', async () => {
    for (const args of [
      ['checkpoint', 'show', '../etc'],
      ['checkpoint', 'create', '--label', 'a\u0007b'],
      ['checkpoint', 'create', '--label', 'x'.repeat(201)],
    ]) {
      const fast = await runWith('fast', args);
      const full = await runWith('full', args);
      // Either the fast path declines (null) or it fails exactly as the full parser does, before any call.
      if (fast.code !== null) expect(fast).toEqual(full);
      expect(full.code).toBe(2);
      expect(full.calls).toEqual([]);
      expect(full.stderr).toContain('(INVALID_ARGUMENT)');
    }
  });

  it('a label of 150 emoji is one rule on both sides of the socket: accepted by the CLI and by the agent', async () => {
    const label = '🚀'.repeat(150);
    const r = await runWith('fast', ['checkpoint', 'create', '--label', label, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.calls).toEqual([{ op: 'createCheckpoint', args: [{ label }] }]);
  });

  it('negative control: a request that differs is seen as different', async () => {
    const a = await runWith('full', ['checkpoint', 'create', '--label', 'a']);
    const b = await runWith('full', ['checkpoint', 'create', '--label', 'b']);
    expect(a).not.toEqual(b);
  });
});
