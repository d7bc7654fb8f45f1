import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './processes.js';

/**
 * The power-cut filesystem (test/support/powercut-fs/powercut_fs.py: what it keeps, and the strict
 * rules it keeps it by) as the tests use it: mount it over `<base>/data`, cut the power, unmount, and
 * find in `<base>/data` only what a power cut would have left.
 */

export const POWERCUT_FS = path.join(ROOT, 'test', 'support', 'powercut-fs', 'powercut_fs.py');
/** Debian's python3-fusepy installs the module for this interpreter only. */
const PYTHON = '/usr/bin/python3';

/** Why the power-cut filesystem cannot be mounted here; null when it can. */
export function powercutUnavailable(): string | null {
  if (process.platform !== 'linux') return `FUSE power-cut tests run on Linux only (this is ${process.platform})`;
  if (!fs.existsSync('/dev/fuse')) return 'there is no /dev/fuse on this machine';
  if (!fs.existsSync(PYTHON)) return `${PYTHON} is missing (apt-get install python3 python3-fusepy)`;
  const probe = spawnSync(PYTHON, ['-c', 'import fusepy'], { encoding: 'utf8' });
  if (probe.status !== 0) return `${PYTHON} cannot import fusepy (apt-get install python3-fusepy): ${probe.stderr.trim().split('\n').pop()}`;
  if (process.getuid?.() !== 0) return 'mounting the power-cut filesystem needs root (the tests mount it without fusermount)';
  return null;
}

export interface PowercutExit {
  /** Operations the filesystem counted (each a possible cut point), and by kind. */
  ops: number;
  counts: Record<string, number>;
  /** Whether the power was cut (then `<base>/data` now holds only the durable state). */
  cut: boolean;
}

export interface PowercutMount {
  base: string;
  /** Where processes see the filesystem. */
  mnt: string;
  /** The backing tree: read it only once unmounted. */
  data: string;
  /** Resolves with the operation count when the power goes (by cutAfter or cut()). */
  readonly whenCut: Promise<number>;
  /** Whether the power is off. */
  isCut(): boolean;
  /** Cuts the power now. */
  cut(): Promise<number>;
  /** Unmounts (lazily: the processes on it must be gone or going) and waits for the filesystem to exit. */
  unmount(): Promise<PowercutExit>;
}

/**
 * Mounts the power-cut filesystem over `<base>/data` (created if missing: what is in it now is durable)
 * at `<base>/mnt`. `cutAfter`: the power goes right after the filesystem's N-th counted operation.
 * `opLog`: a file to append every counted operation to ("<n> <kind> <path>").
 */
export async function mountPowercut(base: string, options: { cutAfter?: number; opLog?: string } = {}): Promise<PowercutMount> {
  const data = path.join(base, 'data');
  const mnt = path.join(base, 'mnt');
  fs.mkdirSync(data, { recursive: true });
  fs.mkdirSync(mnt, { recursive: true });
  const args = [POWERCUT_FS, base, mnt];
  if (options.cutAfter !== undefined) args.push('--cut-after', String(options.cutAfter));
  if (options.opLog !== undefined) args.push('--op-log', options.opLog);
  const child: ChildProcess = spawn(PYTHON, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)));
  // 'close', not 'exit': the exit event's line may still be on its way through the pipe when the process is gone.
  const exitCode = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  let cutAt: number | null = null;
  let onCut: (op: number) => void = () => {};
  const whenCut = new Promise<number>((resolve) => (onCut = resolve));
  let exitEvent: PowercutExit | null = null;
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  let buffered = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const e = JSON.parse(line) as { event: string; op?: number } & PowercutExit;
      if (e.event === 'ready') onReady();
      else if (e.event === 'cut') {
        cutAt = e.op!;
        onCut(e.op!);
      } else if (e.event === 'exit') exitEvent = { ops: e.ops, counts: e.counts, cut: e.cut };
    }
  });
  await Promise.race([
    ready,
    exitCode.then((code) => {
      throw new Error(`the power-cut filesystem exited with ${code} before it was mounted: ${stderr.trim()}`);
    }),
  ]);
  // FUSE_INIT has run: the mount is there (its device differs from the directory's underneath).
  if (fs.statSync(mnt).dev === fs.statSync(base).dev) throw new Error(`the power-cut filesystem said ready but ${mnt} is not mounted`);
  let unmounted: Promise<PowercutExit> | null = null;
  return {
    base,
    mnt,
    data,
    whenCut,
    isCut: () => cutAt !== null,
    async cut() {
      child.kill('SIGUSR1');
      return whenCut;
    },
    unmount() {
      unmounted ??= (async () => {
        execFileSync('umount', ['-l', mnt]);
        const code = await exitCode;
        if (code !== 0 || exitEvent === null) throw new Error(`the power-cut filesystem exited with ${code}: ${stderr.trim()}`);
        return exitEvent;
      })();
      return unmounted;
    },
  };
}
