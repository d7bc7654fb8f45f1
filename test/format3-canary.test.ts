/**
 * Nothing the node stores reaches an encrypted repository readable: the example node (a real process)
 * takes canary keys and values (random tokens) over its KV API, backs up in full and incrementally
 * (the CLI, through the socket) and archives its log for a while with more canaries written; then every
 * byte of every file of the repository is scanned for every canary, raw, as hex and as base64 at each of
 * the three alignments, and none is found, although a restore from it holds them all. The same scan over
 * a repository made with --backup-insecure-no-encryption finds them (in packs and in log segments),
 * and finds every form planted in a file: the scan can find what it looks for.
 *
 * The encrypted node starts with no password anywhere (NODE_ADMIN_PASSWORD_FILE and
 * CREDENTIALS_DIRECTORY taken out of its environment): it makes <data-dir>/backup-password (0600),
 * says where it is, keeps it across a restart, and `status` shows where the password comes from and
 * that the repository is encrypted.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import type { AgentStatus, BackupRecord, CheckpointRecord } from '../dist/shared/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { readWindows } from '../dist/agent/log-archive/restore-to-moment.js';
import { EXAMPLE_NODE, kv, runCli, tempDir, type CliResult } from './support/processes.js';
import { until } from './support/pitr-writers.js';

const dirs: string[] = [];
const nodes: ChildProcess[] = [];

afterAll(async () => {
  for (const child of nodes) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The environment of a process given no password at all. */
function noPasswordEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_ADMIN_SOCKET: '' };
  delete env.NODE_ADMIN_PASSWORD_FILE;
  delete env.CREDENTIALS_DIRECTORY;
  return env;
}

interface Node {
  port: number;
  socket: string[];
  output: () => string;
  stop: () => Promise<number | null>;
}

