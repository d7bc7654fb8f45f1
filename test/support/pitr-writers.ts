import { ClassicLevel } from 'classic-level';
import { WriterModel, keyOf, opOfValue, parseKey, valueOf, type Change } from './write-model.js';

/**
 * Writers for the restore-to-a-moment tests, and the check a restored database must pass: for every
 * writer, the state after some op j with j at least the last op acknowledged ACK_BOUND_MS before the
 * moment and at most the last op issued at or before it.
 *
 * Writes go through `apply` (a classic-level database in the process, or the example node's HTTP API).
 * A failed op (the node killed under it) is retried, unchanged, until it succeeds: puts and deletes are
 * idempotent, so the history stays the model's whether the lost attempt reached the log or not.
 */

/** Every write acknowledged this long before a moment must be in a restore to it. */
export const ACK_BOUND_MS = 2000;
export const size = (op: number, k: number) => ((op + k) % 97 === 0 ? 40_000 : 200 + ((op * 31 + k * 17) % 1800));

export type Write = { type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string };

export interface WritersOptions {
  writers: number;
  keysPerWriter: number;
  /** Multi-key batches (one op) as well as single puts and deletes. */
  batches: boolean;
  /** Pause between one writer's ops (ms). */
  pauseMs: number;
}

interface Timed {
  issuedAt: number[];
  ackedAt: number[];
}

export class Writers {
  readonly models: WriterModel[];
  /** Per writer, per op (index op - 1): when it was issued and acknowledged. */
  readonly times: Timed[];
  /** Failed attempts, retried (the node was down). */
  failures = 0;
  private stopped = false;
  private running: Promise<void>[] = [];

  constructor(
    private readonly apply: (writes: Write[]) => Promise<void>,
    readonly o: WritersOptions,
  ) {
    this.models = Array.from({ length: o.writers }, (_, w) => new WriterModel(w));
    this.times = this.models.map(() => ({ issuedAt: [], ackedAt: [] }));
  }

  start(): void {
    this.stopped = false;
    this.running = this.models.map(async (m) => {
      // An op issued and not acknowledged when the writers stopped is retried first.
      if (m.issued > m.acked) await this.send(m, m.issued);
      let seed = m.writer * 7 + 1 + m.issued;
      const rnd = () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
        return seed / 2_147_483_648;
      };
      const key = () => Math.floor(rnd() * this.o.keysPerWriter);
      while (!this.stopped) {
        const r = rnd();
        let changes: Change[];
        if (r < 0.55 || (!this.o.batches && r >= 0.7)) changes = [{ k: key(), put: true }];
        else if (r < 0.7) changes = [{ k: key(), put: false }];
        else {
          const n = 2 + Math.floor(rnd() * 8);
          const seen = new Set<number>();
          changes = [];
          for (let i = 0; i < n; i++) {
            const k = key();
            if (seen.has(k)) continue;
            seen.add(k);
            changes.push({ k, put: rnd() < 0.75 });
          }
        }
        m.ops.push(changes);
        const op = ++m.issued;
        this.times[m.writer]!.issuedAt.push(Date.now());
        await this.send(m, op);
        await new Promise((res) => setTimeout(res, this.o.pauseMs));
      }
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  /** Sends op `op` of `m` until it is acknowledged (or the writers stop: it stays issued, unacknowledged). */
  private async send(m: WriterModel, op: number): Promise<void> {
    const changes = m.ops[op - 1]!;
    const writes: Write[] = changes.map((c) =>
      c.put ? { type: 'put', key: keyOf(m.writer, c.k), value: valueOf(m.writer, op, c.k, size(op, c.k)) } : { type: 'del', key: keyOf(m.writer, c.k) },
    );
    for (;;) {
      try {
        await this.apply(writes);
        break;
      } catch {
        this.failures++;
        if (this.stopped) return;
        await new Promise((res) => setTimeout(res, 50));
      }
    }
    this.times[m.writer]!.ackedAt.push(Date.now());
    m.acked = op;
  }

  /** Acknowledged ops in all. */
  get acked(): number {
    return this.models.reduce((n, m) => n + m.acked, 0);
  }

  /** Per writer: [lo, hi] = [last op acknowledged ≥ ACK_BOUND_MS before `at`, last op issued at or before `at`]. */
  bounds(at: number): [number, number][] {
    return this.times.map((t) => {
      let lo = 0;
      while (lo < t.ackedAt.length && t.ackedAt[lo]! <= at - ACK_BOUND_MS) lo++;
      let hi = 0;
      while (hi < t.issuedAt.length && t.issuedAt[hi]! <= at) hi++;
      return [lo, hi];
    });
  }

  /**
   * Null if `seen` is, for every writer, the state after an op within `bounds`; else which writer is not.
   * matchPrefix walks forward only: check restores in order of their moments, or with `fresh` models.
   */
  mismatch(seen: Map<number, number>[], bounds: [number, number][], fresh: boolean): string | null {
    for (let w = 0; w < this.o.writers; w++) {
      const model = fresh ? Object.assign(new WriterModel(w), { ops: this.models[w]!.ops }) : this.models[w]!;
      const [lo, hi] = bounds[w]!;
      if (model.matchPrefix(seen[w]!, lo, hi) === null) return `writer ${w}: not the state after any op in [${lo}, ${hi}]`;
    }
    return null;
  }
}

/** One classic-level write of `writes` (a put, a delete, or a batch). */
export function levelApply(db: ClassicLevel<string, Buffer>): (writes: Write[]) => Promise<void> {
  return async (writes) => {
    if (writes.length === 1) {
      const w = writes[0]!;
      await (w.type === 'put' ? db.put(w.key, w.value) : db.del(w.key));
    } else {
      await db.batch(writes);
    }
  };
}

/** One request to the example node's KV API (single writes only: it has no batch route). */
export function httpApply(port: () => number): (writes: Write[]) => Promise<void> {
  return async (writes) => {
    if (writes.length !== 1) throw new Error('the KV API writes one key at a time');
    const w = writes[0]!;
    const res = await fetch(`http://127.0.0.1:${port()}/kv/${encodeURIComponent(w.key)}`, {
      method: w.type === 'put' ? 'PUT' : 'DELETE',
      ...(w.type === 'put' ? { body: w.value } : {}),
      signal: AbortSignal.timeout(30_000),
    });
    await res.arrayBuffer();
    if (res.status !== 204) throw new Error(`KV ${w.type} ${w.key}: HTTP ${res.status}`);
  };
}

/**
 * What a restored database holds, per writer: key -> the op that wrote it. Keys under `ignorePrefix`
 * (the example node's own `--load`) are skipped; any other key or value no op wrote is an error.
 */
export async function readState(dir: string, writers: number, ignorePrefix?: string): Promise<Map<number, number>[]> {
  const db = new ClassicLevel<string, Buffer>(dir, { createIfMissing: false, valueEncoding: 'buffer' });
  await db.open();
  const seen = Array.from({ length: writers }, () => new Map<number, number>());
  try {
    for await (const [key, value] of db.iterator()) {
      if (ignorePrefix !== undefined && key.startsWith(ignorePrefix)) continue;
      const parsed = parseKey(key);
      if (!parsed) throw new Error(`unexpected key ${key}`);
      const op = opOfValue(parsed.writer, parsed.k, value, size);
      if (op === null) throw new Error(`value of ${key} is not one any op wrote`);
      seen[parsed.writer]!.set(parsed.k, op);
    }
  } finally {
    await db.close();
  }
  return seen;
}

/** Polls `cond` until it holds; fails with `what` after the deadline. */
export async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
