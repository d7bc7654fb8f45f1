import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, ROOT } from './processes.js';
import { mountPowercut } from './powercut-fs.js';
import { prng as random } from './prng.js';

/**
 * The crash-point harness: runs an operation (a child process) on the power-cut filesystem, cuts the
 * power at many points, and checks what a power cut leaves against what the operation acknowledged.
 *
 * Everything lives under one directory, `<root>/cur`: `data` is the backing tree, `mnt` where every
 * process sees it, always at the same path (paths stored by the code under test stay right). A case
 *   - prepares its starting state at `mnt` (a bind mount of `data`: the real disk, fast; all of it counts
 *     as durable), copied once to a template that each run starts from;
 *   - starts its operation on `mnt`, the power-cut filesystem mounted there;
 *   - checks, after the cut, at `mnt` again (a bind mount of what the cut left in `data`).
 *
 * Cut points. A dry run (no cut, the power cut after the operation ends) logs every operation the
 * filesystem counts. The durable state changes only at an fsync or fdatasync, so the points worth
 * trying are the last operation before each of them (the most the operation can have done, and
 * acknowledged, with that durable state), and the end: at most `maxPoints` of them, a sample drawn with
 * a seed (printed; NODE_ADMIN_POWERCUT_SEED=<seed> draws the same points, NODE_ADMIN_POWERCUT_POINTS=all
 * takes them all), tried in the drawn order while the case's share of the suite's time lasts (at least
 * MIN_POINTS; the points tried are printed). A run's k-th operation is the dry run's only as far as the operation is
 * deterministic: timers and threads move it a little, which is more points tried, not fewer.
 */

export interface Ack {
  kind: string;
  [field: string]: unknown;
}

/** What a check is told about one cut. */
export interface Cut {
  /** The operation the power went after (null: the operation ended first; the power went then). */
  at: number | null;
  /** What the operation acknowledged before the power went. */
  acks: Ack[];
  /** Its exit code, when it ended by itself; null when it was killed by the cut. */
  exitCode: number | null;
  /** Its output (stdout and stderr), for messages. */
  output: string;
}

export interface OperationProcess {
  acks(): Ack[];
  /** Its output (stdout, then the tail of stderr), for messages. */
  output(): string;
  /** Its whole stdout. */
  stdout(): string;
  exited: Promise<number | null>;
  kill(): Promise<void>;
  signal(signal: NodeJS.Signals): void;
}

export interface CrashCase {
  name: string;
  /** Lays out the starting state under `dir` (the real disk, at the path the operation will use). */
  prepare(dir: string): Promise<void>;
  /** Starts the operation on `dir` (the power-cut filesystem). */
  start(dir: string): OperationProcess;
  /** Checks the invariants on what the cut left under `dir`; throws what is broken. */
  check(dir: string, cut: Cut): Promise<void>;
  /** At most this many cut points besides the end. */
  maxPoints: number;
  /**
   * Only the fsyncs whose line in the operation log ("<n> <kind> <path>") this accepts give cut points
   * (the operation before each): a case whose operation is mostly preparation (a base, a checkpoint)
   * spends its few points on the part it is about. Absent: every fsync.
   */
  focus?: (opLogLine: string) => boolean;
}

export interface CrashReport {
  name: string;
  seed: number;
  /** Operations the dry run counted, and how many were fsyncs. */
  ops: number;
  syncs: number;
  counts: Record<string, number>;
  /** Cut points tried (besides the end), and how many landed before the operation ended. */
  points: number[];
  reached: number;
  ms: number;
}

/**
 * A child process that prints one `{"ack": …}` JSON line per acknowledgement. `onAck`: called with each
 * as it arrives (a harness that answers the operation: the process is the second argument).
 */
