import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildAfter, ChildArgs, ChildWindow } from './log-archive-cpu-child.js';
import { sleep } from './progress.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'log-archive-cpu-child.js');

export interface CpuPair {
  without: ChildWindow;
  withArchive: ChildWindow;
  /**
   * Each side's CPU from the end of its window to the start of its next (the other side's window), or
   * for the last pair over as long again: what the window's writes left for later (ChildAfter).
   */
  withoutAfter: ChildAfter;
  withArchiveAfter: ChildAfter;
}

/**
 * The log archive bench's CPU and write-latency pairs: two processes (log-archive-cpu-child.ts), one
 * node without archiving and one with, each warmed up once, then `runs` pairs of windows, alternating
 * (without, then with): while one runs the load, the other is idle, and each side's idle time after a
 * window is measured too (what the window's writes left for later). After the last pair the archiving
 * side is left idle for a window's length, as the other side was during its window. Both are stopped
 * at the end, or on a failure.
 */
export async function cpuPairs(o: { dir: string; passwordFile: string; rate: number; seconds: number; writeBytes: number; runs: number; warmUpSeconds: number }): Promise<CpuPair[]> {
  const children: Child[] = [];
  try {
    for (const mode of ['plain', 'archive'] as const) {
      const dir = path.join(o.dir, mode);
      fs.mkdirSync(dir, { recursive: true });
      const args: ChildArgs = { mode, dir, passwordFile: o.passwordFile, rate: o.rate, seconds: o.seconds, writeBytes: o.writeBytes, warmUpSeconds: o.warmUpSeconds };
      const child = new Child(fork(CHILD, [JSON.stringify(args)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), mode);
      children.push(child);
      await child.next<{ ready: true }>();
    }
    const [plain, archive] = children as [Child, Child];
    const windows: { without: ChildWindow; withArchive: ChildWindow }[] = [];
    const withoutAfter: ChildAfter[] = [];
    const withArchiveAfter: ChildAfter[] = [];
    for (let r = 0; r < o.runs; r++) {
      if (r > 0) withoutAfter.push(await plain.ask<ChildAfter>({ after: true }));
      const without = await plain.ask<ChildWindow>({ run: true });
      if (r > 0) withArchiveAfter.push(await archive.ask<ChildAfter>({ after: true }));
      const withArchive = await archive.ask<ChildWindow>({ run: true });
      windows.push({ without, withArchive });
    }
    withoutAfter.push(await plain.ask<ChildAfter>({ after: true })); // idle over the last window with archiving
    // The archiving side's idle time after its last window: as long as a window, as the other side's was.
    await sleep(o.seconds * 1000);
    withArchiveAfter.push(await archive.ask<ChildAfter>({ after: true }));
    return windows.map((w, i) => ({ ...w, withoutAfter: withoutAfter[i]!, withArchiveAfter: withArchiveAfter[i]! }));
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
}

/** A child's messages, one at a time, in order; its exit fails whoever waits. */
class Child {
  private readonly queue: unknown[] = [];
  private waiting: { resolve: (m: unknown) => void; reject: (e: Error) => void } | null = null;
  private exited: Error | null = null;
  private readonly done: Promise<void>;

  constructor(
    private readonly proc: ChildProcess,
    private readonly name: string,
  ) {
    proc.on('message', (m) => {
      if (this.waiting) {
        this.waiting.resolve(m);
        this.waiting = null;
      } else this.queue.push(m);
    });
    this.done = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exited = new Error(`the ${name} side of the CPU pairs exited (${signal ?? `code ${code}`})`);
        this.waiting?.reject(this.exited);
        this.waiting = null;
        resolve();
      });
    });
  }

  next<T>(): Promise<T> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift() as T);
    if (this.exited) return Promise.reject(this.exited);
    return new Promise<T>((resolve, reject) => {
      this.waiting = { resolve: resolve as (m: unknown) => void, reject };
    });
  }

  ask<T>(message: object): Promise<T> {
    this.proc.send(message);
    return this.next<T>();
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    if (this.proc.connected) this.proc.send({ stop: true });
    // A child that does not stop within a minute is killed: the bench must end.
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 60_000);
    await this.done;
    clearTimeout(timer);
  }
}
