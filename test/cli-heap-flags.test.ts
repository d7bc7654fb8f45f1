import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GROWING_FLAG, OLD_GENERATION_ROOM, YOUNG_GENERATION_FLAGS, oldGenerationGrowingPercent } from '../dist/cli/heap-flags.js';

// The CLI's V8 flags (cli/heap-flags.ts) keep restores from S3 small in RSS and free of a storm of full
// collections on Node 20. Which flags a V8 has, and whether one set at run time holds, differs between V8
// versions (Node 26's V8 dropped a flag Node 24's had, and setting it printed an error on every command),
// so this checks, on whichever Node runs the tests (CI: each supported one), that V8 knows every flag,
// that nothing reaches stderr, and the effect of each flag, each beside the same run without the setting.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const setting = path.join(root, 'dist', 'cli', 'heap-flags.js');
const cli = path.join(root, 'dist', 'cli', 'main.cjs');

const MiB = 1024 * 1024;

function node(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * MiB });
}

function run(script: string, withSetting: boolean, v8Args: string[] = []): { stdout: string; stderr: string } {
  const r = node([...v8Args, ...(withSetting ? ['--import', setting] : []), '--input-type=module', '-e', script]);
  expect(r.status, r.stderr).toBe(0);
  return r;
}

/** `--semi-space-growth-factor=1` -> `semi-space-growth-factor`; `--no-x` -> `x` (V8 lists booleans by their positive name). */
function flagName(flag: string): string {
  return flag.replace(/^--/, '').replace(/=.*$/, '').replace(/^no-/, '');
}

/** Whether `--v8-options` output lists the flag (each flag opens a line: two spaces, its name, a space). */
function listed(v8Options: string, name: string): boolean {
  return v8Options.split('\n').some((line) => line.startsWith(`  --${name} `));
}

// Short-lived objects with some survivors, as a stream of socket reads makes: V8 grows its young
// generation under this unless held. Prints new space's size (bytes).
const CHURN = `
import v8 from 'node:v8';
let keep = [];
for (let i = 0; i < 300000; i++) { keep.push({ i, s: 'x'.repeat(20) + i }); if (keep.length > 2000) keep = []; }
const space = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
process.stdout.write(String(space ? space.space_size : -1));
`;

// As a restore's socket reads: a fresh 64 KiB buffer that dies at once, among short-lived objects.
// Whenever new space's use drops (a young-generation collection just ran), notes how many buffers'
// worth of memory is still held. Prints those counts for 100 collections, comma-separated.
const SWEEP = `
import v8 from 'node:v8';
const used = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_used_size;
let last = used(); const held = []; let keep = [];
for (let i = 0; i < 1000000 && held.length < 100; i++) {
  Buffer.allocUnsafeSlow(65536);
  for (let j = 0; j < 20; j++) { keep.push({ i, j }); if (keep.length > 500) keep = []; }
  const now = used();
  if (now < last) held.push(Math.round(process.memoryUsage().arrayBuffers / 65536));
  last = now;
}
process.stdout.write(held.join(','));
`;

