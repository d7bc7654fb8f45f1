import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentStatus, BackupRecord, CancelResult, CheckpointRecord, CopyProgress, CopySummary, LogArchiveTimelines } from '../dist/shared/api.js';
import { SocketClient } from '../dist/shared/socket-client.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { TEST_PASSWORD } from './support/test-password.js';
import { CLI, ROOT, kv, runCli, startExampleNode, tempDir, type CliResult, type RunningNode, until } from './support/processes.js';

/**
 * `backup copy` through a running agent (no --from): the example node as a real process, its default
 * repository (with its log archive) copied into other directories by the built CLI over the socket,
 * while the node goes on writing. What the copy made is checked by restoring from it and from the node's
 * own repository, offline, and comparing every key.
 */

const dir = tempDir('backup-copy-agent');
const MiB = 1024 * 1024;
let node: RunningNode;
let socket: string[];
let source: string;

function parseOne<T>(r: CliResult): T {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

function summaryOf(r: CliResult): CopySummary {
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { summary?: CopySummary });
  const summary = lines.find((l) => l.summary)?.summary;
  expect(summary, r.stdout).toBeDefined();
  return summary!;
}

function errorOf(r: CliResult): { code: string; message: string } {
  expect(r.stdout).toBe('');
  return (JSON.parse(r.stderr.trim()) as { error: { code: string; message: string } }).error;
}

async function writeRandom(prefix: string, count: number, size: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const value = randomBytes(Math.ceil((size * 3) / 4)).toString('base64');
    expect((await kv(node.port, 'PUT', `${prefix}/${String(i).padStart(4, '0')}`, value)).status).toBe(204);
  }
}

async function readAll(dbPath: string): Promise<Map<string, string>> {
  const db = new ClassicLevel<string, string>(dbPath, { createIfMissing: false });
  await db.open();
  const out = new Map<string, string>();
  for await (const [k, v] of db.iterator()) out.set(k, v);
  await db.close();
  return out;
}

/** Restores from `repo` into a fresh directory, by backup id or moment; returns every key. */
async function restored(repo: Repository, what: { id: string } | { at: number }): Promise<Map<string, string>> {
  const to = path.join(dir, `restored-${randomBytes(4).toString('hex')}`);
  if ('id' in what) await restoreBackup({ repo, id: what.id, to });
  else await restoreToMoment({ repo, at: what.at, to });
  const keys = await readAll(to);
  fs.rmSync(to, { recursive: true, force: true });
  return keys;
}

async function openRepo(dirPath: string): Promise<Repository> {
  return Repository.open(new DirStorage(dirPath), { password: async () => Buffer.from(TEST_PASSWORD), cryptoThreads: 0 });
}

async function timeline(repo: string): Promise<LogArchiveTimelines> {
  return parseOne<LogArchiveTimelines>(await runCli(['backup', 'timeline', '--repo', repo, '--json']));
}

beforeAll(async () => {
  // The node's defaults: its own repository (file://<data-dir>/backups) and its log archive.
  node = await startExampleNode(path.join(dir, 'node'), [], { defaults: true });
  socket = ['--socket', node.socketPath];
  source = pathToFileURL(path.join(dir, 'node', 'backups')).href;
  // The archive's own base backup, made at its start, first: one backup runs at a time.
  await until("the log archive's base backup", async () => {
    const status = parseOne<AgentStatus>(await runCli(['status', '--json', ...socket]));
    return status.backup?.inProgress === null && status.backup.lastBackup?.ok === true ? true : null;
  });
  await writeRandom('one', 12, 512 * 1024);
  const cp = parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));
  parseOne<BackupRecord>(await runCli(['backup', 'create', '--checkpoint', cp.id, '--json', ...socket]));
  await writeRandom('two', 12, 512 * 1024);
  const cp2 = parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));
  parseOne<BackupRecord>(await runCli(['backup', 'create', '--checkpoint', cp2.id, '--json', ...socket]));
}, 120_000);

