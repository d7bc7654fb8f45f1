import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirDurable, mkdirDurableSync } from '../dist/agent/fs/durable-fs.js';
import { tempDir } from './support/processes.js';

/**
 * mkdirDurable remembers, per process, which directories it made durable (test/powercut.test.ts proves
 * what it makes durable, on the power-cut filesystem); what it remembers must never outlive the
 * directory itself.
 */
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('mkdirDurable', () => {
  it('makes a directory removed behind its back again (what it remembers is that directory, not the path)', async () => {
    const base = tempDir('durable-fs');
    dirs.push(base);
    const dir = path.join(base, 'repo', 'data', 'ab');
    await mkdirDurable(dir);
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    fs.rmSync(path.join(base, 'repo'), { recursive: true });
    await mkdirDurable(dir);
    expect(fs.statSync(dir).isDirectory()).toBe(true);
  });

  it('concurrent calls for one directory all resolve once it exists', async () => {
    const base = tempDir('durable-fs');
    dirs.push(base);
    const dir = path.join(base, 'a', 'b', 'c');
    await Promise.all(Array.from({ length: 8 }, () => mkdirDurable(dir).then(() => expect(fs.statSync(dir).isDirectory()).toBe(true))));
  });

  it('refuses a path that is a file, sync and async', async () => {
    const base = tempDir('durable-fs');
    dirs.push(base);
    fs.writeFileSync(path.join(base, 'f'), '');
    await expect(mkdirDurable(path.join(base, 'f', 'x'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    expect(() => mkdirDurableSync(path.join(base, 'f', 'x'))).toThrow(/ENOTDIR/);
    mkdirDurableSync(path.join(base, 'd', 'e'));
    expect(fs.statSync(path.join(base, 'd', 'e')).isDirectory()).toBe(true);
  });
});
