import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './processes.js';

const HOOK = path.join(ROOT, 'test', 'support', 'record-imports.mjs');

export interface RecordedRun {
  code: number | null;
  stderr: string;
  /**
   * Every module loaded: URLs relative to the repository root where inside it, and the built-ins Node
   * loaded as `node:internal/...` names (support/record-imports.mjs).
   */
  modules: string[];
}

/** Runs a script of ours as a real process (cwd: the repository) and records every module it loads, its record kept in `dir`. */
export function runRecorded(dir: string, script: string, args: string[]): RecordedRun {
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
