import { randomBytes } from 'node:crypto';
import type { ClassicLevel } from 'classic-level';
import type { Logger } from 'pino';

/**
 * A steady write load for the example node: puts of new keys, overwrites, deletes and small batches,
 * `rate` operations a second, over a bounded key space so the database churns (flushes, compactions)
 * rather than only grows.
 */
export function startLoad(db: ClassicLevel<string, Buffer>, rate: number, log: Logger): { stop(): Promise<void> } {
  const keySpace = 50_000;
  const value = randomBytes(1024);
  let stopped = false;
  let inFlight = 0;
  let done = 0;
  let errors = 0;
  const key = () => `load/${String(Math.floor(Math.random() * keySpace)).padStart(6, '0')}`;
  const tickMs = 10;
  let owed = 0;
  const timer = setInterval(() => {
    owed += (rate * tickMs) / 1000;
    while (owed >= 1 && !stopped && inFlight < 256) {
      owed -= 1;
      inFlight++;
      const r = Math.random();
      const op =
        r < 0.7
          ? db.put(key(), value)
          : r < 0.85
            ? db.del(key())
            : db.batch([
                { type: 'put', key: key(), value },
                { type: 'put', key: key(), value },
                { type: 'del', key: key() },
              ]);
      op.then(
        () => done++,
        (err: unknown) => {
          errors++;
          if (errors <= 5) log.error({ err: (err as Error).message }, 'load write failed');
        },
      ).finally(() => inFlight--);
    }
    if (owed > rate) owed = rate; // do not build an unbounded backlog when the disk is slow
  }, tickMs);
  const report = setInterval(() => log.info({ writes: done, errors }, 'load'), 10_000);
  report.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      clearInterval(report);
      while (inFlight > 0) await new Promise((r) => setTimeout(r, 5));
    },
  };
}
