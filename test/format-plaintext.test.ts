import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { canonicalJson } from '../dist/agent/repository/format.js';
import { runCli, tempDir } from './support/processes.js';

/**
 * Repositories that are not encrypted: format 2 (made before format 3) and format 3 made with
 * --insecure-no-encryption. Both stay readable by every command; new data goes into one only when the
 * agent is told so (PLAINTEXT_REFUSED otherwise), never silently — while reads, list and prune through
 * the agent keep working.
 */

const silent = pino({ level: 'silent' });
let dir: string;
let dbPath: string;
let db: ClassicLevel<string, string>;

beforeAll(async () => {
  dir = tempDir('plaintext');
  dbPath = path.join(dir, 'db');
  db = new ClassicLevel<string, string>(dbPath);
  await db.open();
  for (let i = 0; i < 2000; i++) await db.put(`key-${i}`, `value-${i}`);
});

afterAll(async () => {
  await db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function agentOn(repo: string, backup: Record<string, unknown> = {}): Agent {
  return createAgent({ dbPath, checkpointDir: path.join(dir, `checkpoints-${path.basename(repo)}`), backup: { repository: pathToFileURL(repo).href, ...backup }, logger: silent });
}

/** A format 3 repository made unencrypted, then (optionally) its config turned into format 2's: the layout is the same. */
async function plainRepository(name: string, format: 2 | 3): Promise<string> {
  const repoDir = path.join(dir, name);
  const agent = agentOn(repoDir, { insecureNoEncryption: true });
  await agent.start();
  await agent.createBackup();
  await agent.stop();
  if (format === 2) {
    const storage = new DirStorage(repoDir);
    const config = JSON.parse((await storage.get('config')).toString('utf8')) as Record<string, unknown>;
    delete config.encryption;
    delete config.compression;
    await storage.put('config', Buffer.from(canonicalJson({ ...config, version: 1 })));
  }
  return repoDir;
}

describe('repositories that are not encrypted', () => {
  it.each([2, 3] as const)('format %s: readable everywhere, written only when said so', async (format) => {
    const repoDir = await plainRepository(`repo-${format}`, format);
    const repo = await Repository.open(new DirStorage(repoDir));
    expect([repo.formatVersion, repo.codec.encrypted, repo.keyId]).toEqual([format, false, null]);

    // Reads through the CLI need no password (and a password in the environment is not refused for them).
    const listed = await runCli(['backup', 'list', '--repo', repoDir, '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const records = JSON.parse(listed.stdout) as { id: string; encrypted: boolean }[];
    expect(records.map((r) => r.encrypted)).toEqual([false]);
    const to = path.join(dir, `restored-${format}`);
    const restored = await runCli(['backup', 'restore', records[0]!.id, '--repo', repoDir, '--to', to]);
    expect(restored.code, restored.stderr).toBe(0);
    const check = new ClassicLevel<string, string>(to);
    await check.open();
    expect(await check.get('key-1999')).toBe('value-1999');
    await check.close();
    expect((await runCli(['backup', 'verify', '--read-data', '--repo', repoDir])).code).toBe(0);

    // An agent with a password (the tests' NODE_ADMIN_PASSWORD_FILE) lists it, but adds nothing to it.
    const bytesBefore = repoSize(repoDir);
    const refusing = agentOn(repoDir);
    await refusing.start();
    expect(await refusing.listBackups()).toHaveLength(1);
    await expect(refusing.createBackup()).rejects.toMatchObject({ code: 'PLAINTEXT_REFUSED' });
    expect((await refusing.status()).backup?.encryption).toEqual({ format, encrypted: false, keyId: null });
    await refusing.stop();
    expect(repoSize(repoDir)).toBe(bytesBefore);

    // Told so, it writes.
    const allowed = agentOn(repoDir, format === 2 ? { allowFormat2: true } : { insecureNoEncryption: true });
    await allowed.start();
    await allowed.createBackup();
    expect(await allowed.listBackups()).toHaveLength(2);
    await allowed.stop();
  });

  it('a new repository is never made unencrypted by default: without a password, PASSWORD_REQUIRED and nothing stored', async () => {
    const repoDir = path.join(dir, 'no-password');
    const agent = createAgent({
      dbPath,
      checkpointDir: path.join(dir, 'checkpoints-no-password'),
      // A password command that fails: no password, and no fallback to the environment's.
      backup: { repository: pathToFileURL(repoDir).href, password: { command: 'exit 1' } },
      logger: silent,
    });
    await agent.start();
    await expect(agent.createBackup()).rejects.toMatchObject({ code: 'PASSWORD_REQUIRED' });
    await agent.stop();
    expect(fs.existsSync(path.join(repoDir, 'config'))).toBe(false);
    expect(fs.existsSync(path.join(repoDir, 'keys')) ? fs.readdirSync(path.join(repoDir, 'keys')) : []).toEqual([]);
  });
});

function repoSize(repoDir: string): number {
  let total = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else total += fs.statSync(p).size;
    }
  };
  walk(repoDir);
  return total;
}
