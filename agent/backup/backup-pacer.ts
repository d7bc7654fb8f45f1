import fs from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BackupPace } from '../../shared/api.js';
import { DIRECT_ALIGN, alignedBuffers, openDirect, readPages } from '../fs/direct-io.js';
import { PACE_TUNING, initialPace, nextPace, type PaceObservation, type PaceState, type PaceTuning } from './pace-controller.js';

/** How often auto looks at the node and decides. */
export const PACE_TICK_MS = 250;
/** monitorEventLoopDelay's timer period: its samples include it, so it is taken off. */
const LOOP_RESOLUTION_MS = 10;
const PROBE_SIZE = DIRECT_ALIGN;
/**
 * Direct reads auto makes per tick, spread over it; the tick's read latency is their median: one read a
 * tick swung with whatever else the disk did at that instant. (A margin of 1 or 2 ms instead of 4 with
 * it made no difference the breakdown bench could see: docs/benchmarks.md, 2026-12-06.)
 */
export const PROBES_PER_TICK = 5;

export interface BackupPacerOptions {
  pace: BackupPace;
  /**
   * A directory of the node's table files (a checkpoint: its files are hard links to the node's own, same
   * inodes, same disk) for auto's read probe; null: auto watches the event loop only.
   */
  probeDir: string | null;
  /** The rate in effect changed (bytes/s; Infinity: not held back). Called once at start too. */
  onRate?: (bytesPerSecond: number) => void;
  /** Reads were held back this many more seconds (wall-clock: overlapping waits count once). */
  onWait?: (seconds: number) => void;
  tuning?: PaceTuning;
}

/**
 * Paces a backup's reads of checkpoint files: `take(bytes)` before each read resolves when the bytes
 * fit under the rate in effect. With `max` it never waits. With a fixed rate it is a token bucket at
 * that rate. With `auto` it measures, every PACE_TICK_MS, what the node feels (its event loop's delay,
 * and the median of PROBES_PER_TICK 4 KiB direct reads of one of its table files) and lets
 * pace-controller.ts set the rate; its first tick comes before the first read (calibration).
 *
 * Contract:
 * - Reads are the one budget: every byte a backup stores was read first (compression and sealing only
 *   shrink it or add a few bytes), so a read rate bounds the uploads too; uploads keep their own
 *   separate cap (bandwidthLimit) for links slower than the disk.
 * - It never holds a read below the floor of the tuning (auto) or the rate given (fixed): it cannot
 *   starve a backup.
 * - `stop()`, once, last: ends the ticks and the loop monitor. Nothing else it starts keeps the
 *   process alive (timers unref'd), but for auto's first tick (PACE_TICK_MS), which a read waits for.
 * - An abort of `signal` ends a wait at once, rejecting with the signal's reason.
 */
export class BackupPacer {
  private state: PaceState = initialPace();
  private nextFree = 0;
  /** Until when reads are already counted as held back (so that concurrent waits count once). */
  private heldUntil = 0;
  private readBytes = 0;
  private lastTick = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private loop: IntervalHistogram | null = null;
  private probing = false;
  private probeFile: { handle: fs.promises.FileHandle; size: number } | null | undefined = undefined;
  private readonly probeBuffer: Buffer | null;
  /** This tick's probe latencies (ms). */
  private probes: number[] = [];
  private probeTimer: NodeJS.Timeout | null = null;
  private readonly tuning: PaceTuning;
  /**
   * Auto's first tick is its calibration: no read goes before it has run, so the baselines it sets are
   * the node's levels before this backup, not the backup's own load (taken at full speed, a baseline
   * made every later tick look calm, and auto never backed off). Null once it has run, and for max and
   * a fixed rate.
   */
  private calibration: { done: Promise<void>; resolve: () => void } | null = null;
  /** Seconds reads were held back so far. */
  waitedSeconds = 0;
  /** Ticks auto found the node under pressure. */
  pressedTicks = 0;

  constructor(private readonly o: BackupPacerOptions) {
    this.tuning = o.tuning ?? PACE_TUNING;
    this.probeBuffer = o.pace === 'auto' && o.probeDir !== null ? alignedBuffers(1, PROBE_SIZE)[0]! : null;
    if (o.pace === 'auto') {
      let resolve!: () => void;
      const done = new Promise<void>((r) => (resolve = r));
      this.calibration = { done, resolve };
      this.loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
      this.loop.enable();
      // Kept ref'd until the calibration tick: a read waits for it, and a process whose backup is all
      // that is left must not exit (or hang) with that read pending.
      this.timer = setInterval(() => this.tick(), PACE_TICK_MS);
      this.probe();
    } else if (o.pace !== 'max') {
      this.state.rate = o.pace.bytesPerSecond;
    }
    o.onRate?.(this.state.rate);
  }