afterAll(async () => {
  await node?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('backup copy through a running agent', () => {
  it('copies the backups and the log archive of a node that keeps writing: restores equal the source, by id and --at; again sends nothing', async () => {
    const dest = path.join(dir, 'B');
    // Writes go on while the copy reads the live repository (the archive ships them every second).
    let writing = true;
    let firstAcked: number | null = null;
    const writes = (async () => {
      for (let i = 0; writing; i++) {
        await kv(node.port, 'PUT', `live/${String(i).padStart(6, '0')}`, randomBytes(64).toString('hex'));
        firstAcked ??= Date.now();
      }
    })();
    let summary: CopySummary;
    try {
      // At least one write of the load archived before the copy lists the archive (the copy is quicker
      // than the archive's interval): the check below that the copy holds some is then not left to a race.
      // (A segment stored a whole interval after the first write was acknowledged holds it.)
      await until('a write of the load archived', async () => {
        const shipped = parseOne<AgentStatus>(await runCli(['status', '--json', ...socket])).logArchive?.lastShipped;
        return firstAcked !== null && shipped && Date.parse(shipped.at) > firstAcked + 1000 ? true : null;
      });
      summary = summaryOf(await runCli(['backup', 'copy', '--to', dest, '--all', '--log-archive', '--json', ...socket]));
    } finally {
      writing = false;
      await writes;
    }
    const backups = parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', ...socket]));
    expect(summary.copied).toEqual(backups.map((b) => b.id));
    expect(summary.created).toBe(true);
    expect(summary.mode).toBe('packs');
    expect(summary.logArchive?.segments).toBeGreaterThan(0);
    expect(summary.from).toBe(source);

    const [a, b] = [await openRepo(path.join(dir, 'node', 'backups')), await openRepo(dest)];
    try {
      for (const backup of backups) expect(await restored(b, { id: backup.id })).toEqual(await restored(a, { id: backup.id }));
      expect((await restored(b, { id: backups.at(-1)!.id })).size).toBe(24);
      // Moments of the copied archive: its window's end, and two inside it; each restores as at the source.
      const window = (await timeline(dest)).timelines.find((t) => t.from !== null && t.to !== null);
      expect(window).toBeDefined();
      const [from, to] = [Date.parse(window!.from!), Date.parse(window!.to!)];
      let live = 0;
      for (const at of [to, (from + to) / 2, from + (to - from) / 4]) {
        const fromCopy = await restored(b, { at: Math.floor(at) });
        expect(fromCopy).toEqual(await restored(a, { at: Math.floor(at) }));
        live = Math.max(live, [...fromCopy.keys()].filter((k) => k.startsWith('live/')).length);
      }
      // The copy caught writes the node made while it ran.
      expect(live).toBeGreaterThan(0);
    } finally {
      await a.codec.close();
      await b.codec.close();
    }

    const again = summaryOf(await runCli(['backup', 'copy', '--to', dest, '--all', '--json', ...socket]));
    expect(again.copied).toEqual([]);
    expect(again.alreadyThere).toEqual(backups.map((b) => b.id));
    expect(again.packsSent).toBe(0);
    expect(again.bytesSent).toBe(0);
    // The agent counts its copies like its other operations.
    const metrics = (await runCli(['metrics', ...socket])).stdout;
    expect(metrics).toMatch(/node_admin_operation_duration_seconds_count\{operation="backup_copy"\} 2\b/);
  });

  it('one copy at a time, a prune waits its turn; backup cancel --copy stops a copy, and the next one sends only what is missing', async () => {
    const dest = path.join(dir, 'C');
    // 0.5 MB/s: the first pack goes at once, the rest (about 12 MB) would take more than 20 s, far
    // longer than the commands below take even on a loaded machine (at 2 MB/s, one run in a few
    // under load saw the copy end before its cancel).
    const child = spawn(process.execPath, [CLI, 'backup', 'copy', '--to', dest, '--all', '--limit-upload', '0.5', '--json', ...socket], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const progress = () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{"progress"'))
        .map((l) => (JSON.parse(l) as { progress: CopyProgress }).progress);
    await until('a first pack sent', () => (progress().some((p) => p.packsSent >= 1) ? true : null), 30_000);

    const second = await runCli(['backup', 'copy', '--to', path.join(dir, 'D'), '--all', '--json', ...socket]);
    expect(second.code).toBe(5);
    expect(errorOf(second)).toMatchObject({ code: 'BUSY', message: expect.stringMatching(/^a copy into file:\/\/.*\/C is running/) });
    expect(fs.existsSync(path.join(dir, 'D'))).toBe(false);
    const prune = await runCli(['backup', 'prune', '--json', ...socket]);
    expect(prune.code).toBe(5);
    expect(errorOf(prune).code).toBe('BUSY');

    expect(parseOne<CancelResult>(await runCli(['backup', 'cancel', '--copy', '--json', ...socket]))).toEqual({ cancelled: 1 });
    expect(await exited).toBe(130);
    expect(JSON.parse(err.trim())).toMatchObject({ error: { code: 'CANCELLED' } });
    const sentBefore = Math.max(...progress().map((p) => p.bytesSent));
    expect(sentBefore).toBeGreaterThan(0);
    expect(parseOne<CancelResult>(await runCli(['backup', 'cancel', '--copy', '--json', ...socket]))).toEqual({ cancelled: 0 });

    // Ctrl-C of the CLI asks the agent to stop the copy it runs for it (a kill would leave the copy
    // running). Into a destination of its own, so that it has every pack still to send when the signal comes.
    const dest2 = path.join(dir, 'C2');
    const interrupted = spawn(process.execPath, [CLI, 'backup', 'copy', '--to', dest2, '--all', '--limit-upload', '0.5', '--json', ...socket], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let interruptedOut = '';
    let interruptedErr = '';
    interrupted.stdout.on('data', (d: Buffer) => (interruptedOut += d.toString()));
    interrupted.stderr.on('data', (d: Buffer) => (interruptedErr += d.toString()));
    const interruptedExit = new Promise<number | null>((resolve) => interrupted.on('close', resolve));
    await until('a first pack sent by the second copy', () => (interruptedOut.includes('{"progress"') && /"packsSent":[1-9]/.test(interruptedOut) ? true : null), 30_000);
    interrupted.kill('SIGINT');
    expect(await interruptedExit).toBe(130);
    expect(JSON.parse(interruptedErr.trim())).toMatchObject({ error: { code: 'CANCELLED' } });
    expect(parseOne<CancelResult>(await runCli(['backup', 'cancel', '--copy', '--json', ...socket]))).toEqual({ cancelled: 0 });

    const rest = summaryOf(await runCli(['backup', 'copy', '--to', dest, '--all', '--json', ...socket]));
    const full = summaryOf(await runCli(['backup', 'copy', '--from', source, '--to', path.join(dir, 'E'), '--all', '--json']));
    // What the cancelled runs stored is not sent again: with the rerun, each sent what one whole copy sends.
    expect(rest.bytesSent + sentBefore).toBe(full.bytesSent);
    const sentInterrupted = Math.max(...interruptedOut.split('\n').filter((l) => l.startsWith('{"progress"')).map((l) => (JSON.parse(l) as { progress: CopyProgress }).progress.bytesSent));
    expect(sentInterrupted).toBeGreaterThan(0);
    const rest2 = summaryOf(await runCli(['backup', 'copy', '--to', dest2, '--all', '--json', ...socket]));
    expect(rest2.bytesSent + sentInterrupted).toBe(full.bytesSent);
    const verify = parseOne<{ ok: boolean }>(await runCli(['backup', 'verify', '--repo', dest, '--read-data', '--json']));
    expect(verify.ok).toBe(true);
  });

  it('refuses what does not go through the agent: one error line, nothing made', async () => {
    const dest = path.join(dir, 'F');
    for (const [args, code] of [
      [['--all', '--from-password-file', '/etc/hostname'], 'INVALID_ARGUMENT'],
      [['--all', '--password-command', 'echo secret'], 'INVALID_ARGUMENT'],
      [[], 'INVALID_ARGUMENT'],
      [['--latest', '0'], 'INVALID_ARGUMENT'],
      [['20200101t000000000z-abcd'], 'NOT_FOUND'],
    ] as const) {
      const r = await runCli(['backup', 'copy', '--to', dest, ...args, '--json', ...socket]);
      expect(r.code, r.stderr).not.toBe(0);
      expect(errorOf(r).code).toBe(code);
    }
    // Into itself: refused by the repository's id, not its spelling.
    const self = await runCli(['backup', 'copy', '--to', path.join(dir, 'node', 'backups', '.'), '--all', '--json', ...socket]);
    expect(errorOf(self).code).toBe('INVALID_ARGUMENT');
    expect(fs.existsSync(dest)).toBe(false);
    // The socket checks what a client other than the CLI sends.
    const client = new SocketClient({ socketPath: node.socketPath });
    for (const bad of [{ to: 'ftp://x' }, { to: 'file:///tmp/x' }, { to: 'file:///tmp/x', select: { all: true, latest: 1 } }, { to: 'file:///tmp/x', select: { all: true }, passwordFile: 'relative' }, { to: 'file:///tmp/x', select: { all: true }, extra: 1 }]) {
      await expect(client.copyBackups(bad as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });
});
