import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { StorageError, type ObjectInfo, type ObjectWriter, type Storage, type StorageOp } from './storage.js';

/**
 * One pino debug line per call (per attempt, when under retry-storage): `{storage, op, name, bytes, ms}`,
 * and on failure `{..., kind, err}` with the StorageError's message, which never holds credentials.
 * Data is never logged, only sizes.
 */
export class LoggingStorage implements Storage {
  readonly description: string;
  private readonly log: Logger;

  constructor(
    private readonly inner: Storage,
    logger: Logger,
  ) {
    this.description = inner.description;
    this.log = logger.child({ storage: inner.description });
    if (inner.openWriter) {
      this.openWriter = () => {
        const w = inner.openWriter!();
        return { write: (d, p) => w.write(d, p), commit: (name, size) => this.timed('put', name, size, () => w.commit(name, size)), abort: () => w.abort() };
      };
    }
    if (inner.streamRange) {
      const stream = inner.streamRange.bind(inner);
      this.streamRange = (name, offset, length, onPiece) =>
        this.timed('getRange', name, length, () => stream(name, offset, length, onPiece), { offset, streamed: true });
    }
  }

  /** Logged as a getRange. */
  readonly streamRange?: Storage['streamRange'];

  /** Logs a writer's commit as a put of the whole object. */
  readonly openWriter?: () => ObjectWriter;

  put(name: string, data: Buffer): Promise<void> {
    return this.timed('put', name, data.length, () => this.inner.put(name, data));
  }

  putStream(name: string, open: () => Readable, size: number): Promise<void> {
    return this.timed('putStream', name, size, () => this.inner.putStream(name, open, size));
  }

  get(name: string): Promise<Buffer> {
    return this.timed('get', name, (data) => data.length, () => this.inner.get(name));
  }

  getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.timed('getRange', name, length, () => this.inner.getRange(name, offset, length, into), { offset });
  }

  stat(name: string): Promise<ObjectInfo | null> {
    return this.timed('stat', name, (info) => info?.size, () => this.inner.stat(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const start = performance.now();
    let count = 0;
    let bytes = 0;
    try {
      for await (const info of this.inner.list(prefix)) {
        count++;
        bytes += info.size;
        yield info;
      }
      this.log.debug({ op: 'list', name: prefix, count, bytes, ms: ms(start) }, 'storage list');
    } catch (err) {
      this.failed('list', prefix, start, err, { count });
      throw err;
    }
  }

  delete(name: string): Promise<void> {
    return this.timed('delete', name, undefined, () => this.inner.delete(name));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async timed<T>(
    op: StorageOp,
    name: string,
    bytes: number | undefined | ((result: T) => number | undefined),
    call: () => Promise<T>,
    extra: Record<string, unknown> = {},
  ): Promise<T> {
    const start = performance.now();
    try {
      const result = await call();
      const size = typeof bytes === 'function' ? bytes(result) : bytes;
      this.log.debug({ op, name, ...extra, ...(size === undefined ? {} : { bytes: size }), ms: ms(start) }, `storage ${op}`);
      return result;
    } catch (err) {
      this.failed(op, name, start, err, extra);
      throw err;
    }
  }

  private failed(op: StorageOp, name: string, start: number, err: unknown, extra: Record<string, unknown>): void {
    const kind = err instanceof StorageError ? err.kind : 'bug';
    const message = err instanceof Error ? err.message : String(err);
    this.log.debug({ op, name, ...extra, ms: ms(start), kind, err: message }, `storage ${op} failed`);
  }
}

function ms(start: number): number {
  return Math.round((performance.now() - start) * 10) / 10;
}
