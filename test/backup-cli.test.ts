import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { afterAll, describe, expect, it } from 'vitest';
import { kv, runCli, startExampleNode, tempDir, type CliResult, type RunningNode, until } from './support/processes.js';
import type { AgentStatus, BackupRecord, BackupVerifyReport, CancelResult, CheckpointRecord } from '../dist/shared/index.js';

/**
 * Remote backups through real processes only: the example node (its default repository,
 * file://<data-dir>/backups), the built CLI, the admin socket (curl for the NDJSON stream).
 */

const execFileAsync = promisify(execFile);
const BACKUP_ID = /^\d{8}t\d{9}z-[0-9a-f]{4}$/;
const UNKNOWN_BACKUP = '20200101t000000000z-abcd';
const KiB = 1024;
const MiB = 1024 * KiB;

function parseOne<T>(r: CliResult): T {
  expect(r.stderr, r.stderr).toBe('');
  expect(r.code, r.stderr).toBe(0);
  // Exactly one JSON document: JSON.parse refuses anything after it.
  return JSON.parse(r.stdout) as T;
}

/** One error line on stderr (`node-admin: ... (CODE)`, or its JSON form with --json), nothing on stdout. */
function oneErrorLine(r: CliResult, code: string): void {
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines).toHaveLength(1);
  if (lines[0]!.startsWith('{')) expect((JSON.parse(lines[0]!) as { error: { code: string } }).error.code).toBe(code);
  else expect(lines[0]).toMatch(new RegExp(`^node-admin: .*\\(${code}\\)$`));
}

async function readAll(dbPath: string): Promise<Record<string, string>> {
  const db = new ClassicLevel<string, string>(dbPath, { createIfMissing: false });
  await db.open();
  const out: Record<string, string> = {};
  for await (const [k, v] of db.iterator()) out[k] = v;
  await db.close();
  return out;
}

/** Total bytes of the packs in a directory repository. */
function packBytes(repoDir: string): number {
  const data = path.join(repoDir, 'data');
  if (!fs.existsSync(data)) return 0;
  let total = 0;
  for (const sub of fs.readdirSync(data)) {
    for (const name of fs.readdirSync(path.join(data, sub))) {
      if (/^[0-9a-f]{64}$/.test(name)) total += fs.statSync(path.join(data, sub, name)).size;
    }
  }
  return total;
}

/** Random, incompressible values of about `size` bytes (base64 of random bytes: snappy cannot shrink it). */
async function writeRandom(port: number, prefix: string, count: number, size: number): Promise<Record<string, string>> {
  const written: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const key = `${prefix}/${String(i).padStart(4, '0')}`;
    const value = randomBytes(Math.ceil((size * 3) / 4)).toString('base64');
    expect((await kv(port, 'PUT', key, value)).status).toBe(204);
    written[key] = value;
  }
  return written;
}