export function spawnOperation(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; onAck?: (ack: Ack, op: OperationProcess) => void } = {},
): OperationProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  let out = '';
  let err = '';
  const acks: Ack[] = [];
  let buffered = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (!line.startsWith('{"ack"')) continue;
      const a = (JSON.parse(line) as { ack: Ack }).ack;
      acks.push(a);
      options.onAck?.(a, op);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-10_000)));
  // 'close': every line it printed has been read (at 'exit' the last ones may still be in the pipe).
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const op: OperationProcess = {
    acks: () => acks,
    stdout: () => out,
    output: () => `${out.slice(-5_000)}${err ? `\n--- stderr:\n${err}` : ''}`,
    exited,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    signal: (signal) => void child.kill(signal),
  };
  return op;
}

export const POWERCUT_CHILD = path.join(ROOT, 'test', 'support', 'powercut-child.mjs');

/** The embedded-agent child (test/support/powercut-child.mjs) with its config. */
export function agentOperation(config: Record<string, unknown>, options: Parameters<typeof spawnOperation>[2] = {}): OperationProcess {
  return spawnOperation(process.execPath, [POWERCUT_CHILD, JSON.stringify(config)], options);
}

/** The built CLI; its exit 0 with `--json` output is its acknowledgement (`{kind: 'cli', result}`). */
export function cliOperation(args: string[]): OperationProcess {
  const op = spawnOperation(process.execPath, [CLI, ...args], { env: { NODE_ADMIN_SOCKET: '' } });
  return {
    ...op,
    acks: () => op.acks(),
    exited: op.exited.then((code) => {
      if (code === 0) {
        const text = op.stdout().trim();
        op.acks().push({ kind: 'cli', result: text ? (JSON.parse(text) as unknown) : null });
      }
      return code;
    }),
  };
}


function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function unmountQuietly(mnt: string): void {
  try {
    sh('umount', ['-l', mnt]);
  } catch {
    // not mounted
  }
}

/** Runs `check` with `data` bind-mounted at `mnt`: the same paths the operation used, on the real disk. */
async function onDisk<T>(cur: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const mnt = path.join(cur, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  sh('mount', ['--bind', path.join(cur, 'data'), mnt]);
  try {
    return await fn(mnt);
  } finally {
    sh('umount', [mnt]);
  }
}

const RUN_TIMEOUT_MS = 120_000;
/** Cut points a case tries (besides the end) however late it runs. */
const MIN_POINTS = 2;

/** One run: the template laid anew, the operation on the power-cut filesystem, the cut, the check. */
async function runOnce(root: string, c: CrashCase, cutAfter: number | null, opLog: string | null): Promise<{ cut: Cut; ops: number; counts: Record<string, number> }> {
  const t0 = Date.now();
  const cur = path.join(root, 'cur');
  unmountQuietly(path.join(cur, 'mnt'));
  fs.rmSync(cur, { recursive: true, force: true });
  sh('cp', ['-a', path.join(root, 'template'), cur]);
  const m = await mountPowercut(cur, { ...(cutAfter !== null ? { cutAfter } : {}), ...(opLog ? { opLog } : {}) });
  const op = c.start(m.mnt);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), RUN_TIMEOUT_MS)));
  const first = await Promise.race([op.exited.then(() => 'exited' as const), m.whenCut.then(() => 'cut' as const), timedOut]);
  clearTimeout(timer);
  let exitCode: number | null = null;
  if (first === 'exited') {
    exitCode = await op.exited;
    if (!m.isCut()) await m.cut();
  } else {
    if (!m.isCut()) await m.cut();
    await op.kill();
  }
  const at = first === 'exited' ? null : await m.whenCut;
  const exit = await m.unmount();
  if (first === 'timeout') throw new Error(`${c.name}: the operation neither ended nor reached the cut in ${RUN_TIMEOUT_MS} ms:\n${op.output()}`);
  const cut: Cut = { at, acks: [...op.acks()], exitCode, output: op.output() };
  const t1 = Date.now();
  await onDisk(cur, (dir) => c.check(dir, cut));
  if (process.env.NODE_ADMIN_POWERCUT_TIMES) process.stdout.write(`  cut ${cutAfter}: run ${t1 - t0} ms, check ${Date.now() - t1} ms\n`);
  return { cut, ops: exit.ops, counts: exit.counts };
}

