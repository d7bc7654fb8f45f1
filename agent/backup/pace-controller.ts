/**
 * What the node felt over one tick of the auto pace (backup-pacer.ts measures it).
 */
export interface PaceObservation {
  /**
   * The host's event loop: its mean delay over the tick beyond the timer's own period, in ms (the
   * loop the agent shares with the node: a request waits that long before the node even sees it).
   */
  loopDelayMs: number;
  /**
   * A small direct read of one of the node's own table files (the checkpoint's hard links share their
   * inodes): how long it took in ms, waiting in libuv's pool and in the disk's queue like the node's
   * own reads do; null when none could be made this tick.
   */
  readLatencyMs: number | null;
  /** Bytes per second the backup actually read over the tick. */
  throughput: number;
}

/** The controller's state between ticks; start with `initialPace()`. */
export interface PaceState {
  /** Bytes per second the backup's reads are held to; Infinity: not held back (full speed). */
  rate: number;
  /** The idle level of each signal: the lowest seen, allowed to creep up slowly (null: none seen yet). */
  loopBaselineMs: number | null;
  readBaselineMs: number | null;
  /** Whether the last tick found the node under pressure (for metrics and tests). */
  pressed: boolean;
}

export interface PaceTuning {
  /** Never held below this (bytes/s): a backup on a node that stays busy still finishes. */
  floor: number;
  /** Under pressure the rate is multiplied by this (0-1). */
  decrease: number;
  /** On a calm tick the rate is multiplied by this (> 1). */
  increase: number;
  /** A calm tick with a rate this many times above what was actually read: the pace no longer binds, so full speed. */
  releaseRatio: number;
  /** A signal is pressure when above baseline × ratio and baseline + margin (both: tiny baselines make ratios noisy). */
  loopRatio: number;
  loopMarginMs: number;
  readRatio: number;
  readMarginMs: number;
  /** How fast a baseline may creep up per tick (a fraction): a node whose idle level rises for good is followed within minutes. */
  baselineCreep: number;
}

/**
 * The defaults, at a tick of 250 ms. Floor 8 MiB/s: a 1 GiB database in about two minutes however
 * busy the node. -30 % under pressure and +25 % on calm ticks: from the floor back to 500 MB/s in ~19
 * ticks (~5 s). Loop: pressure at twice the idle delay and 2 ms above it. Reads: at three times the
 * idle latency and 4 ms above it (one 4 KiB read per tick is noisier than the loop's mean of ~25
 * samples). Baselines creep up 0.06 % a tick: doubling takes ~5 minutes of a signal that stays up.
 *
 * Measured on the 2-core test machine, loaded by others (load average 7-8), a 392 MiB database through
 * the example node (bench/agent-backup.ts, page cache warm), two runs each: halving with margins of
 * 1 ms / 2 ms held the node's KV GET p99 at 1.0-1.2x quiet but took 3.5-4.7x max's time; these (-30 %,
 * 2 ms / 4 ms) 1.5-1.8x quiet and 1.6-1.7x max's time (max: p99 3.4x, p50 2.6x quiet). Issue 22's goals
 * are p99 <= 2x and time <= 2x.
 */
export const PACE_TUNING: PaceTuning = {
  floor: 8 * 1024 * 1024,
  decrease: 0.7,
  increase: 1.25,
  releaseRatio: 4,
  loopRatio: 2,
  loopMarginMs: 2,
  readRatio: 3,
  readMarginMs: 4,
  baselineCreep: 0.0006,
};

export function initialPace(): PaceState {
  return { rate: Infinity, loopBaselineMs: null, readBaselineMs: null, pressed: false };
}

/** Whether `value` is pressure against `baseline` (never on the first sample: it becomes the baseline). */
function above(value: number | null, baseline: number | null, ratio: number, margin: number): boolean {
  if (value === null || baseline === null) return false;
  return value > baseline * ratio && value > baseline + margin;
}

function creep(value: number | null, baseline: number | null, creepBy: number): number | null {
  if (value === null) return baseline;
  if (baseline === null) return value;
  return Math.min(value, baseline * (1 + creepBy));
}

/**
 * The auto pace's next state from its state and one tick's observation: a pure function (the table
 * test drives it). Pressure (either signal well above its idle baseline) multiplies the rate down, from
 * what was really read when it was not held back, never below the floor; calm ticks raise it again
 * and, once it is far above what the backup reads anyway, release it (full speed). Baselines follow the
 * lowest level seen, creeping up slowly, so that pressure is measured against idle, not against the
 * backup's own load.
 */
export function nextPace(s: PaceState, o: PaceObservation, t: PaceTuning = PACE_TUNING): PaceState {
  const pressed = above(o.loopDelayMs, s.loopBaselineMs, t.loopRatio, t.loopMarginMs) || above(o.readLatencyMs, s.readBaselineMs, t.readRatio, t.readMarginMs);
  let rate: number;
  if (pressed) {
    const from = Number.isFinite(s.rate) ? Math.min(s.rate, Math.max(o.throughput, t.floor)) : Math.max(o.throughput, t.floor);
    rate = Math.max(t.floor, from * t.decrease);
  } else if (!Number.isFinite(s.rate)) {
    rate = Infinity;
  } else {
    const raised = Math.max(t.floor, s.rate * t.increase);
    rate = raised > o.throughput * t.releaseRatio && o.throughput > 0 ? Infinity : raised;
  }
  return {
    rate,
    loopBaselineMs: creep(o.loopDelayMs, s.loopBaselineMs, t.baselineCreep),
    readBaselineMs: creep(o.readLatencyMs, s.readBaselineMs, t.baselineCreep),
    pressed,
  };
}
