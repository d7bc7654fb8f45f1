/**
 * The import rules (.ci/check-imports.mjs, run by `npm test` before the suite): this repository passes,
 * and a tree that breaks each rule fails with a line naming the import — the proof that the check can fail.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './support/processes.js';

const CHECK = path.join(ROOT, '.ci', 'check-imports.mjs');
const dirs: string[] = [];

function check(root?: string): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [CHECK, ...(root !== undefined ? [root] : [])], { cwd: ROOT, encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

function tree(files: Record<string, string>): string {
  const root = tempDir('imports');
  dirs.push(root);
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), text);
  }
  return root;
}

afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('the import check', () => {
  it('passes on this repository', () => {
    const r = check();
    expect(r.out).toMatch(/no import against the rules, no cycle/);
    expect(r.code).toBe(0);
  });

  it('fails on shared/ importing agent/, agent/ importing cli/, and a cycle (type-only and dynamic imports count)', () => {
    const root = tree({
      'shared/api.ts': "import type { X } from '../agent/engine.js';\nexport type Y = X;\n",
      'agent/engine.ts': "export type X = number;\nexport const load = () => import('../cli/main.js');\n",
      'cli/main.ts': "import { a } from './a.js';\nexport const m = a;\n",
      'cli/a.ts': "import { m } from './main.js';\nexport const a = 1;\nexport const n = m;\n",
      'cli/ok.ts': "import { a } from './a.js';\nimport fs from 'node:fs';\nexport const ok = [a, fs];\n",
    });
    const r = check(root);
    expect(r.code).toBe(1);
    expect(r.out).toContain('shared/api.ts imports ../agent/engine.js (shared/ must not import from agent/)');
    expect(r.out).toContain('agent/engine.ts imports ../cli/main.js (agent/ must not import from cli/)');
    expect(r.out).toMatch(/import cycle: cli\/(a|main)\.ts -> cli\/(main|a)\.ts -> cli\/(a|main)\.ts/);
    expect(r.out).toContain('3 problems');
    expect(r.out).not.toContain('cli/ok.ts');
  });
});
