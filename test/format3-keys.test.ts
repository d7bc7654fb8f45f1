/**
 * An encrypted repository's keys and passwords, as an operator handles them, through the built CLI (real
 * processes): a wrong or missing password is one error line and exit 8, and writes nothing; `backup init`
 * makes a repository and refuses an existing one; key add / list / passwd / remove round trip (the old
 * password refused after passwd, the key in use and the last key never removed); passwords from a file,
 * a command, NODE_ADMIN_PASSWORD_FILE and a systemd credential; two processes opening one repository
 * with different keys at once; and no password in any output, error or log.
 *
 * Every run here says where its password comes from: NODE_ADMIN_PASSWORD_FILE (which every test process
 * inherits, test/support/setup-env.ts) and CREDENTIALS_DIRECTORY are taken out of the children's env.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent } from '../dist/agent/index.js';
import type { BackupRecord, BackupVerifyReport } from '../dist/shared/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { removeKey } from '../dist/agent/repository/repository-keys.js';
import { runCli, tempDir, type CliResult } from './support/processes.js';
import { TEST_KDF } from './support/test-password.js';

const dir = tempDir('f3-keys');
const repoDir = path.join(dir, 'repo');
const repoUrl = pathToFileURL(repoDir).href;

/** Passwords of this file, each random, each in a file of its own (mode 0600). */
const passwords = {
  a: randomBytes(18).toString('base64url'),
  b: randomBytes(18).toString('base64url'),
  c: randomBytes(18).toString('base64url'),
  d: randomBytes(18).toString('base64url'),
  wrong: randomBytes(18).toString('base64url'),
};
type Who = keyof typeof passwords;
const pw = (who: Who) => path.join(dir, `password-${who}`);

/** Everything every process of this file printed, and what the agent logged: searched for passwords at the end. */
const printed: string[] = [];
let agentLog = '';

/** Runs the built CLI with the environment as given: no password from the test setup's environment. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, NODE_ADMIN_SOCKET: '', ...env };
  for (const name of ['NODE_ADMIN_PASSWORD_FILE', 'CREDENTIALS_DIRECTORY']) if (!(name in env)) delete childEnv[name];
  const r = await runCli(args, { env: childEnv, inheritEnv: false });
  printed.push(r.stdout, r.stderr);
  return r;
}

const repo = (who?: Who) => ['--repo', repoUrl, ...(who ? ['--password-file', pw(who)] : [])];

function ok(r: CliResult): string {
  expect(r.stderr, r.stderr).toBe('');
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

function json<T>(r: CliResult): T {
  return JSON.parse(ok(r)) as T;
}

/** One error line on stderr, `node-admin: ... (CODE)` (or its JSON form), the code's exit status, nothing on stdout. */
function oneErrorLine(r: CliResult, code: string, exit: number): string {
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  const line = lines[0]!;
  if (line.startsWith('{')) expect((JSON.parse(line) as { error: { code: string } }).error.code).toBe(code);
  else expect(line).toMatch(new RegExp(`^node-admin: .*\\(${code}\\)$`));
  expect(r.code, line).toBe(exit);
  return line;
}

/** Every object of a directory repository, name -> SHA-256 of its bytes. */
function repositoryState(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(name);
      else out.set(name, createHash('sha256').update(fs.readFileSync(path.join(root, name))).digest('hex'));
    }
  };
  walk('');
  return out;
}

interface ListedKey {
  id: string;
  inUse: boolean;
  readable: boolean;
}

let backup: BackupRecord;
let checkpointPath: string;
/** The key made with the repository (password a). */
let keyA: string;