describe('remote backups: create, list, verify, stream, restore', () => {
  const dir = tempDir('backup-cli');
  let node: RunningNode | null = null;

  afterAll(async () => {
    if (node) await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('backs a checkpoint up incrementally and restores exactly its keys elsewhere', async () => {
    node = await startExampleNode(dir);
    const socket = ['--socket', node.socketPath];
    const repoDir = path.join(dir, 'backups');
    const repoUrl = pathToFileURL(repoDir).href;

    // Before any backup: nothing, and the repository does not exist yet.
    expect(parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', ...socket]))).toEqual([]);

    const before: Record<string, string> = await writeRandom(node.port, 'big', 6, 512 * KiB);
    for (let i = 0; i < 300; i++) {
      const key = `user/${i}`;
      const value = `v${i}-${'x'.repeat(i % 50)}`;
      expect((await kv(node.port, 'PUT', key, value)).status).toBe(204);
      before[key] = value;
    }

    // No checkpoint yet: the backup takes one first (label "backup").
    const first = parseOne<BackupRecord>(await runCli(['backup', 'create', '--json', ...socket]));
    expect(first.id).toMatch(BACKUP_ID);
    expect(first.checkpoint).toMatchObject({ label: 'backup', trigger: 'manual' });
    expect(first.files).toBeGreaterThan(0);
    expect(first.bytes).toBeGreaterThan(3 * MiB);
    expect(first.bytesUploaded).toBeGreaterThan(0);
    expect(typeof first.durationMs).toBe('number');

    // Written after the backup's checkpoint: no restore of it may hold these.
    for (let i = 0; i < 50; i++) await kv(node.port, 'PUT', `after/${i}`, 'later');
    await kv(node.port, 'PUT', 'user/0', 'changed later');

    // The same checkpoint again: every chunk is in the repository, only a snapshot is new.
    const again = parseOne<BackupRecord>(await runCli(['backup', 'create', '--checkpoint', first.checkpoint.id, '--json', ...socket]));
    expect(again.id).not.toBe(first.id);
    expect(again.checkpoint.id).toBe(first.checkpoint.id);
    expect(again.bytes).toBe(first.bytes);
    expect(again.bytesUploaded).toBeLessThan(64 * KiB);

    // The socket streams NDJSON: progress lines, then exactly one result line.
    const headers = path.join(dir, 'stream-headers.txt');
    const { stdout } = await execFileAsync('curl', [
      '-sS',
      '-D',
      headers,
      '--unix-socket',
      node.socketPath,
      '-X',
      'POST',
      '-H',
      'content-type: application/json',
      '--data',
      JSON.stringify({ checkpointId: first.checkpoint.id }),
      'http://localhost/v1/backups',
    ]);
    expect(fs.readFileSync(headers, 'utf8')).toMatch(/^HTTP\/1\.1 200 [\s\S]*content-type: application\/x-ndjson/im);
    const lines = stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const line of lines.slice(0, -1)) {
      expect(Object.keys(line)).toEqual(['progress']);
      expect(line.progress).toMatchObject({ filesTotal: first.files, bytesTotal: first.bytes });
    }
    const last = lines.at(-1)!;
    expect(Object.keys(last)).toEqual(['result']);
    const streamed = last.result as BackupRecord;
    expect(streamed.id).toMatch(BACKUP_ID);
    expect(streamed.checkpoint.id).toBe(first.checkpoint.id);

    // Listed through the agent and read from the repository directly (no agent involved): the same.
    const viaAgent = parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', ...socket]));
    const viaRepo = parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', '--repo', repoUrl]));
    expect(viaAgent.map((r) => r.id)).toEqual([first.id, again.id, streamed.id]);
    expect(viaRepo).toEqual(viaAgent);
    for (const r of viaAgent) {
      expect(r).toMatchObject({ checkpoint: { id: first.checkpoint.id, label: 'backup' }, files: first.files, bytes: first.bytes, pinned: false });
      expect(typeof r.createdAt).toBe('string');
    }
    expect(parseOne<BackupRecord>(await runCli(['backup', 'show', first.id, '--json', ...socket]))).toEqual(viaAgent[0]);
    expect(parseOne<BackupRecord>(await runCli(['backup', 'show', first.id, '--json', '--repo', repoDir]))).toEqual(viaAgent[0]);

    // Not found, bad id: one error line each, the right exit code.
    const unknown = await runCli(['backup', 'show', UNKNOWN_BACKUP, ...socket]);
    expect(unknown.code).toBe(3);
    oneErrorLine(unknown, 'NOT_FOUND');
    const unknownDirect = await runCli(['backup', 'show', UNKNOWN_BACKUP, '--repo', repoUrl]);
    expect(unknownDirect.code).toBe(3);
    const badId = await runCli(['backup', 'show', '../config', ...socket]);
    expect(badId.code).toBe(2);
    oneErrorLine(badId, 'INVALID_ARGUMENT');

    // Every byte read back and re-hashed, through the agent and directly.
    const verified = parseOne<BackupVerifyReport>(await runCli(['backup', 'verify', '--read-data', '--json', ...socket]));
    expect(verified).toMatchObject({ ok: true, snapshots: 3, errors: [] });
    expect(verified.bytesRead).toBeGreaterThan(0);
    const human = await runCli(['backup', 'verify', first.id, '--read-data', '--repo', repoUrl]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/ ok: /);

    // Status shows the repository and the last backup.
    const status = parseOne<AgentStatus>(await runCli(['status', '--json', ...socket]));
    expect(status.backup).toMatchObject({ repository: repoUrl, inProgress: null, lastBackup: { ok: true, id: streamed.id, error: null } });

    // The node is gone (a new machine, say): restore from the repository alone.
    expect(await node.stop()).toBe(0);
    node = null;
    const restoredDir = path.join(dir, 'restored');
    const restored = await runCli(['backup', 'restore', first.id, '--repo', repoUrl, '--to', restoredDir]);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    expect(restored.stdout).toContain(restoredDir);
    expect(restored.stdout).toMatch(/stop the node/);
    expect(await readAll(restoredDir)).toEqual(before);

    // A target that is not empty is refused, and left alone.
    const refused = await runCli(['backup', 'restore', first.id, '--repo', repoUrl, '--to', restoredDir]);
    expect(refused.code).toBe(2);
    oneErrorLine(refused, 'INVALID_ARGUMENT');
    expect(await readAll(restoredDir)).toEqual(before);

    // And the same through --json into a fresh directory.
    const json = parseOne<{ id: string; path: string; files: number; bytes: number }>(
      await runCli(['backup', 'restore', again.id, '--repo', repoDir, '--to', path.join(dir, 'restored-2'), '--json']),
    );
    expect(json).toMatchObject({ id: again.id, path: path.join(dir, 'restored-2'), files: first.files, bytes: first.bytes });
    expect(await readAll(json.path)).toEqual(before);

    // One read at a time (--concurrency), the same data; a bad value is refused before anything is made.
    const serial = await runCli(['backup', 'restore', again.id, '--repo', repoDir, '--to', path.join(dir, 'restored-3'), '--concurrency', '1']);
    expect(serial.code, serial.stderr).toBe(0);
    expect(await readAll(path.join(dir, 'restored-3'))).toEqual(before);
    for (const bad of ['0', '65', 'many']) {
      const r = await runCli(['backup', 'restore', again.id, '--repo', repoDir, '--to', path.join(dir, 'restored-4'), '--concurrency', bad]);
      expect(r.code).toBe(2);
      oneErrorLine(r, 'INVALID_ARGUMENT');
      expect(fs.existsSync(path.join(dir, 'restored-4'))).toBe(false);
    }
  });
});

describe('remote backups: one at a time, cancel, reuse after cancel', () => {
  const dir = tempDir('backup-slow');
  let node: RunningNode | null = null;

  afterAll(async () => {
    if (node) await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('cancel stops a slow backup; the next one uploads only what is missing; a second create while one runs is BUSY', async () => {
    // 3 MiB/s: the first pack (8 MiB) goes at once, each later one waits its turn.
    node = await startExampleNode(dir, ['--backup-bwlimit', '3MiB/s']);
    const socket = ['--socket', node.socketPath];
    const repoDir = path.join(dir, 'backups');
    const status = async () => parseOne<AgentStatus>(await runCli(['status', '--json', ...socket])).backup!;

    await writeRandom(node.port, 'one', 24, MiB);
    const cp = parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));

    // A slow backup, cancelled once its first pack is stored.
    const slow = runCli(['backup', 'create', '--checkpoint', cp.id, '--json', ...socket]);
    await until('a first pack in the repository', () => (packBytes(repoDir) > 0 ? true : null));
    const cancel = parseOne<CancelResult>(await runCli(['backup', 'cancel', '--json', ...socket]));
    expect(cancel).toEqual({ cancelled: 1 });
    const cancelled = await slow;
    expect(cancelled.code).toBe(130);
    oneErrorLine(cancelled, 'CANCELLED');
    expect((await status()).lastBackup).toMatchObject({ ok: false, id: null });
    expect((await status()).lastBackup?.error).toMatch(/^CANCELLED: /);
    const kept = packBytes(repoDir);
    expect(kept).toBeGreaterThan(0);
    expect(parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', ...socket]))).toEqual([]);
    const none = parseOne<CancelResult>(await runCli(['backup', 'cancel', '--json', ...socket]));
    expect(none).toEqual({ cancelled: 0 });

    // The next backup of the same checkpoint reuses what the cancelled one stored.
    const next = parseOne<BackupRecord>(await runCli(['backup', 'create', '--checkpoint', cp.id, '--json', ...socket]));
    expect(next.bytes).toBe(cp.bytes);
    expect(next.bytesUploaded).toBeLessThan(next.bytes);
    expect(next.bytesUploaded!).toBeLessThan(next.bytes - kept + 64 * KiB);

    // New data, a new checkpoint: a slow backup again; a second create meanwhile is BUSY (exit 5).
    await writeRandom(node.port, 'two', 24, MiB);
    const cp2 = parseOne<CheckpointRecord>(await runCli(['checkpoint', 'create', '--json', ...socket]));
    const running = runCli(['backup', 'create', '--json', ...socket]);
    const progress = await until('the backup to be running', async () => (await status()).inProgress);
    expect(progress.checkpointId).toBe(cp2.id);
    const busy = await runCli(['backup', 'create', '--json', ...socket]);
    expect(busy.code).toBe(5);
    expect(busy.stdout).toBe('');
    const busyError = (JSON.parse(busy.stderr) as { error: { code: string; message: string } }).error;
    expect(busyError.code).toBe('BUSY');
    // It says what it waits for: whose backup, of what, since when, how far.
    expect(busyError.message).toMatch(new RegExp(`^a backup of checkpoint ${cp2.id} is running \\(since ${progress.startedAt}, .+\\); try again when it ends`));
    const done = parseOne<BackupRecord>(await running);
    expect(done.checkpoint.id).toBe(cp2.id);
    expect(done.bytesUploaded).toBeGreaterThan(0);

    // Backups exist and hold up; nothing running any more.
    const listed = parseOne<BackupRecord[]>(await runCli(['backup', 'list', '--json', ...socket]));
    expect(listed.map((r) => r.id)).toEqual([next.id, done.id]);
    expect(parseOne<BackupVerifyReport>(await runCli(['backup', 'verify', '--read-data', '--json', ...socket])).ok).toBe(true);
    expect((await status()).inProgress).toBeNull();
  });
});

describe('remote backups: errors before any work starts', () => {
  const dir = tempDir('backup-none');
  let node: RunningNode | null = null;

  afterAll(async () => {
    if (node) await node.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an agent without a repository answers BACKUP_NOT_CONFIGURED (409, exit 4); a bad body is a plain 400', async () => {
    node = await startExampleNode(dir, ['--backup-repo', 'none']);
    const socket = ['--socket', node.socketPath];
    for (const args of [['backup', 'create'], ['backup', 'list'], ['backup', 'verify'], ['backup', 'prune', '--dry-run'], ['backup', 'cancel']]) {
      const r = await runCli([...args, ...socket]);
      expect(r.code, args.join(' ')).toBe(4);
      oneErrorLine(r, 'BACKUP_NOT_CONFIGURED');
    }
    expect(parseOne<AgentStatus>(await runCli(['status', '--json', ...socket])).backup).toBeNull();

    // Refused before streaming: an ordinary JSON error with its status, not an NDJSON stream.
    /** [body, "<status> <content type>"] */
    const curl = async (body: string): Promise<[string, string]> => {
      const { stdout } = await execFileAsync('curl', [
        '-sS',
        '-w',
        '\n%{http_code} %{content_type}',
        '--unix-socket',
        node!.socketPath,
        '-X',
        'POST',
        '-H',
        'content-type: application/json',
        '--data',
        body,
        'http://localhost/v1/backups',
      ]);
      const cut = stdout.lastIndexOf('\n');
      return [stdout.slice(0, cut), stdout.slice(cut + 1)];
    };
    const [notConfigured, statusLine] = await curl('{}');
    expect(statusLine).toMatch(/^409 application\/json/);
    expect(JSON.parse(notConfigured)).toMatchObject({ error: { code: 'BACKUP_NOT_CONFIGURED' } });
    const [bad, badStatus] = await curl('{"checkpointId":"../x"}');
    expect(badStatus).toMatch(/^400 application\/json/);
    expect(JSON.parse(bad)).toMatchObject({ error: { code: 'INVALID_ARGUMENT' } });
    const [unknownField, unknownStatus] = await curl('{"label":"x"}');
    expect(unknownStatus).toMatch(/^400 /);
    expect(JSON.parse(unknownField)).toMatchObject({ error: { code: 'INVALID_ARGUMENT' } });
  });
});
