import type { Logger } from 'pino';
import type { AgentStatus } from '../shared/api.js';
import { toAdminError } from '../shared/errors.js';
import type { ScheduleOptions } from './agent-types.js';

type ScheduleStatus = AgentStatus['schedule'];

/**
 * Periodic checkpoints: the first after initialDelayMs, then every intervalMs after each success,
 * retryAfterMs after a failure. A run goes through the agent's create queue like any request, so a
 * scheduled and a manual create never overlap. Timers never keep the process alive.
 */
export class Scheduler {
  private timer: NodeJS.Timeout | null = null;
  private nextRunAt: Date | null = null;
  private lastRun: ScheduleStatus['lastRun'] = null;
  private stopped = false;
  private readonly intervalMs: number;
  private readonly initialDelayMs: number;
  private readonly retryAfterMs: number;

  constructor(
    options: ScheduleOptions,
    private readonly run: () => Promise<string>,
    private readonly log: Logger,
  ) {
    this.intervalMs = options.intervalMs;
    this.initialDelayMs = options.initialDelayMs ?? options.intervalMs;
    this.retryAfterMs = options.retryAfterMs ?? Math.min(options.intervalMs, 5 * 60_000);
  }

  start(): void {
    this.arm(this.initialDelayMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.nextRunAt = null;
  }

  status(): ScheduleStatus {
    return { enabled: true, intervalMs: this.intervalMs, nextRunAt: this.nextRunAt?.toISOString() ?? null, lastRun: this.lastRun };
  }

  private arm(delayMs: number): void {
    if (this.stopped) return;
    this.nextRunAt = new Date(Date.now() + delayMs);
    this.timer = setTimeout(() => void this.fire(), delayMs);
    this.timer.unref();
  }

  private async fire(): Promise<void> {
    this.timer = null;
    this.nextRunAt = null;
    const at = new Date().toISOString();
    try {
      const id = await this.run();
      this.lastRun = { at, ok: true, checkpointId: id, error: null };
      this.arm(this.intervalMs);
    } catch (err) {
      const e = toAdminError(err);
      this.lastRun = { at, ok: false, checkpointId: null, error: `${e.code}: ${e.message}` };
      if (!this.stopped) this.log.error({ code: e.code, err: e.message, retryInMs: this.retryAfterMs }, 'scheduled checkpoint failed');
      this.arm(this.retryAfterMs);
    }
  }
}