beforeAll(async () => {
  for (const who of Object.keys(passwords) as Who[]) fs.writeFileSync(pw(who), `${passwords[who]}\n`, { mode: 0o600 });
  // The repository and its first key, with the tests' cheap key derivation (the CLI's keys take ~0.5 s to open).
  const storage = await openStorage(repoUrl, {});
  const made = await Repository.open(storage, { create: true, password: async () => Buffer.from(passwords.a), kdfCost: TEST_KDF, cryptoThreads: 0 });
  keyA = made.keyId!;
  await made.codec.close();
  await storage.close();

  // One backup in it, by an agent given password a by file; its log (debug level) is searched later.
  const dbPath = path.join(dir, 'db');
  const db = new ClassicLevel<string, string>(dbPath);
  await db.open();
  await db.batch(Array.from({ length: 2000 }, (_, i) => ({ type: 'put' as const, key: `k/${i}`, value: randomBytes(100).toString('hex') })));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      agentLog += chunk.toString();
      done();
    },
  });
  const agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    backup: { repository: repoUrl, password: { file: pw('a') } },
    logger: pino({ level: 'debug' }, sink),
  });
  await agent.start();
  backup = await agent.createBackup();
  checkpointPath = (await agent.getCheckpoint(backup.checkpoint.id)).path;
  await agent.stop();
  await db.close();
  expect(agentLog).toContain('backup'); // it did log
}, 120_000);

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('format 3 keys and passwords, through the CLI', () => {
  it('a wrong or a missing password: one error line, exit 8, nothing written, no restore target', async () => {
    const before = repositoryState(repoDir);
    const target = path.join(dir, 'never-restored');
    // Readers, and every command that would write (a restore target, prune, the keys).
    const commands = [
      ['backup', 'list'],
      ['backup', 'verify', '--read-data'],
      ['backup', 'restore', backup.id, '--to', target],
      ['backup', 'restore', '--at', 'latest', '--to', target],
      ['backup', 'prune', '--keep-last', '0'],
      ['backup', 'key', 'add', '--new-password-file', pw('b')],
      ['backup', 'key', 'passwd', '--new-password-file', pw('b')],
      ['backup', 'key', 'remove', keyA],
    ];
    for (const args of commands) {
      const line = oneErrorLine(await cli([...args, ...repo('wrong')]), 'WRONG_PASSWORD', 8);
      expect(line, args.join(' ')).toContain(repoUrl);
    }
    for (const args of [commands[0]!, commands[2]!, commands[5]!]) {
      const line = oneErrorLine(await cli([...args, ...repo()]), 'PASSWORD_REQUIRED', 8);
      expect(line).toMatch(/--password-file/);
    }
    // With --json the error is one JSON line.
    oneErrorLine(await cli(['backup', 'list', '--json', ...repo('wrong')]), 'WRONG_PASSWORD', 8);
    // A password file that is not there: named, without its content.
    oneErrorLine(await cli(['backup', 'list', '--repo', repoUrl, '--password-file', path.join(dir, 'absent')]), 'PASSWORD_REQUIRED', 8);
    expect(fs.existsSync(target)).toBe(false);
    expect(fs.readdirSync(dir).filter((n) => n.includes('never-restored'))).toEqual([]);
    expect(repositoryState(repoDir)).toEqual(before);
    // Negative control: the right password reads it.
    expect(json<BackupRecord[]>(await cli(['backup', 'list', '--json', ...repo('a')])).map((b) => b.id)).toEqual([backup.id]);
  });

  it('backup init makes an encrypted repository, and refuses one that exists', async () => {
    const freshDir = path.join(dir, 'fresh');
    const fresh = pathToFileURL(freshDir).href;
    const made = json<{ repository: string; format: number; encrypted: boolean; keyId: string }>(await cli(['backup', 'init', '--json', '--repo', fresh, '--password-file', pw('d')]));
    expect(made).toMatchObject({ repository: fresh, format: 3, encrypted: true });
    const listed = json<ListedKey[]>(await cli(['backup', 'key', 'list', '--json', '--repo', fresh, '--password-file', pw('d')]));
    expect(listed).toEqual([expect.objectContaining({ id: made.keyId, inUse: true, readable: true })]);

    // An existing repository (this one, the main one): refused, with any password or none; nothing written.
    for (const [url, root, who] of [
      [fresh, freshDir, 'd'],
      [repoUrl, repoDir, 'wrong'],
    ] as const) {
      const before = repositoryState(root);
      const line = oneErrorLine(await cli(['backup', 'init', '--repo', url, '--password-file', pw(who)]), 'INVALID_ARGUMENT', 2);
      expect(line).toMatch(/is a repository already/);
      oneErrorLine(await cli(['backup', 'init', '--repo', url, '--insecure-no-encryption']), 'INVALID_ARGUMENT', 2);
      expect(repositoryState(root)).toEqual(before);
    }
    // No password at all for a new one: refused before anything is stored; and the human output says to keep it.
    const none = path.join(dir, 'no-password');
    const line = oneErrorLine(await cli(['backup', 'init', '--repo', none]), 'PASSWORD_REQUIRED', 8);
    expect(line).toMatch(/--insecure-no-encryption/);
    expect(fs.existsSync(none) ? repositoryState(none) : new Map()).toEqual(new Map());
    const human = ok(await cli(['backup', 'init', '--repo', path.join(dir, 'human'), '--password-file', pw('d')]));
    expect(human).toMatch(/format 3, encrypted; key [0-9a-f]+/);
    expect(human).toMatch(/keep it safe/);
  });

  it('key add / list / passwd / remove round trip: the old password refused after passwd; the key in use and the last key stay', async () => {
    const keys = async (who: Who) => json<ListedKey[]>(await cli(['backup', 'key', 'list', '--json', ...repo(who)]));
    expect(await keys('a')).toEqual([expect.objectContaining({ id: keyA, inUse: true, readable: true })]);

    const added = json<{ added: string }>(await cli(['backup', 'key', 'add', '--json', ...repo('a'), '--new-password-file', pw('b')]));
    const keyB = added.added;
    // Listed by the new password: both keys, the one in use marked (in the table too, with a '*').
    expect((await keys('b')).map((k) => [k.id, k.inUse]).sort()).toEqual(
      [
        [keyA, false],
        [keyB, true],
      ].sort(),
    );
    const table = ok(await cli(['backup', 'key', 'list', ...repo('a')]));
    expect(table.split('\n').find((l) => l.includes(keyA))).toMatch(/^\*/);
    expect(table.split('\n').find((l) => l.includes(keyB))).not.toMatch(/^\*/);
    expect(json<BackupRecord[]>(await cli(['backup', 'list', '--json', ...repo('b')])).map((b) => b.id)).toEqual([backup.id]);

    // passwd: b's key replaced by c's; b is refused from then on, c opens.
    const changed = json<{ added: string; removed: string }>(await cli(['backup', 'key', 'passwd', '--json', ...repo('b'), '--new-password-file', pw('c')]));
    expect(changed.removed).toBe(keyB);
    const keyC = changed.added;
    oneErrorLine(await cli(['backup', 'list', ...repo('b')]), 'WRONG_PASSWORD', 8);
    expect((await keys('c')).map((k) => [k.id, k.inUse]).sort()).toEqual(
      [
        [keyA, false],
        [keyC, true],
      ].sort(),
    );

    // The key in use cannot be removed (the password given opens it): with another key's password it can.
    const inUse = oneErrorLine(await cli(['backup', 'key', 'remove', keyA, ...repo('a')]), 'INVALID_ARGUMENT', 2);
    expect(inUse).toMatch(/in use/);
    expect(json<{ removed: string }>(await cli(['backup', 'key', 'remove', keyA, '--json', ...repo('c')]))).toEqual({ removed: keyA });
    oneErrorLine(await cli(['backup', 'list', ...repo('a')]), 'WRONG_PASSWORD', 8);
    oneErrorLine(await cli(['backup', 'key', 'remove', keyA, ...repo('c')]), 'NOT_FOUND', 3);

    // One key left: it cannot go, by the CLI (it is the one in use) nor below it (the last key).
    const before = repositoryState(repoDir);
    oneErrorLine(await cli(['backup', 'key', 'remove', keyC, ...repo('c')]), 'INVALID_ARGUMENT', 2);
    const storage = await openStorage(repoUrl, {});
    await expect(removeKey(storage, keyC)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/last key/) });
    await storage.close();
    expect(repositoryState(repoDir)).toEqual(before);
    expect(await keys('c')).toEqual([expect.objectContaining({ id: keyC, inUse: true })]);
    // Bad uses of the command: one line each, nothing done.
    oneErrorLine(await cli(['backup', 'key', 'add', ...repo('c')]), 'INVALID_ARGUMENT', 2);
    oneErrorLine(await cli(['backup', 'key', 'remove', ...repo('c')]), 'INVALID_ARGUMENT', 2);
    expect(repositoryState(repoDir)).toEqual(before);
  });

  it('the password from a command, NODE_ADMIN_PASSWORD_FILE, or a systemd credential; a failing command is a clear error', async () => {
    const listed = (r: CliResult) => json<BackupRecord[]>(r).map((b) => b.id);
    expect(listed(await cli(['backup', 'list', '--json', '--repo', repoUrl, '--password-command', `cat '${pw('c')}'`]))).toEqual([backup.id]);
    expect(listed(await cli(['backup', 'list', '--json', '--repo', repoUrl], { NODE_ADMIN_PASSWORD_FILE: pw('c') }))).toEqual([backup.id]);

    const credentials = path.join(dir, 'credentials');
    fs.mkdirSync(credentials, { mode: 0o700 });
    fs.copyFileSync(pw('c'), path.join(credentials, 'node-admin-password'));
    expect(listed(await cli(['backup', 'list', '--json', '--repo', repoUrl], { CREDENTIALS_DIRECTORY: credentials }))).toEqual([backup.id]);
    // The credential is the last resort: a file named by the environment comes first.
    oneErrorLine(await cli(['backup', 'list', '--repo', repoUrl], { CREDENTIALS_DIRECTORY: credentials, NODE_ADMIN_PASSWORD_FILE: pw('wrong') }), 'WRONG_PASSWORD', 8);
    fs.copyFileSync(pw('wrong'), path.join(credentials, 'node-admin-password'));
    oneErrorLine(await cli(['backup', 'list', '--repo', repoUrl], { CREDENTIALS_DIRECTORY: credentials }), 'WRONG_PASSWORD', 8);

    const failing = oneErrorLine(await cli(['backup', 'list', '--repo', repoUrl, '--password-command', 'exit 3']), 'PASSWORD_REQUIRED', 8);
    expect(failing).toMatch(/--password-command failed \(exit 3\)/);
    const silent = oneErrorLine(await cli(['backup', 'list', '--repo', repoUrl, '--password-command', 'true']), 'PASSWORD_REQUIRED', 8);
    expect(silent).toMatch(/--password-command printed nothing/);
    // The command's own stderr reaches the operator (it says why), then our one line.
    const absent = await cli(['backup', 'list', '--repo', repoUrl, '--password-command', path.join(dir, 'no-such-command')]);
    const [shell, ours, ...rest] = absent.stderr.split('\n').filter((l) => l !== '');
    expect({ shell, rest, code: absent.code, stdout: absent.stdout }).toEqual({ shell: expect.stringMatching(/no-such-command: .*not found/), rest: [], code: 8, stdout: '' });
    expect(ours).toMatch(/^node-admin: --password-command failed \(exit 127\) \(PASSWORD_REQUIRED\)$/);
    oneErrorLine(await cli(['backup', 'list', '--repo', repoUrl, '--password-command', `cat '${pw('wrong')}'`]), 'WRONG_PASSWORD', 8);
    oneErrorLine(await cli(['backup', 'list', ...repo('c'), '--password-command', 'true']), 'INVALID_ARGUMENT', 2);
  });

  it('two processes open one repository with different keys of it, at once: both work', async () => {
    json<{ added: string }>(await cli(['backup', 'key', 'add', '--json', ...repo('c'), '--new-password-file', pw('d')]));
    const to = path.join(dir, 'restored-with-d');
    const [verified, restored, listed] = await Promise.all([
      cli(['backup', 'verify', '--read-data', '--json', ...repo('c')]),
      cli(['backup', 'restore', backup.id, '--to', to, '--json', ...repo('d')]),
      cli(['backup', 'list', '--json', '--repo', repoUrl, '--password-command', `cat '${pw('d')}'`]),
    ]);
    expect(json<BackupVerifyReport>(verified)).toMatchObject({ ok: true, snapshots: 1, errors: [] });
    expect(json<{ id: string }>(restored).id).toBe(backup.id);
    expect(json<BackupRecord[]>(listed).map((b) => b.id)).toEqual([backup.id]);
    for (const name of fs.readdirSync(checkpointPath)) {
      expect(fs.readFileSync(path.join(to, name)).equals(fs.readFileSync(path.join(checkpointPath, name))), name).toBe(true);
    }
  });

  it('no password appears in any output, error or log: raw, hex or base64', () => {
    const everything = [...printed, agentLog].join('\n');
    expect(everything.length).toBeGreaterThan(1000);
    for (const [who, password] of Object.entries(passwords)) {
      const forms = [password, Buffer.from(password).toString('hex'), Buffer.from(password).toString('base64')];
      for (const form of forms) expect(everything.includes(form), `password ${who} as ${form}`).toBe(false);
    }
    // Negative control: the search finds what is there (a key id printed above).
    expect(everything.includes(keyA)).toBe(true);
  });
});
