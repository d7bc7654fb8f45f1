/**
 * The example node's log archive flags: `--log-archive on` archives (off is the default for now), and bad
 * values are refused before anything starts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { EXAMPLE_NODE, kv, runCli, startExampleNode, tempDir } from './support/processes.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function refused(args: string[]): { code: number | null; stderr: string } {
  const d = tempDir('example-archive-bad');
  dirs.push(d);
  const r = spawnSync(process.execPath, [EXAMPLE_NODE, '--data-dir', d, '--port', '0', ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stderr: r.stderr };
}

describe('example node: --log-archive', () => {
  it('refuses bad values with one line', () => {
    for (const [args, message] of [
      [['--log-archive', 'yes'], /--log-archive must be on or off/],
      [['--log-archive', 'off', '--log-archive-interval', '2s'], /goes with --log-archive on/],
      [['--log-archive', 'on', '--log-archive-interval', 'soon'], /log-archive-interval/],
      [['--log-archive', 'on', '--backup-repo', 'none'], /needs a backup repository/],
      [['--backup-replica', 'ftp://elsewhere/x'], /invalid storage URL/],
      [['--backup-replica', 'file:///tmp/replica', '--backup-replica', 'file:///tmp/replica'], /names a repository twice/],
    ] as const) {
      const r = refused([...args]);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n').length).toBe(1);
    }
  });

  it('archives by default (to the default file:// repository), and a restore to the latest moment has the node\'s writes', async () => {
    const d = tempDir('example-archive');
    dirs.push(d);
    const node = await startExampleNode(d, ['--log-archive-interval', '200ms'], { defaults: true });
    try {
      const repo = path.join(d, 'backups');
      const timeline = async () => JSON.parse((await runCli(['backup', 'timeline', '--repo', repo, '--json'])).stdout || '{"timelines":[]}') as { timelines: { from: string | null; lastSequence: number | null }[] };
      for (const deadline = Date.now() + 60_000; !(await timeline()).timelines.some((t) => t.from !== null); ) {
        if (Date.now() > deadline) throw new Error('no timeline');
        await new Promise((r) => setTimeout(r, 100));
      }
      const start = (await timeline()).timelines[0]!.lastSequence!;
      for (let i = 0; i < 10; i++) expect((await kv(node.port, 'PUT', `k${i}`, `v${i}`)).status).toBeLessThan(300);
      for (const deadline = Date.now() + 60_000; (await timeline()).timelines[0]!.lastSequence! < start + 10; ) {
        if (Date.now() > deadline) throw new Error('the writes were not archived');
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await node.stop();
    }
    const to = path.join(d, 'restored');
    const r = await runCli(['backup', 'restore', '--at', 'latest', '--repo', path.join(d, 'backups'), '--to', to, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { reached: { sequence: number } }).reached.sequence).toBeGreaterThanOrEqual(10);
  }, 120_000);
});
