import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { STORAGE_OPS, StorageError, type ObjectInfo, type Storage, type StorageOp } from './storage.js';

/**
 * What an injected fault looks like to the caller:
 * - `transient`: a 5xx-like failure ("injected: HTTP 500");
 * - `reset`: a transient "connection reset (ECONNRESET)";
 * - `hang`: no answer for `hangMs`, then a transient timeout, as a backend with a request timeout gives on
 *   a hung server (real hangs are tested at the network level, with a proxy in front of S3);
 * - `not-found`, `permanent`: errors that must never be retried.
 */
export type FaultKind = 'transient' | 'reset' | 'hang' | 'not-found' | 'permanent';

export interface FaultRule {
  kind: FaultKind;
  /** The methods it applies to. Default: all. */
  ops?: readonly StorageOp[];
  /**
   * Fail only the first N matching calls. With neither `first` nor `probability`, every matching call
   * fails (a persistent fault).
   */
  first?: number;
  /** Fail each matching call with this probability (after the first N, if `first` is given too). */
  probability?: number;
  /** For `hang`: how long before the timeout error. Default 1000 ms. */
  hangMs?: number;
  /**
   * Perform the call on the inner storage first, then fail: the write happened but its answer was lost
   * (for put, putStream, delete). For `list`: fail at the end of the listing.
   */
  after?: boolean;
  /** For list: yield this many items, then fail. */
  afterItems?: number;
  /** Only calls on names (or list prefixes) starting with this: `index/` fails index writes alone. */
  prefix?: string;
  /** Only for a streamed getRange (streamRange): hand over this many bytes, then fail (a download cut short). */
  afterBytes?: number;
}

/**
 * Test-only wrapper: injects faults per method by rules, and counts calls, so that tests can check what
 * retry-storage retries, how often, and what it never retries. The first rule that fires wins.
 */
export class FaultStorage implements Storage {
  readonly description: string;
  /** Calls received per method (each attempt of a retried call counts). */
  readonly calls: Record<StorageOp, number> = zeroCounts();
  /** Faults injected per method. */
  readonly injected: Record<StorageOp, number> = zeroCounts();
  private readonly matched = new Map<FaultRule, number>();

  constructor(
    private readonly inner: Storage,
    private rules: FaultRule[] = [],
    private readonly random: () => number = Math.random,
  ) {
    this.description = inner.description;
    if (inner.streamRange) {
      const stream = inner.streamRange.bind(inner);
      this.streamRange = async (name, offset, length, onPiece) => {
        this.calls.getRange++;
        const rule = this.fire('getRange', name, true);
        if (!rule) return stream(name, offset, length, onPiece);
        if (rule.afterBytes === undefined) throw await this.fault(rule, 'getRange', name);
        let handed = 0;
        const cut = new Error('cut');
        try {
          await stream(name, offset, length, async (piece) => {
            const room = rule.afterBytes! - handed;
            if (room > 0) await onPiece(piece.subarray(0, Math.min(room, piece.length)));
            handed += Math.min(Math.max(room, 0), piece.length);
            if (handed >= rule.afterBytes!) throw cut;
          });
        } catch (err) {
          if (err !== cut) throw err;
        }
        throw await this.fault(rule, 'getRange', name);
      };
    }
  }

  /** Counted and faulted as a getRange; `afterBytes` cuts it short. */
  readonly streamRange?: Storage['streamRange'];

  /** Replaces the rules (and restarts their `first` counts). */
  setRules(rules: FaultRule[]): void {
    this.rules = rules;
    this.matched.clear();
  }

  totalCalls(): number {
    return STORAGE_OPS.reduce((sum, op) => sum + this.calls[op], 0);
  }

  put(name: string, data: Buffer): Promise<void> {
    return this.call('put', name, () => this.inner.put(name, data));
  }

  putStream(name: string, open: () => Readable, size: number): Promise<void> {
    return this.call('putStream', name, () => this.inner.putStream(name, open, size));
  }

  get(name: string): Promise<Buffer> {
    return this.call('get', name, () => this.inner.get(name));
  }

  getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.call('getRange', name, () => this.inner.getRange(name, offset, length, into));
  }

  stat(name: string): Promise<ObjectInfo | null> {
    return this.call('stat', name, () => this.inner.stat(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.calls.list++;
    const rule = this.fire('list', prefix);
    if (rule && !rule.after && rule.afterItems === undefined) throw await this.fault(rule, 'list', prefix);
    let n = 0;
    for await (const info of this.inner.list(prefix)) {
      if (rule && rule.afterItems !== undefined && n >= rule.afterItems) throw await this.fault(rule, 'list', prefix);
      n++;
      yield info;
    }
    if (rule) throw await this.fault(rule, 'list', prefix);
  }

  delete(name: string): Promise<void> {
    return this.call('delete', name, () => this.inner.delete(name));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async call<T>(op: StorageOp, name: string, forward: () => Promise<T>): Promise<T> {
    this.calls[op]++;
    const rule = this.fire(op, name);
    if (!rule) return forward();
    if (rule.after) await forward();
    throw await this.fault(rule, op, name);
  }

  /** The first rule that fires for this call, counting it. */
  private fire(op: StorageOp, name: string, streamed = false): FaultRule | undefined {
    for (const rule of this.rules) {
      if (rule.ops && !rule.ops.includes(op)) continue;
      if (rule.prefix !== undefined && !name.startsWith(rule.prefix)) continue;
      if (rule.afterBytes !== undefined && !streamed) continue;
      const seen = (this.matched.get(rule) ?? 0) + 1;
      this.matched.set(rule, seen);
      let fires: boolean;
      if (rule.first !== undefined && seen <= rule.first) fires = true;
      else if (rule.probability !== undefined) fires = this.random() < rule.probability;
      else fires = rule.first === undefined;
      if (fires) {
        this.injected[op]++;
        return rule;
      }
    }
    return undefined;
  }

  private async fault(rule: FaultRule, op: StorageOp, name: string): Promise<StorageError> {
    const b = this.description;
    switch (rule.kind) {
      case 'transient':
        return new StorageError('transient', b, 'injected fault: internal error (HTTP 500)', { op, name });
      case 'reset':
        return new StorageError('transient', b, 'injected fault: connection reset (ECONNRESET)', { op, name });
      case 'hang': {
        const ms = rule.hangMs ?? 1000;
        await sleep(ms);
        return new StorageError('transient', b, `injected fault: timed out after ${ms} ms without an answer`, { op, name });
      }
      case 'not-found':
        return new StorageError('not-found', b, 'injected fault: no such object', { op, name });
      case 'permanent':
        return new StorageError('permanent', b, 'injected fault: access denied (HTTP 403)', { op, name });
    }
  }
}

function zeroCounts(): Record<StorageOp, number> {
  return { put: 0, putStream: 0, get: 0, getRange: 0, stat: 0, list: 0, delete: 0 };
}
