/**
 * A LevelDB WriteBatch (db/write_batch.cc), as the payload of one log record: `seq` (fixed64 LE),
 * `count` (fixed32 LE), then `count` entries. It covers the sequence numbers `seq … seq+count-1`.
 */
export const WRITE_BATCH_HEADER = 12;

export interface BatchHeader {
  seq: number;
  count: number;
}

export class WriteBatchError extends Error {
  constructor(message: string) {
    super(`bad write batch: ${message}`);
    this.name = 'WriteBatchError';
  }
}

/** The batch's first sequence number and entry count. Sequence numbers above 2^53 are refused (never exact in JS). */
export function batchHeader(payload: Buffer): BatchHeader {
  if (payload.length < WRITE_BATCH_HEADER) throw new WriteBatchError(`${payload.length} bytes, shorter than its header`);
  const seq = payload.readBigUInt64LE(0);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER)) throw new WriteBatchError(`sequence number ${seq} is beyond 2^53`);
  const count = payload.readUInt32LE(8);
  if (count === 0) throw new WriteBatchError('no entries');
  return { seq: Number(seq), count };
}

/** The last sequence number a batch covers. */
export function batchLast(b: BatchHeader): number {
  return b.seq + b.count - 1;
}

export type BatchEntry = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

/** The entries of a batch, in order (tag 1 put: key, value; tag 0 delete: key; each a varint-prefixed string). */
export function batchEntries(payload: Buffer): BatchEntry[] {
  const { count } = batchHeader(payload);
  const entries: BatchEntry[] = [];
  let at = WRITE_BATCH_HEADER;
  const varint = (): number => {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 5; i++) {
      if (at >= payload.length) throw new WriteBatchError('truncated varint');
      const byte = payload[at++]!;
      result += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) return result;
      scale *= 128;
    }
    throw new WriteBatchError('varint too long');
  };
  const slice = (): Buffer => {
    const len = varint();
    if (at + len > payload.length) throw new WriteBatchError('truncated entry');
    const s = payload.subarray(at, at + len);
    at += len;
    return s;
  };
  while (at < payload.length) {
    const tag = payload[at++];
    if (tag === 1) entries.push({ type: 'put', key: slice(), value: slice() });
    else if (tag === 0) entries.push({ type: 'del', key: slice() });
    else throw new WriteBatchError(`unknown entry tag ${String(tag)}`);
  }
  if (entries.length !== count) throw new WriteBatchError(`${entries.length} entries, the header says ${count}`);
  return entries;
}

/**
 * A batch's bytes, the inverse of batchHeader and batchEntries: what LevelDB's log holds for
 * `db.batch(entries)` given `seq` (WriteBatch::Put and ::Delete: a tag, then each string as a varint32
 * length and its bytes). The archive only reads batches; this makes them where a whole archive is
 * synthesized (the `backup changes` benchmark) rather than written through a database.
 */
export function encodeBatch(seq: number, entries: readonly BatchEntry[]): Buffer {
  if (entries.length === 0) throw new WriteBatchError('no entries');
  if (!Number.isSafeInteger(seq) || seq < 0) throw new WriteBatchError(`sequence number ${seq} is not a safe non-negative integer`);
  let length = WRITE_BATCH_HEADER;
  for (const e of entries) length += 1 + varintLength(e.key.length) + e.key.length + (e.type === 'put' ? varintLength(e.value.length) + e.value.length : 0);
  const out = Buffer.allocUnsafe(length);
  out.writeBigUInt64LE(BigInt(seq), 0);
  out.writeUInt32LE(entries.length, 8);
  let at = WRITE_BATCH_HEADER;
  const slice = (b: Buffer) => {
    let n = b.length;
    while (n >= 0x80) {
      out[at++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    out[at++] = n;
    at += b.copy(out, at);
  };
  for (const e of entries) {
    out[at++] = e.type === 'put' ? 1 : 0;
    slice(e.key);
    if (e.type === 'put') slice(e.value);
  }
  return out;
}

function varintLength(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    bytes++;
  }
  return bytes;
}
