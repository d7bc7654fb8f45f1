/**
 * The settings the example node is shipped with (the systemd unit, `npm start`) are the ones the
 * memory bench measures (bench/host-memory.ts, SHIPPED_NODE): a figure in docs/benchmarks.md is only
 * worth something if the node an operator starts is the node that was measured. And each Node option
 * is one this Node takes (CI runs this on every supported version): an unknown one stops the node at
 * its start.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SHIPPED_NODE, memorySettings } from '../dist/bench/host-memory.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const unit = fs.readFileSync(path.join(ROOT, 'systemd', 'node-admin-example.service'), 'utf8');
const start = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start!;

/** The unit's ExecStart= (its continuation lines joined), split into words. */
function execStart(text: string): string[] {
  const m = /^ExecStart=((?:.*\\\n)*.*)$/m.exec(text);
  if (!m) throw new Error('the unit has no ExecStart=');
  return m[1]!.replace(/\\\n/g, ' ').split(/\s+/).filter(Boolean);
}

/** The environment assignments of the unit (Environment=NAME=value lines). */
function unitEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/^Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$/gm)) out[m[1]!] = m[2]!;
  return out;
}

describe('the example node as shipped', () => {
  it('the unit and npm start give it the settings the memory bench measures', () => {
    const words = execStart(unit);
    const script = words.findIndex((w) => w.endsWith('example-node/main.cjs'));
    expect(script).toBeGreaterThan(0);
    // Node's options: between the node binary and the script.
    expect(words.slice(1, script)).toEqual(SHIPPED_NODE.nodeArgs);
    for (const [name, value] of Object.entries(SHIPPED_NODE.env)) expect(unitEnv(unit)[name], name).toBe(value);

    const npmStart = start.split('&&').at(-1)!.trim().split(/\s+/);
    const node = npmStart.indexOf('node');
    expect(npmStart.slice(node + 1, npmStart.indexOf('dist/agent/example-node/main.cjs'))).toEqual(SHIPPED_NODE.nodeArgs);
    for (const [name, value] of Object.entries(SHIPPED_NODE.env)) expect(start).toContain(`${name}=\${${name}:-${value}}`);
  });

  it('each Node option the bench runs it with is one this Node takes', () => {
    for (const arg of memorySettings('young-capped').nodeArgs) {
      const r = spawnSync(process.execPath, [arg, '-e', '0'], { encoding: 'utf8' });
      expect(r.status, `${arg}: ${r.stderr}`).toBe(0);
    }
    // The control: an option no Node takes fails there.
    expect(spawnSync(process.execPath, ['--max-semi-space-sise=2', '-e', '0']).status).not.toBe(0);
  });

  it('the bench can run without them, or with more, to show what each does', () => {
    expect(memorySettings('default')).toEqual({ env: {}, nodeArgs: [] });
    expect(memorySettings('young-capped')).toEqual({ env: SHIPPED_NODE.env, nodeArgs: [...SHIPPED_NODE.nodeArgs, '--max-semi-space-size=2'] });
    expect(() => memorySettings('fast')).toThrow(/none of shipped, young-capped, default/);
  });
});