/** The example node as a real process, in `env`, once it said "node ready". */
async function startNode(dataDir: string, args: string[], env: NodeJS.ProcessEnv): Promise<Node> {
  const socketPath = path.join(dataDir, 'run', 'admin.sock');
  const child = spawn(process.execPath, [EXAMPLE_NODE, '--data-dir', dataDir, '--port', '0', '--socket', socketPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  nodes.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let failed: number | null | undefined;
  void exited.then((code) => (failed = code));
  await until('the node to be ready', () => {
    if (failed !== undefined) throw new Error(`example node exited with ${failed} before it was ready:\n${out}`);
    return out.includes('"node ready"');
  });
  const ready = out.split('\n').find((l) => l.includes('"node ready"'))!;
  return {
    port: (JSON.parse(ready) as { port: number }).port,
    socket: ['--socket', socketPath],
    output: () => out,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Everything the CLI printed in this file (searched for the node's password at the end). */
const printed: string[] = [];

async function cli(args: string[], env: NodeJS.ProcessEnv = noPasswordEnv()): Promise<CliResult> {
  const r = await runCli(args, { env, inheritEnv: false });
  printed.push(r.stdout, r.stderr);
  return r;
}

function json<T>(r: CliResult): T {
  expect(r.stderr, r.stderr).toBe('');
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

/**
 * The byte strings a canary could leave in a file: itself; its hex (either case); its base64 and base64url
 * as it would read at each of the three alignments inside a longer encoded run (only the characters
 * that its bytes alone decide: the ones shared with bytes around it are cut).
 */
function canaryForms(canary: Buffer): { form: string; bytes: Buffer }[] {
  const out = [
    { form: 'raw', bytes: canary },
    { form: 'hex', bytes: Buffer.from(canary.toString('hex')) },
    { form: 'HEX', bytes: Buffer.from(canary.toString('hex').toUpperCase()) },
  ];
  for (const shift of [0, 1, 2]) {
    for (const encoding of ['base64', 'base64url'] as const) {
      const text = Buffer.concat([Buffer.alloc(shift), canary]).toString(encoding);
      const first = [0, 2, 3][shift]!;
      const end = Math.floor((shift + canary.length) / 3) * 4;
      out.push({ form: `${encoding}+${shift}`, bytes: Buffer.from(text.slice(first, end)) });
    }
  }
  return out;
}

/** Every file under `root` (a directory repository: every object, and anything else there). */
function filesUnder(root: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(root, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.join(e.parentPath, e.name));
  return out;
}

interface Hit {
  canary: string;
  form: string;
  file: string;
}

/** Every (canary, form, file) where the form occurs in the file. */
function scan(root: string, canaries: string[]): Hit[] {
  const hits: Hit[] = [];
  const forms = canaries.flatMap((c) => canaryForms(Buffer.from(c)).map((f) => ({ canary: c, ...f })));
  for (const file of filesUnder(root)) {
    const data = fs.readFileSync(file);
    for (const f of forms) if (data.includes(f.bytes)) hits.push({ canary: f.canary, form: f.form, file: path.relative(root, file) });
  }
  return hits;
}

/** A checkpoint of what the node holds now, and a backup of it (`backup create` alone takes the newest checkpoint). */
async function backUp(socket: string[]): Promise<BackupRecord> {
  const checkpoint = json<CheckpointRecord>(await cli(['checkpoint', 'create', '--json', ...socket]));
  const record = json<BackupRecord>(await cli(['backup', 'create', '--checkpoint', checkpoint.id, '--json', ...socket]));
  expect(record.bytesUploaded).toBeGreaterThan(0);
  return record;
}

/** A canary: 24 random bytes as text (what a key or value of the node holds). */
const canary = () => randomBytes(24).toString('base64url');

/**
 * Writes `n` canaries as keys and `n` as values; half the values inside compressible text (the
 * repository's compression gets to work on them). Returns the canaries and what the database must hold.
 */
async function writeCanaries(port: number, n: number): Promise<{ canaries: string[]; kv: Record<string, string> }> {
  const canaries: string[] = [];
  const written: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const inKey = canary();
    const inValue = canary();
    const key = `user/${inKey}`;
    const value = i % 2 === 0 ? inValue : `${'the same words again and again, '.repeat(40)}${inValue}`;
    expect((await kv(port, 'PUT', key, value)).status).toBe(204);
    canaries.push(inKey, inValue);
    written[key] = value;
  }
  return { canaries, kv: written };
}

/**
 * Waits until the log archive in the repository at `repoDir` reaches sequence `sequence`: the node's
 * database starts empty and each PUT is one sequence number, so after n PUTs, everything written.
 */
async function archivedUpTo(repoDir: string, sequence: number): Promise<void> {
  await until('the repository made', () => fs.existsSync(path.join(repoDir, 'config')));
  const storage = await openStorage(pathToFileURL(repoDir).href, {});
  try {
    await until('the writes archived', async () => ((await readWindows(storage)).timelines.at(-1)?.lastSequence ?? -1) >= sequence);
  } finally {
    await storage.close();
  }
}

async function readAll(dbDir: string): Promise<Record<string, string>> {
  const db = new ClassicLevel<string, string>(dbDir, { createIfMissing: false });
  await db.open();
  const out: Record<string, string> = {};
  for await (const [k, v] of db.iterator()) out[k] = v;
  await db.close();
  return out;
}

describe('format 3: no canary in the repository', () => {
  it('the scan finds every form it looks for, planted at any offset (the scan can fail)', () => {
    const d = tempDir('f3-canary-scan');
    dirs.push(d);
    const c = canary();
    for (const { form, bytes } of canaryForms(Buffer.from(c))) {
      const name = path.join(d, form);
      fs.writeFileSync(name, Buffer.concat([randomBytes(1000), bytes, randomBytes(1000)]));
      expect(scan(d, [c]).filter((h) => h.file === form).map((h) => h.form), form).toContain(form);
      fs.rmSync(name);
    }
    // And base64 of a longer run holding the canary at each offset is found by one of the three alignments.
    for (const shift of [0, 1, 2]) {
      fs.writeFileSync(path.join(d, 'run'), Buffer.from(Buffer.concat([randomBytes(30 + shift), Buffer.from(c), randomBytes(30)]).toString('base64')));
      expect(scan(d, [c]).map((h) => h.form), `offset ${shift}`).toContain(`base64+${(30 + shift) % 3}`);
    }
    expect(scan(d, [canary()])).toEqual([]);
  });

  it('encrypted (a node given no password): full and incremental backups and the log archive hold no canary, and restore them all', async () => {
    const dataDir = tempDir('f3-canary');
    dirs.push(dataDir);
    const repoDir = path.join(dataDir, 'backups');
    const passwordFile = path.join(dataDir, 'backup-password');
    const node = await startNode(dataDir, ['--log-archive', 'on', '--log-archive-interval', '200ms'], noPasswordEnv());

    // The password it made: outside the repository, 0600, said where.
    expect(node.output()).toContain(`example-node: made a password for the encrypted backups: ${passwordFile}`);
    expect(node.output()).toMatch(/without it no backup in the repository can be read/);
    expect(fs.statSync(passwordFile).mode & 0o777).toBe(0o600);
    const password = fs.readFileSync(passwordFile, 'utf8').trim();
    expect(password).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const status = async () => json<AgentStatus>(await cli(['status', '--json', ...node.socket])).backup!;
    expect((await status()).passwordSource).toBe(`file ${passwordFile}`);
    // The log archive opens (creates) the repository at start: then status says what it found.
    const encryption = await until('the repository opened', async () => (await status()).encryption !== null).then(async () => (await status()).encryption);
    expect(encryption).toEqual({ format: 3, encrypted: true, keyId: expect.stringMatching(/^[0-9a-f]+$/) });

    // Canaries, a full backup; more, an incremental one; more, archived only.
    const first = await writeCanaries(node.port, 15);
    const full = await backUp(node.socket);
    const second = await writeCanaries(node.port, 15);
    const incremental = await backUp(node.socket);
    const third = await writeCanaries(node.port, 15);
    await archivedUpTo(repoDir, 45);
    const listed = json<BackupRecord[]>(await cli(['backup', 'list', '--json', ...node.socket]));
    expect(listed.map((b) => b.id)).toEqual(expect.arrayContaining([full.id, incremental.id]));
    for (const b of listed) expect(b.encrypted).toBe(true);
    expect(await node.stop()).toBe(0);

    // The data is there: a restore to the latest moment holds every canary.
    const canaries = [...first.canaries, ...second.canaries, ...third.canaries];
    const fromBackup = path.join(dataDir, 'restored-backup');
    json<unknown>(await cli(['backup', 'restore', incremental.id, '--repo', repoDir, '--to', fromBackup, '--password-file', passwordFile, '--json']));
    expect(await readAll(fromBackup)).toEqual({ ...first.kv, ...second.kv });
    const restored = path.join(dataDir, 'restored');
    json<unknown>(await cli(['backup', 'restore', '--at', 'latest', '--repo', repoDir, '--to', restored, '--password-file', passwordFile, '--json']));
    expect(await readAll(restored)).toEqual({ ...first.kv, ...second.kv, ...third.kv });

    // ...and not one byte of it is readable in the repository.
    const files = filesUnder(repoDir).map((f) => path.relative(repoDir, f));
    expect(files.some((f) => f.startsWith('data/'))).toBe(true);
    expect(files.some((f) => /^wal\/[^/]+\/seg\//.test(f))).toBe(true);
    expect(scan(repoDir, canaries)).toEqual([]);

    // Restarted, it keeps its password (a new one would lock it out of its own backups).
    const again = await startNode(dataDir, ['--log-archive', 'on', '--log-archive-interval', '200ms'], noPasswordEnv());
    expect(again.output()).not.toContain('made a password');
    expect(fs.readFileSync(passwordFile, 'utf8').trim()).toBe(password);
    await until('the repository opened again', async () => (await status()).encryption !== null);
    expect((await status()).encryption).toEqual(encryption);
    expect(await again.stop()).toBe(0);

    // The password itself was never printed or logged.
    const everything = [...printed, node.output(), again.output()].join('\n');
    expect(everything).toContain(passwordFile);
    for (const form of canaryForms(Buffer.from(password))) expect(everything.includes(form.bytes.toString()), form.form).toBe(false);
  });

  it('negative control: with --backup-insecure-no-encryption the same scan finds the canaries, in packs and in log segments', async () => {
    const dataDir = tempDir('f3-canary-plain');
    dirs.push(dataDir);
    const repoDir = path.join(dataDir, 'backups');
    const node = await startNode(dataDir, ['--backup-insecure-no-encryption', '--log-archive', 'on', '--log-archive-interval', '200ms'], noPasswordEnv());
    expect(fs.existsSync(path.join(dataDir, 'backup-password'))).toBe(false);
    // The archive's timeline begun (its base backed up) first: what is written next goes into log segments.
    await archivedUpTo(repoDir, 0);
    const { canaries } = await writeCanaries(node.port, 10);
    const record = await backUp(node.socket);
    await archivedUpTo(repoDir, 10);
    // Nothing claims otherwise: the listing and the status say it is not encrypted.
    const listed = json<BackupRecord[]>(await cli(['backup', 'list', '--json', ...node.socket]));
    expect(listed.find((b) => b.id === record.id)?.encrypted).toBe(false);
    const status = json<AgentStatus>(await cli(['status', '--json', ...node.socket])).backup!;
    expect({ encryption: status.encryption, passwordSource: status.passwordSource }).toEqual({ encryption: { format: 3, encrypted: false, keyId: null }, passwordSource: null });
    expect(await node.stop()).toBe(0);

    const hits = scan(repoDir, canaries);
    const raw = hits.filter((h) => h.form === 'raw');
    // Every canary is found, as written: in the archived log, and the backup's files hold some too.
    expect(new Set(raw.map((h) => h.canary))).toEqual(new Set(canaries));
    expect(raw.some((h) => h.file.startsWith('wal/'))).toBe(true);
    expect(raw.some((h) => h.file.startsWith('data/'))).toBe(true);
  });
});