  /** The rate in effect (bytes/s; Infinity: not held back). */
  get rate(): number {
    return this.state.rate;
  }

  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.calibration) await untilOrAbort(this.calibration.done, signal);
    this.readBytes += bytes;
    const rate = this.state.rate;
    if (!Number.isFinite(rate)) return;
    const now = performance.now();
    const start = Math.max(now, this.nextFree);
    this.nextFree = start + (bytes * 1000) / rate;
    if (start <= now) return;
    const held = start - Math.max(now, this.heldUntil);
    if (held > 0) {
      this.heldUntil = start;
      this.waitedSeconds += held / 1000;
      this.o.onWait?.(held / 1000);
    }
    await sleep(start - now, undefined, signal ? { signal } : undefined);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    this.endCalibration();
    this.loop?.disable();
    this.loop = null;
    const file = this.probeFile;
    this.probeFile = null;
    await file?.handle.close().catch(() => {});
  }

  private tick(): void {
    const now = performance.now();
    const seconds = (now - this.lastTick) / 1000;
    this.lastTick = now;
    const loop = this.loop;
    if (!loop) return;
    const mean = loop.count > 0 ? loop.mean / 1e6 : LOOP_RESOLUTION_MS;
    loop.reset();
    const observation: PaceObservation = {
      loopDelayMs: Math.max(0, mean - LOOP_RESOLUTION_MS),
      readLatencyMs: median(this.probes),
      throughput: seconds > 0 ? this.readBytes / seconds : 0,
    };
    this.readBytes = 0;
    this.probes = [];
    const before = this.state.rate;
    this.state = nextPace(this.state, observation, this.tuning);
    this.endCalibration();
    if (this.state.pressed) this.pressedTicks++;
    if (this.state.rate !== before) {
      // A lower rate applies from now (reservations already made at the old rate stand); a higher one
      // must not leave reads queued behind reservations made at the lower one.
      if (this.state.rate > before) this.nextFree = Math.min(this.nextFree, now);
      this.o.onRate?.(this.state.rate);
    }
    this.probe();
  }

  private endCalibration(): void {
    this.calibration?.resolve();
    this.calibration = null;
    this.timer?.unref();
  }

  /**
   * A 4 KiB direct read at a random page of the node's largest table file, timed; at most one at a time;
   * then the next, PACE_TICK_MS / PROBES_PER_TICK later, until the tick has its PROBES_PER_TICK.
   */
  private probe(): void {
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (this.probing || !this.probeBuffer || this.o.probeDir === null || this.probeFile === null) return;
    this.probing = true;
    void (async () => {
      try {
        if (this.probeFile === undefined) {
          const opened = await openProbe(this.o.probeDir!);
          // Stopped meanwhile: the handle is ours to close.
          if (!this.timer) return void (await opened?.handle.close().catch(() => {}));
          this.probeFile = opened;
        }
        const file = this.probeFile;
        if (!file || !this.timer) return;
        const pages = Math.floor(file.size / PROBE_SIZE);
        const offset = Math.floor(Math.random() * pages) * PROBE_SIZE;
        const started = performance.now();
        await readPages(file.handle, this.probeBuffer!, offset, PROBE_SIZE);
        this.probes.push(performance.now() - started);
        if (this.timer && this.probes.length < PROBES_PER_TICK) {
          this.probeTimer = setTimeout(() => this.probe(), PACE_TICK_MS / PROBES_PER_TICK);
          this.probeTimer.unref();
        }
      } catch {
        // A probe that cannot be made (the checkpoint deleted under us, no O_DIRECT): the loop alone decides.
        this.probeFile = null;
      } finally {
        this.probing = false;
      }
    })();
  }
}

/** `p`, or the signal's reason as soon as it aborts. */
function untilOrAbort(p: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    void p.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}

/** The middle value (the mean of the two middle ones), or null for none. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The largest table file of `dir`, opened O_DIRECT (its pages are the node's: never cached by the probe); null when none. */
async function openProbe(dir: string): Promise<{ handle: fs.promises.FileHandle; size: number } | null> {
  let best: { name: string; size: number } | null = null;
  for (const name of await fs.promises.readdir(dir)) {
    if (!name.endsWith('.ldb') && !name.endsWith('.sst')) continue;
    const size = (await fs.promises.stat(path.join(dir, name))).size;
    if (size >= PROBE_SIZE && (best === null || size > best.size)) best = { name, size };
  }
  if (!best) return null;
  const handle = await openDirect(path.join(dir, best.name), fs.constants.O_RDONLY);
  return handle ? { handle, size: best.size } : null;
}
