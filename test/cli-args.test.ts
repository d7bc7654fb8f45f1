import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentStatus, CheckpointRecord, VerifyReport } from '../dist/shared/api.js';
import { DEFAULT_SOCKET_PATH, SYSTEM_SOCKET_PATH } from '../dist/shared/api.js';
import { main } from '../dist/cli/cli.js';
import { formatBytes, formatDuration } from '../dist/cli/output.js';
import { repeatedFlag } from '../dist/cli/repeated-flag.js';
import { resolveSocketPath } from '../dist/cli/socket-path.js';

// The built CLI (the test script runs `tsc -p tsconfig.json` before vitest).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cliPath = path.join(root, 'dist', 'cli', 'main.cjs');

function runCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NODE_ADMIN_SOCKET: '', ...env },
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

const missingSocket = path.join(tmpdir(), `node-admin-missing-${process.pid}-${Date.now()}.sock`);

describe('built CLI as a process', () => {
  it('--help exits 0 and prints usage on stdout', () => {
    const r = runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('checkpoint');
    expect(r.stderr).toBe('');
  });

  it('--version exits 0', () => {
    const r = runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('an unknown command exits 2 with one line on stderr and nothing on stdout', () => {
    const r = runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^node-admin: .*frobnicate.*\(INVALID_ARGUMENT\)\n$/);
  });

  it('an unknown flag exits 2', () => {
    const r = runCli(['status', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
  });

  it('a group without a subcommand shows help on stderr and exits 2', () => {
    const r = runCli(['checkpoint']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('checkpoint create');
  });

  it('checkpoint show ../etc is INVALID_ARGUMENT, exit 2', () => {
    const r = runCli(['checkpoint', 'show', '../etc', '--socket', missingSocket]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain('(INVALID_ARGUMENT)');
  });

  it('an id with a slash is refused before any I/O', () => {
    const r = runCli(['checkpoint', 'delete', '20261122T210045123Z-a1b2/x', '--socket', missingSocket]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('INVALID_ARGUMENT');
    expect(r.stderr).not.toContain('AGENT_UNAVAILABLE');
  });

  it('a label with control characters or over 200 characters is INVALID_ARGUMENT', () => {
    for (const label of ['a\u0007b', 'x'.repeat(201)]) {
      const r = runCli(['checkpoint', 'create', '--label', label, '--socket', missingSocket]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('INVALID_ARGUMENT');
    }
  });

  it('an unreachable socket is AGENT_UNAVAILABLE, exit 5, one line, no stack', () => {
    const r = runCli(['checkpoint', 'list', '--socket', missingSocket]);
    expect(r.code).toBe(5);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^node-admin: .*\(AGENT_UNAVAILABLE\)\n$/);
    expect(r.stderr).not.toContain('    at ');
  });

  it('with --json the error is one JSON line on stderr and stdout stays empty', () => {
    const r = runCli(['checkpoint', 'list', '--json', '--socket', missingSocket]);
    expect(r.code).toBe(5);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    const body = JSON.parse(r.stderr) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('AGENT_UNAVAILABLE');
    expect(typeof body.error.message).toBe('string');
    expect(r.stderr).not.toContain('    at ');
  });

  it('usage errors with --json are JSON too', () => {
    const r = runCli(['--json', 'frobnicate']);
    expect(r.code).toBe(2);
    expect((JSON.parse(r.stderr) as { error: { code: string } }).error.code).toBe('INVALID_ARGUMENT');
  });

  it('$NODE_ADMIN_SOCKET is used when --socket is absent', () => {
    const r = runCli(['status'], { NODE_ADMIN_SOCKET: missingSocket });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(missingSocket);
  });

  it('checkpoint create --offline without --db exits 2', () => {
    const r = runCli(['checkpoint', 'create', '--offline', '--checkpoint-dir', '/tmp/x']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('INVALID_ARGUMENT');
  });

  it('checkpoint restore without --db exits 2', () => {
    const r = runCli(['checkpoint', 'restore', '20261122T210045123Z-a1b2', '--checkpoint-dir', '/tmp/x']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
  });

  it('checkpoint show without an id exits 2', () => {
    const r = runCli(['checkpoint', 'show']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
  });
});

describe('repeatedFlag', () => {
  it.each([
    [['backup', 'copy', 'a', 'b', '--to', 'x'], null],
    [['--to', 'x', '--to', 'y'], 'to'],
    [['--to=x', '--to', 'y'], 'to'],
    [['--json', '--no-json'], 'json'],
    [['--limit-upload', '1', '--limitUpload', '2'], 'limit-upload'],
    [['--from', 'a', '--from-password-file', 'f'], null],
    [['--json', '--', '--json'], null],
    [['-h', '-h'], null],
  ])('%j -> %j', (args, want) => {
    expect(repeatedFlag(args)).toBe(want);
  });

  it('the CLI refuses a repeated option: one line, exit 2, before anything runs', () => {
    const r = runCli(['status', '--socket', missingSocket, '--socket', missingSocket]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(['node-admin: --socket is given more than once; give it once (INVALID_ARGUMENT)']);
  });
});

describe('resolveSocketPath', () => {
  const none = () => false;
  it('prefers --socket', () => {
    expect(resolveSocketPath('/a.sock', '/b.sock', () => true)).toBe('/a.sock');
  });
  it('then $NODE_ADMIN_SOCKET', () => {
    expect(resolveSocketPath(undefined, '/b.sock', () => true)).toBe('/b.sock');
  });
  it('treats empty values as absent', () => {
    expect(resolveSocketPath('', '', none)).toBe(DEFAULT_SOCKET_PATH);
  });
  it('then the default path if it exists', () => {
    expect(resolveSocketPath(undefined, undefined, (p) => p === DEFAULT_SOCKET_PATH || p === SYSTEM_SOCKET_PATH)).toBe(
      DEFAULT_SOCKET_PATH,
    );
  });
  it('then the system path if it exists', () => {
    expect(resolveSocketPath(undefined, undefined, (p) => p === SYSTEM_SOCKET_PATH)).toBe(SYSTEM_SOCKET_PATH);
  });
  it('else the default path', () => {
    expect(resolveSocketPath(undefined, undefined, none)).toBe(DEFAULT_SOCKET_PATH);
  });
});

describe('formatting', () => {
  it('formats bytes', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(1.5 * 1024 ** 3)).toBe('1.5 GiB');
    expect(formatBytes(1024 ** 2)).toBe('1 MiB');
    expect(formatBytes(1024 * 1024 - 1)).toBe('1 MiB');
  });
  it('formats durations', () => {
    expect(formatDuration(850)).toBe('850 ms');
    expect(formatDuration(12_300)).toBe('12.3 s');
    expect(formatDuration(192_000)).toBe('3m 12s');
    expect(formatDuration(7_500_000)).toBe('2h 5m');
  });
});

// In-process, against a fake agent on a real Unix socket.
describe('main() against a fake agent', () => {
  const record: CheckpointRecord = {
    id: '20261122T210045123Z-a1b2',
    createdAt: '2026-11-22T21:00:45.123Z',
    label: 'before upgrade',
    pinned: true,
    trigger: 'manual',
    path: '/data/checkpoints/20261122T210045123Z-a1b2',
    files: 12,
    bytes: 1.5 * 1024 ** 3,
    exclusiveBytes: 1024,
  };
  // An agent from before remote backups: its status has no `backup` field, which the CLI still reads.
  const status: Omit<AgentStatus, 'backup'> = {
    version: '0.1.0',
    pid: 42,
    startedAt: '2026-11-22T20:00:00.000Z',
    dbPath: '/data/db',
    checkpointDir: '/data/checkpoints',
    socketPath: '/run/node-admin/admin.sock',
    checkpoints: { count: 1, pinned: 1, bytes: record.bytes, exclusiveBytes: 1024 },
    inProgress: null,
    queued: 0,
    schedule: { enabled: true, intervalMs: 3_600_000, nextRunAt: '2026-11-22T22:00:00.000Z', lastRun: null },
    retention: { keepLast: 5, keepHourly: 24, keepDaily: 7, keepWeekly: 4, keepMonthly: 0, maxAgeMs: null, minFreeBytes: 1024 ** 3 },
    filesystem: { freeBytes: 10 * 1024 ** 3, totalBytes: 100 * 1024 ** 3 },
  };
  const badReport: VerifyReport = {
    id: record.id,
    ok: false,
    entries: 3,
    durationMs: 12,
    error: { code: 'CORRUPT', message: 'checksum mismatch in 000005.ldb' },
  };

  let dir: string;
  let socketPath: string;
  let server: http.Server;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'node-admin-cli-'));
    socketPath = path.join(dir, 'admin.sock');
    server = http.createServer((req, res) => {
      const send = (code: number, body: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      const url = req.url ?? '';
      if (req.method === 'GET' && url === '/v1/status') return send(200, status);
      if (req.method === 'GET' && url === '/v1/checkpoints') return send(200, [record]);
      if (req.method === 'GET' && url === `/v1/checkpoints/${record.id}`) return send(200, record);
      if (req.method === 'DELETE' && url === `/v1/checkpoints/${record.id}`) {
        return send(409, { error: { code: 'CHECKPOINT_PINNED', message: `checkpoint ${record.id} is pinned` } });
      }
      if (req.method === 'POST' && url === `/v1/checkpoints/${record.id}/verify`) return send(200, badReport);
      return send(404, { error: { code: 'NOT_FOUND', message: 'no such checkpoint' } });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  async function run(args: string[]) {
    let stdout = '';
    let stderr = '';
    const code = await main([...args, '--socket', socketPath], {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
      env: {},
    });
    return { code, stdout, stderr };
  }

  it('status prints a human summary', async () => {
    const r = await run(['status']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('/data/db');
    expect(r.stdout).toContain('1.5 GiB');
    expect(r.stdout).toMatch(/backups:\s+not configured/);
    expect(r.stderr).toBe('');
  });

  it('checkpoint list --json prints exactly the array', async () => {
    const r = await run(['checkpoint', 'list', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([record]);
  });

  it('checkpoint list prints a table', async () => {
    const r = await run(['checkpoint', 'list']);
    expect(r.code).toBe(0);
    const [header, row] = lines(r.stdout);
    expect(header).toMatch(/^ID\s+CREATED\s+TRIGGER\s+PINNED\s+FILES\s+SIZE\s+EXCLUSIVE\s+LABEL$/);
    expect(row).toContain(record.id);
    expect(row).toContain('before upgrade');
  });

  it('checkpoint show --json prints the record', async () => {
    const r = await run(['checkpoint', 'show', record.id, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(record);
  });

  it('deleting a pinned checkpoint exits 4 with CHECKPOINT_PINNED', async () => {
    const r = await run(['checkpoint', 'delete', record.id]);
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/\(CHECKPOINT_PINNED\)\n$/);
  });

  it('a failed verify prints the report with --json, then exits 7', async () => {
    const r = await run(['checkpoint', 'verify', record.id, '--json']);
    expect(r.code).toBe(7);
    expect(JSON.parse(r.stdout)).toEqual(badReport);
    expect((JSON.parse(r.stderr) as { error: { code: string } }).error.code).toBe('CORRUPT');
  });

  it('a failed verify without --json prints one error line', async () => {
    const r = await run(['checkpoint', 'verify', record.id]);
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain('checksum mismatch');
  });
});
