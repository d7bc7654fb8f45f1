import { randomBytes } from 'node:crypto';

/**
 * Sequential writers that each own their keys, and an in-memory model of what they wrote.
 *
 * Each writer issues one operation (put, delete, or a batch) at a time and waits for it, so a writer's
 * history is totally ordered; a checkpoint must equal, for every writer, the state after exactly some
 * operation j of that writer (batches all-or-nothing), with j at least the last operation acknowledged
 * before the create request and at most the last one issued before the create returned.
 * Every value encodes (writer, op, key) and carries filler bytes derived from them, so a value read back
 * tells which operation wrote it, and any damage to its bytes is seen.
 */

const POOL = randomBytes(4 * 1024 * 1024);

export function keyOf(writer: number, k: number): string {
  return `w${String(writer).padStart(2, '0')}/${String(k).padStart(7, '0')}`;
}

export function parseKey(key: string): { writer: number; k: number } | null {
  const m = /^w(\d{2})\/(\d{7})$/.exec(key);
  return m ? { writer: Number(m[1]), k: Number(m[2]) } : null;
}

export function valueOf(writer: number, op: number, k: number, size: number): Buffer {
  const header = Buffer.from(`${writer}:${op}:${k}:`);
  const len = Math.max(0, size - header.length);
  const start = (writer * 1_000_003 + op * 7919 + k * 104_729) % (POOL.length - len);
  return Buffer.concat([header, POOL.subarray(start, start + len)]);
}

/** The op that wrote `value` for (writer, k), if the value is exactly what that op wrote; else null. */
export function opOfValue(writer: number, k: number, value: Buffer, size: (op: number, k: number) => number): number | null {
  const text = value.subarray(0, 40).toString('latin1');
  const m = /^(\d+):(\d+):(\d+):/.exec(text);
  if (!m || Number(m[1]) !== writer || Number(m[3]) !== k) return null;
  const op = Number(m[2]);
  const headerLength = m[0].length;
  const len = Math.max(0, size(op, k) - headerLength);
  if (value.length !== headerLength + len) return null;
  // Compare the filler in place (no copy): this runs for every entry of every checkpoint.
  const start = (writer * 1_000_003 + op * 7919 + k * 104_729) % (POOL.length - len);
  return POOL.compare(value, headerLength, value.length, start, start + len) === 0 ? op : null;
}

/** One change of one key: value written by op `op` (put) or removed (del). */
export type Change = { k: number; put: boolean };

export class WriterModel {
  /** ops[j - 1] = the changes of op j (ops are numbered from 1). */
  readonly ops: Change[][] = [];
  /** Ops acknowledged by the database; ops issued (acknowledged or in flight). */
  acked = 0;
  issued = 0;

  constructor(readonly writer: number) {}

  /** State after op j, built incrementally: call with non-decreasing j. */
  private cursorOp = 0;
  private readonly cursorState = new Map<number, number>();

  stateAt(j: number): Map<number, number> {
    if (j < this.cursorOp) throw new Error('stateAt must be called with non-decreasing op numbers');
    for (; this.cursorOp < j; this.cursorOp++) {
      const op = this.cursorOp + 1;
      for (const c of this.ops[this.cursorOp]!) {
        if (c.put) this.cursorState.set(c.k, op);
        else this.cursorState.delete(c.k);
      }
    }
    return this.cursorState;
  }

  /**
   * Finds j in [lo, hi] such that the state after op j is exactly `seen` (key -> op that wrote it).
   * Returns j, or null when no such j exists (the checkpoint is not a prefix of this writer's history).
   */
  matchPrefix(seen: Map<number, number>, lo: number, hi: number): number | null {
    const base = this.stateAt(lo);
    const expect = (k: number, overlay: Map<number, number | null>): number | undefined => {
      if (overlay.has(k)) return overlay.get(k) ?? undefined;
      return base.get(k);
    };
    const overlay = new Map<number, number | null>();
    const bad = new Set<number>();
    for (const [k, op] of base) if (seen.get(k) !== op) bad.add(k);
    for (const [k, op] of seen) if (base.get(k) !== op) bad.add(k);
    if (bad.size === 0) return lo;
    for (let j = lo + 1; j <= hi; j++) {
      for (const c of this.ops[j - 1]!) {
        overlay.set(c.k, c.put ? j : null);
        if (seen.get(c.k) === expect(c.k, overlay)) bad.delete(c.k);
        else bad.add(c.k);
      }
      if (bad.size === 0) return j;
    }
    return null;
  }
}
