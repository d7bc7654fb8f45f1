import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { StorageError, type ObjectInfo, type ObjectWriter, type Storage, type StorageOp } from './storage.js';

export interface RetryOptions {
  /** Attempts per call, the first included. Default 5. */
  maxAttempts?: number;
  /** The backoff cap doubles from this after each failure: base, 2·base, 4·base, ... Default 200 ms. */
  baseDelayMs?: number;
  /** The cap never exceeds this. Default 10 s. */
  maxDelayMs?: number;
  /** Where retries are reported (warn). */
  logger?: Logger;
  /** For tests: jitter source in [0, 1) and the wait. */
  random?: () => number;
  sleep?: (ms: number) => Promise<unknown>;
}

/**
 * Retries what may succeed next time, and nothing else.
 *
 * Only `transient` StorageErrors are retried; `not-found`, `permanent` and anything that is not a
 * StorageError (a bug) go straight to the caller, on the first attempt. Waits use exponential backoff
 * with full jitter: before retry n, a random time in [0, min(maxDelayMs, baseDelayMs·2^(n-1))).
 * When the attempts run out, the error is the last one's, with "(gave up after N attempts)".
 *
 * Retrying is safe because of the Storage contract: puts are atomic and idempotent (a put whose answer
 * was lost is simply put again), deleting a missing name succeeds, putStream reopens its stream. A
 * listing that fails part way restarts and skips the names it already yielded (listings are sorted);
 * its attempt count restarts whenever it makes progress.
 */
export class RetryStorage implements Storage {
  readonly description: string;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<unknown>;

  constructor(
    private readonly inner: Storage,
    private readonly options: RetryOptions = {},
  ) {
    this.description = inner.description;
    this.maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 5));
    this.baseDelayMs = Math.max(0, options.baseDelayMs ?? 200);
    this.maxDelayMs = Math.max(0, options.maxDelayMs ?? 10_000);
    this.random = options.random ?? Math.random;
    this.sleep = options.sleep ?? ((ms) => sleep(ms));
    if (inner.openWriter) this.openWriter = () => inner.openWriter!();
    if (inner.streamRange) {
      const stream = inner.streamRange.bind(inner);
      this.streamRange = async (name, offset, length, onPiece) => {
        // A read cut short goes on from the first byte not handed over: the caller sees one run of
        // pieces. Like a listing, its attempt count restarts whenever it makes progress.
        let done = 0;
        let failures = 0;
        for (;;) {
          try {
            await stream(name, offset + done, length - done, async (piece) => {
              await onPiece(piece);
              done += piece.length;
              failures = 0;
            });
            return;
          } catch (err) {
            failures++;
            await this.backoffOrThrow('getRange', name, err, failures);
          }
        }
      };
    }
  }

  readonly streamRange?: Storage['streamRange'];

  /**
   * Passed through, not retried: only a local directory has writers, whose failures are not transient,
   * and a piece cannot be retried without the caller's buffer. A failed pack fails its backup, whose
   * next run writes the pack again.
   */
  readonly openWriter?: () => ObjectWriter;

  put(name: string, data: Buffer): Promise<void> {
    return this.retry('put', name, () => this.inner.put(name, data));
  }

  putStream(name: string, open: () => Readable, size: number): Promise<void> {
    return this.retry('putStream', name, () => this.inner.putStream(name, open, size));
  }

  get(name: string): Promise<Buffer> {
    return this.retry('get', name, () => this.inner.get(name));
  }

  getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.retry('getRange', name, () => this.inner.getRange(name, offset, length, into));
  }

  stat(name: string): Promise<ObjectInfo | null> {
    return this.retry('stat', name, () => this.inner.stat(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let last: string | undefined; // the last name yielded: a restart skips up to it
    let failures = 0; // since the last progress
    for (;;) {
      try {
        for await (const info of this.inner.list(prefix)) {
          if (last !== undefined && info.name <= last) continue;
          last = info.name;
          failures = 0;
          yield info;
        }
        return;
      } catch (err) {
        failures++;
        await this.backoffOrThrow('list', prefix, err, failures);
      }
    }
  }

  delete(name: string): Promise<void> {
    return this.retry('delete', name, () => this.inner.delete(name));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async retry<T>(op: StorageOp, name: string, attempt: () => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        await this.backoffOrThrow(op, name, err, n);
      }
    }
  }

  /** After failed attempt n: throws if it is final or not retryable, else waits the backoff. */
  private async backoffOrThrow(op: StorageOp, name: string, err: unknown, n: number): Promise<void> {
    if (!(err instanceof StorageError) || err.kind !== 'transient') throw err;
    if (n >= this.maxAttempts) {
      if (this.maxAttempts === 1) throw err;
      throw new StorageError('transient', err.backend, `${err.detail} (gave up after ${n} attempts)`, {
        ...(err.op ? { op: err.op } : {}),
        ...(err.objectName !== undefined ? { name: err.objectName } : {}),
        code: err.code,
        attempts: n,
        cause: err,
      });
    }
    const cap = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (n - 1));
    const delayMs = Math.floor(this.random() * cap);
    this.options.logger?.warn(
      { storage: this.description, op, name, attempt: n, maxAttempts: this.maxAttempts, delayMs, err: err.message },
      'storage call failed, retrying',
    );
    await this.sleep(delayMs);
  }
}