describe('the CLI tunes its V8 heap', () => {
  it('every flag is one this Node\'s V8 knows (a made-up one is not found)', () => {
    const r = node(['--v8-options']);
    expect(r.status).toBe(0);
    for (const flag of [...YOUNG_GENERATION_FLAGS, GROWING_FLAG]) expect(listed(r.stdout, flagName(flag)), `${flag} in node --v8-options`).toBe(true);
    // Negative control: the lookup does not find what V8 lacks.
    expect(listed(r.stdout, flagName('--node-admin-no-such-flag=2'))).toBe(false);
  });

  it('the CLI writes nothing to stderr that it did not mean; V8 would write there on an unknown flag', () => {
    const version = node([cli, '--version']);
    expect(version.status).toBe(0);
    expect(version.stderr).toBe('');
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    // A command that fails through the fast path: its own one-line error, nothing from V8.
    const status = node([cli, 'status', '--socket', path.join(root, 'no-such-dir', 'admin.sock')]);
    expect(status.status).not.toBe(0);
    expect(status.stderr.trim().split('\n')).toHaveLength(1);
    expect(status.stderr).not.toMatch(/unrecognized flag/);
    // Negative control: an unknown flag set at run time does reach stderr, so the checks above can fail.
    const unknown = run(`import v8 from 'node:v8'; v8.setFlagsFromString('--node-admin-no-such-flag=2');`, false);
    expect(unknown.stderr).toMatch(/unrecognized flag --node-admin-no-such-flag=2/);
  });

  it('new space stays at most 4 MiB under churn; V8 defaults grow it past that', () => {
    const held = run(CHURN, true);
    expect(held.stderr).toBe('');
    expect(Number(held.stdout)).toBeGreaterThan(0);
    expect(Number(held.stdout)).toBeLessThanOrEqual(4 * MiB);
    // Negative control: the same churn without the setting grows new space, so the bound above means something.
    expect(Number(run(CHURN, false).stdout)).toBeGreaterThan(4 * MiB);
  });

  it('dead buffers are freed by the collection itself; V8 defaults leave them to a background task', () => {
    const held = run(SWEEP, true);
    expect(held.stderr).toBe('');
    const counts = held.stdout.split(',').map(Number);
    expect(counts).toHaveLength(100);
    // Seen here: 0-4 after every collection on Node 20, 24 and 26 (the buffers allocated since) on a
    // quiet machine; under load, now and then one collection of a hundred (Node 26) still holds a few
    // hundred. So: at most a few collections of the hundred hold more than 8.
    const late = (list: number[]) => list.filter((c) => c > 8).length;
    expect(late(counts)).toBeLessThanOrEqual(5);
    // Negative control: with V8's default many collections return before their dead buffers are freed
    // (seen here: 90-98 of 100 collections holding 500-640 buffers on a quiet machine, Node 20 and 26;
    // 39 of 100 with two other test suites running beside it, where the background task gets to run
    // sooner). Four times the bound above still tells the two apart.
    const defaults = run(SWEEP, false).stdout.split(',').map(Number);
    expect(defaults).toHaveLength(100);
    expect(late(defaults)).toBeGreaterThan(20);
  });

  it('the old generation\'s growing percent: room of OLD_GENERATION_ROOM while small, at most 4x, V8\'s own from there', () => {
    const room = OLD_GENERATION_ROOM;
    expect(room).toBe(48 * MiB);
    const table: [held: number, percent: number][] = [
      [0, 300], // nothing held yet (a guard against dividing by zero): the cap
      [1, 300],
      [13 * MiB, 300], // a restore: 3 x 13 MiB of room, the most the cap gives
      [16 * MiB, 300], // exactly 48 MiB of room at the cap
      [24 * MiB, 200],
      [40 * MiB, 120],
      [47 * MiB, 103], // rounded up: never less room than asked
      [room - 1, 101],
      [room, 0], // from here V8 decides
      [512 * MiB, 0],
      [Number.NaN, 0], // nothing sensible to go on: V8 decides
    ];
    for (const [held, percent] of table) expect(oldGenerationGrowingPercent(held), `held ${held}`).toBe(percent);
    // The room each percent gives is at least what was asked for, or the cap's 3x.
    for (const held of [1 * MiB, 10 * MiB, 17 * MiB, 33 * MiB, 47.5 * MiB]) {
      const p = oldGenerationGrowingPercent(held);
      expect((held * p) / 100).toBeGreaterThanOrEqual(Math.min(room, 3 * held));
    }
  });

  // Holds `held` MiB, then churns objects that live long enough to reach the old generation, so V8 runs
  // several full collections; V8 prints the limit it sets after each (--trace-gc-verbose).
  const churn = (heldMiB: number) => `
    const hold = Array.from({ length: ${heldMiB} * 10000 }, (_, i) => ({ i, s: 'held-' + i }));
    let ring = new Array(100000);
    for (let i = 0; i < 4_000_000; i++) ring[i % ring.length] = { i, s: 'x' + i };
  `;
  const limits = (out: string) =>
    // "[HeapController] Limit: old size: 15052 KB, new limit: 61214 KB (4.0)" (V8 12 and later: no factor)
    [...out.matchAll(/\[HeapController\] Limit: old size: (\d+) KB, new limit: (\d+) KB/g)].map((m) => ({ size: Number(m[1]) * 1024, limit: Number(m[2]) * 1024 }));

  it('V8 follows the percent set at run time: a small heap gets 4x its size before the next full collection', () => {
    // V8's own factor depends on how fast the script allocates (4x for this one, 1.2-2x in a restore), so
    // both runs start from a fixed 50 % given on the command line: the setting must override it.
    const fixed = ['--trace-gc-verbose', `${GROWING_FLAG}=50`];
    // Only collections that found 8 MiB or more: below that V8's minimum step (8 MiB) outweighs any
    // factor (V8 gave 3.7x to a 4 MiB heap's first collection without the setting, on a busy machine).
    const sized = (list: { size: number; limit: number }[]) => list.filter((l) => l.size >= 8 * MiB);
    const withIt = sized(limits(run(churn(5) + 'process.stdout.write("done\\n");', true, fixed).stdout));
    expect(withIt.length).toBeGreaterThan(1);
    // The churn never lets the event loop turn, so the observer never runs: 300 %, set at import, holds.
    for (const l of withIt) expect(l.limit / l.size).toBeGreaterThanOrEqual(3.95);
    // Negative control: the CLI before this setting (the young generation's flags alone) on the same
    // script keeps the command line's 1.5x (plus the young generation's capacity and V8's minimum step:
    // 1.6x here on Node 20, 24 and 26, twenty-odd collections; at most 2.5x from 8 MiB up).
    const young = `import v8 from 'node:v8'; for (const f of ${JSON.stringify(YOUNG_GENERATION_FLAGS)}) v8.setFlagsFromString(f);`;
    const without = sized(limits(run(young + churn(5) + 'process.stdout.write("done\\n");', false, fixed).stdout));
    expect(without.length).toBeGreaterThan(1);
    for (const l of without) expect(l.limit / l.size).toBeLessThan(3);
  });

  it('a heap holding more than OLD_GENERATION_ROOM is left to V8 after its next full collection (a prune or verify of a large repository)', () => {
    // A full collection made at once (--expose-gc) with that much held; the observer reads the heap when
    // its entries arrive, once the event loop turns.
    const script = (heldMiB: number) => `
      import { growingPercentInEffect } from ${JSON.stringify(setting)};
      const before = growingPercentInEffect();
      const hold = Array.from({ length: ${heldMiB} * 10000 }, (_, i) => ({ i, s: 'held-' + i }));
      globalThis.gc();
      await new Promise((resolve) => setTimeout(resolve, 50));
      process.stdout.write(JSON.stringify({ before, after: growingPercentInEffect(), held: hold.length }));
    `;
    const big = JSON.parse(run(script(80), false, ['--expose-gc']).stdout) as { before: number; after: number };
    expect(big.before).toBe(300); // a CLI's heap at start is small
    expect(big.after).toBe(0);
    // Negative control: a heap that stays small keeps the room.
    const small = JSON.parse(run(script(5), false, ['--expose-gc']).stdout) as { before: number; after: number };
    expect(small.after).toBe(300); // about 5 MiB held: the cap
  });
});
