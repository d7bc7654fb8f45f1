import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { firstLine } from './support/summary-reporter.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');

describe('the summary reporter (the closing lines CI reads)', () => {
  it.each([
    [new Error('expected 1 to be 2\n  at somewhere.ts:1:1'), 'expected 1 to be 2'],
    [{ message: 'a plain object with a message' }, 'a plain object with a message'],
    ['a string', 'a string'],
    [undefined, 'undefined'],
    [new Error('x'.repeat(400)), `${'x'.repeat(300)}…`],
  ])('firstLine(%#) keeps the first line, never a stack', (error, expected) => {
    expect(firstLine(error)).toBe(expected);
  });

  it('names each failure above the counts, and writes both to the summary file', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'summary-reporter-'));
    try {
      await fs.writeFile(
        path.join(dir, 'sample.test.mjs'),
        [
          "it('passes', () => {});",
          "it('fails', () => { throw new Error('the reason\\nand a second line'); });",
          "it.skip('is skipped', () => {});",
        ].join('\n'),
      );
      const reporter = path.join(ROOT, 'test/support/summary-reporter.ts');
      await fs.writeFile(
        path.join(dir, 'vitest.config.mjs'),
        `export default { test: { globals: true, include: ['*.test.mjs'], reporters: [${JSON.stringify(reporter)}] } };\n`,
      );
      const summary = path.join(dir, 'summary.json');
      const vitest = path.join(ROOT, 'node_modules/vitest/vitest.mjs');
      const result = await run(process.execPath, [vitest, 'run', '--root', dir], {
        cwd: dir,
        env: { ...process.env, NODE_ADMIN_SUMMARY_FILE: summary },
      }).then(
        () => ({ code: 0, stdout: '' }),
        (e: { code: number; stdout: string }) => e,
      );
      expect(result.code).toBe(1);
      const tail = result.stdout.trimEnd().split('\n').slice(-2);
      expect(tail).toEqual(['FAILED sample.test.mjs > fails: the reason', '1 passed, 1 failed, 1 skipped']);
      expect(JSON.parse(await fs.readFile(summary, 'utf8'))).toEqual({
        passed: 1,
        failed: 1,
        skipped: 1,
        failures: ['FAILED sample.test.mjs > fails: the reason'],
      });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
