/**
 * Offline commands load only what they use: no agent, no pino, no admin server, no backup manager. A
 * pre-upgrade hook runs them with the node stopped, and every module loaded is start-up time. Each command
 * runs as a real process with a loader hook (support/record-imports.mjs) that writes down every module
 * it loads; the negative control runs the example node, which loads all of them, through the same check.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, EXAMPLE_NODE, ROOT, tempDir } from './support/processes.js';

const HOOK = path.join(ROOT, 'test', 'support', 'record-imports.mjs');

/** What an offline command must never load: the in-process agent and everything only it needs. */
const AGENT_ONLY = ['dist/agent/agent.js', 'dist/agent/admin-server/', 'dist/agent/backup/backup-manager.js', 'dist/agent/scheduler.js', 'node_modules/pino/'];

interface Run {
  code: number | null;
  stderr: string;
  /** Every module URL loaded, relative to the repository root where it is inside it. */
  modules: string[];
}

function runRecorded(script: string, args: string[]): Run {
  const record = path.join(dir, `imports-${Math.random().toString(16).slice(2)}.txt`);
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(HOOK).href, script, ...args], {
    cwd: ROOT,
    env: { ...process.env, RECORD_IMPORTS: record, NODE_ADMIN_SOCKET: '' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  const root = pathToFileURL(ROOT).href + '/';
  const modules = fs.existsSync(record) ? fs.readFileSync(record, 'utf8').split('\n').filter((l) => l !== '').map((u) => u.replace(root, '')) : [];
  return { code: r.status, stderr: r.stderr, modules };
}

function agentOnly(modules: string[]): string[] {
  return [...new Set(modules.filter((m) => AGENT_ONLY.some((bad) => m.startsWith(bad) || m.includes(`/${bad}`))))];
}

let dir: string;
let db: string;
let checkpoints: string;

beforeAll(async () => {
  dir = tempDir('offline-imports');
  db = path.join(dir, 'db');
  checkpoints = path.join(dir, 'checkpoints');
  const level = new ClassicLevel(db);
  await level.open();
  for (let i = 0; i < 100; i++) await level.put(`key-${i}`, `value-${i}`);
  await level.close();
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('offline commands load only what they use', () => {
  it('checkpoint create --offline, then checkpoint restore: no agent, no pino', () => {
    const created = runRecorded(CLI, ['checkpoint', 'create', '--offline', '--db', db, '--checkpoint-dir', checkpoints, '--json']);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    // The recording works: the offline module itself was loaded.
    expect(created.modules).toContain('dist/agent/offline.js');
    expect(agentOnly(created.modules)).toEqual([]);

    const id = fs.readdirSync(checkpoints).find((n) => /^\d{8}T/.test(n));
    expect(id).toBeDefined();
    const restored = runRecorded(CLI, ['checkpoint', 'restore', id!, '--db', db, '--checkpoint-dir', checkpoints]);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    expect(restored.modules).toContain('dist/agent/offline.js');
    expect(agentOnly(restored.modules)).toEqual([]);
  });

  it('backup list --repo: the repository code only', () => {
    const r = runRecorded(CLI, ['backup', 'list', '--repo', path.join(dir, 'no-repo-here')]);
    // No repository there: NOT_FOUND (exit 3), after opening the storage and looking.
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('REPOSITORY_NOT_FOUND');
    expect(r.modules).toContain('dist/agent/repository/repository.js');
    expect(agentOnly(r.modules)).toEqual([]);
  });

  it('negative control: the example node loads the agent, and the check says so', () => {
    const r = runRecorded(EXAMPLE_NODE, ['--help']);
    expect(r.code).toBe(0);
    expect(agentOnly(r.modules)).toEqual(expect.arrayContaining(['dist/agent/agent.js', 'dist/agent/admin-server/admin-server.js']));
    expect(agentOnly(r.modules).some((m) => m.includes('node_modules/pino/'))).toBe(true);
  });
});