/**
 * Prepares the case, dry-runs it, then cuts at each chosen point, in the seeded order, until `deadline`
 * (ms since the epoch; at least MIN_POINTS are tried whatever the time); throws the first broken invariant.
 */
export async function runCrashPoints(root: string, c: CrashCase, options: { deadline?: number } = {}): Promise<CrashReport> {
  const started = Date.now();
  const seed = process.env.NODE_ADMIN_POWERCUT_SEED ? Number(process.env.NODE_ADMIN_POWERCUT_SEED) : Math.floor(Math.random() * 2 ** 31);
  const all = process.env.NODE_ADMIN_POWERCUT_POINTS === 'all';
  const cur = path.join(root, 'cur');
  fs.mkdirSync(path.join(cur, 'data'), { recursive: true });
  await onDisk(cur, (dir) => c.prepare(dir));
  fs.rmSync(path.join(root, 'template'), { recursive: true, force: true });
  sh('cp', ['-a', cur, path.join(root, 'template')]);

  const where = (at: number | null) => `${c.name}: power cut ${at === null ? 'after the operation ended' : `after operation ${at}`} (seed ${seed})`;
  const opLog = path.join(root, 'ops.log');
  fs.rmSync(opLog, { force: true });
  let dry: Awaited<ReturnType<typeof runOnce>>;
  try {
    dry = await runOnce(root, c, null, opLog);
  } catch (err) {
    throw new Error(`${where(null)}: ${(err as Error).message}`, { cause: err });
  }
  if (dry.cut.exitCode !== 0) throw new Error(`${c.name}: the operation failed without a power cut (exit ${dry.cut.exitCode}):\n${dry.cut.output}`);
  const log = fs.readFileSync(opLog, 'utf8').split('\n').filter(Boolean);
  const syncLines = log.filter((l) => / (fsync|fdatasync|fsyncdir) /.test(l));
  const syncs = syncLines.map((l) => Number(l.split(' ')[0]));
  const focused = c.focus ? syncLines.filter(c.focus).map((l) => Number(l.split(' ')[0])) : syncs;
  const candidates = [...new Set(focused.map((s) => s - 1).filter((k) => k >= 1))];
  const rnd = random(seed);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
  }
  const chosen = all ? candidates : candidates.slice(0, c.maxPoints);
  const points: number[] = [];
  let reached = 0;
  for (const k of chosen) {
    if (!all && points.length >= MIN_POINTS && options.deadline !== undefined && Date.now() > options.deadline) break;
    points.push(k);
    try {
      const r = await runOnce(root, c, k, null);
      if (r.cut.at !== null) reached++;
    } catch (err) {
      const context = log.slice(Math.max(0, k - 4), k + 2).join('\n  ');
      throw new Error(`${where(k)}: ${(err as Error).message}\n  the dry run's operations around it:\n  ${context}\n  reproduce: NODE_ADMIN_POWERCUT_SEED=${seed}`, { cause: err });
    }
  }
  points.sort((a, b) => a - b);
  const report: CrashReport = { name: c.name, seed, ops: dry.ops, syncs: syncs.length, counts: dry.counts, points, reached, ms: Date.now() - started };
  process.stdout.write(
    `power cut: ${c.name}: ${points.length} cut points of ${candidates.length}${c.focus ? ' in its focus' : ''} (${reached} before the end: ${points.join(' ')}) + the end; ` +
      `${dry.ops} operations, ${syncs.length} syncs; seed ${seed}; ${(report.ms / 1000).toFixed(1)} s\n`,
  );
  return report;
}

/** Leaves nothing mounted under `root` (afterAll). */
export function cleanUpCrashRoot(root: string): void {
  unmountQuietly(path.join(root, 'cur', 'mnt'));
  fs.rmSync(root, { recursive: true, force: true });
}
