/**
 * Offline commands load only what they use: no agent, no pino, no admin server, no backup manager. A
 * pre-upgrade hook runs them with the node stopped, and every module loaded is start-up time. Each command
 * runs as a real process with a loader hook (support/recorded-run.ts) that writes down every module it
 * loads; the negative control runs the example node, which loads all of them, through the same check.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, EXAMPLE_NODE, tempDir } from './support/processes.js';
import { runRecorded } from './support/recorded-run.js';

/** What an offline command must never load: the in-process agent and everything only it needs. */
const AGENT_ONLY = ['dist/agent/agent.js', 'dist/agent/admin-server/', 'dist/agent/backup/backup-manager.js', 'dist/agent/scheduler.js', 'node_modules/pino/'];

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
    const created = runRecorded(dir, CLI, ['checkpoint', 'create', '--offline', '--db', db, '--checkpoint-dir', checkpoints, '--json']);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    // The recording works: the offline module itself was loaded.
    expect(created.modules).toContain('dist/agent/offline.js');
    expect(agentOnly(created.modules)).toEqual([]);

    const id = fs.readdirSync(checkpoints).find((n) => /^\d{8}T/.test(n));
    expect(id).toBeDefined();
    const restored = runRecorded(dir, CLI, ['checkpoint', 'restore', id!, '--db', db, '--checkpoint-dir', checkpoints]);
    expect(restored.stderr).toBe('');
    expect(restored.code).toBe(0);
    expect(restored.modules).toContain('dist/agent/offline.js');
    expect(agentOnly(restored.modules)).toEqual([]);
  });

  it('backup list --repo: the repository code only', () => {
    const r = runRecorded(dir, CLI, ['backup', 'list', '--repo', path.join(dir, 'no-repo-here')]);
    // No repository there: NOT_FOUND (exit 3), after opening the storage and looking.
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('REPOSITORY_NOT_FOUND');
    expect(r.modules).toContain('dist/agent/repository/repository.js');
    expect(agentOnly(r.modules)).toEqual([]);
  });

  it('negative control: the example node loads the agent, and the check says so', () => {
    const r = runRecorded(dir, EXAMPLE_NODE, ['--help']);
    expect(r.code).toBe(0);
    expect(agentOnly(r.modules)).toEqual(expect.arrayContaining(['dist/agent/agent.js', 'dist/agent/admin-server/admin-server.js']));
    expect(agentOnly(r.modules).some((m) => m.includes('node_modules/pino/'))).toBe(true);
  });
});
