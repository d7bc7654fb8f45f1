import type { Readable } from 'node:stream';
import { SourceStreamError, StreamSizeMismatch, sizedStream } from './sized-stream.js';
import {
  StorageError,
  checkName,
  checkPrefix,
  checkRangeArgs,
  checkSize,
  MAX_GET_BYTES,
  objectTooLarge,
  rangeError,
  streamSizeError,
  streamSourceError,
  writerClosedError,
  writerSizeError,
  type ObjectInfo,
  type ObjectWriter,
  type Storage,
} from './storage.js';

/**
 * Objects in a Map: the test double for everything above the storage layer. Keeps the whole contract
 * (names, ranges, errors, sorted listing); copies buffers in and out so callers cannot alias its contents.
 */
export class MemoryStorage implements Storage {
  readonly description: string;
  private readonly objects = new Map<string, Buffer>();

  constructor(description = 'memory:') {
    this.description = description;
  }

  async put(name: string, data: Buffer): Promise<void> {
    checkName(this.description, 'put', name);
    await Promise.resolve();
    this.objects.set(name, Buffer.from(data));
  }

  async putStream(name: string, open: () => Readable, size: number): Promise<void> {
    checkName(this.description, 'putStream', name);
    checkSize(this.description, name, size);
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of sizedStream(open(), size)) chunks.push(chunk as Buffer);
    } catch (err) {
      if (err instanceof StreamSizeMismatch) throw streamSizeError(this.description, name, err.expected, err.got);
      throw streamSourceError(this.description, name, err instanceof SourceStreamError ? err.cause : err);
    }
    this.objects.set(name, Buffer.concat(chunks));
  }

  openWriter(): ObjectWriter {
    const pieces: [number, Buffer][] = [];
    let state: 'open' | 'done' = 'open';
    const closed = (op: 'write' | 'commit') => writerClosedError(this.description, op);
    return {
      write: async (data, position) => {
        if (state !== 'open') throw closed('write');
        if (!Number.isSafeInteger(position) || position < 0) throw new StorageError('permanent', this.description, `bad position ${position}`, { op: 'put' });
        pieces.push([position, Buffer.from(data)]);
        await Promise.resolve();
      },
      commit: async (name, size) => {
        checkName(this.description, 'put', name);
        if (state !== 'open') throw closed('commit');
        state = 'done';
        const end = pieces.reduce((e, [at, d]) => Math.max(e, at + d.length), 0);
        if (end !== size) throw writerSizeError(this.description, name, size, end);
        const whole = Buffer.alloc(size);
        for (const [at, d] of pieces) d.copy(whole, at);
        pieces.length = 0;
        await Promise.resolve();
        this.objects.set(name, whole);
      },
      abort: async () => {
        state = 'done';
        pieces.length = 0;
        await Promise.resolve();
      },
    };
  }

  async get(name: string): Promise<Buffer> {
    checkName(this.description, 'get', name);
    await Promise.resolve();
    const data = this.object('get', name);
    if (data.length > MAX_GET_BYTES) throw objectTooLarge(this.description, name, data.length, MAX_GET_BYTES);
    return Buffer.from(data);
  }

  async getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkName(this.description, 'getRange', name);
    checkRangeArgs(this.description, name, offset, length, into);
    await Promise.resolve();
    const data = this.object('getRange', name);
    if (offset + length > data.length) throw rangeError(this.description, name, offset, length, data.length);
    if (into) {
      data.copy(into, 0, offset, offset + length);
      return into.subarray(0, length);
    }
    return Buffer.from(data.subarray(offset, offset + length));
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    checkName(this.description, 'stat', name);
    await Promise.resolve();
    const data = this.objects.get(name);
    return data ? { name, size: data.length } : null;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(this.description, prefix);
    const names = [...this.objects.keys()].filter((n) => n.startsWith(prefix)).sort();
    for (const name of names) {
      await Promise.resolve();
      const data = this.objects.get(name);
      if (data) yield { name, size: data.length };
    }
  }

  async delete(name: string): Promise<void> {
    checkName(this.description, 'delete', name);
    await Promise.resolve();
    this.objects.delete(name);
  }

  async close(): Promise<void> {}

  private object(op: 'get' | 'getRange', name: string): Buffer {
    const data = this.objects.get(name);
    if (!data) throw new StorageError('not-found', this.description, 'no such object', { op, name });
    return data;
  }
}
