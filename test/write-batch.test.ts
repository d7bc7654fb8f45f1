/**
 * encodeBatch against LevelDB itself: batches written through classic-level are read back from the
 * database's log with the project's reader, and each payload must be, byte for byte, what encodeBatch
 * makes of the same entries at the same sequence number.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { batchEntries, batchHeader, encodeBatch, WriteBatchError, type BatchEntry } from '../dist/agent/log-archive/write-batch.js';
import { parseLog } from '../dist/agent/leveldb/log-reader.js';
import { tempDir } from './support/processes.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

type Op = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

/** Lengths on each side of every varint width that matters here (1, 2 and 3 bytes), and empty. */
const BATCHES: Op[][] = [
  [{ type: 'put', key: Buffer.from('a'), value: Buffer.from('1') }],
  [
    { type: 'put', key: Buffer.from('k'.repeat(127)), value: Buffer.alloc(0) },
    { type: 'del', key: Buffer.from('gone') },
    { type: 'put', key: Buffer.from([0, 0xff, 0x80, 0x7f]), value: Buffer.alloc(128, 7) },
  ],
  [
    { type: 'put', key: Buffer.from('wide'), value: Buffer.alloc(16_383, 1) },
    { type: 'put', key: Buffer.from('wider'), value: Buffer.alloc(16_384, 2) },
    { type: 'put', key: Buffer.alloc(128, 0x41), value: Buffer.alloc(300_000, 3) },
  ],
  [{ type: 'del', key: Buffer.from('only a delete') }],
];

describe('encodeBatch', () => {
  it("makes exactly the payloads LevelDB logs for the same entries", async () => {
    const dir = tempDir('write-batch');
    dirs.push(dir);
    const db = new ClassicLevel<Buffer, Buffer>(path.join(dir, 'db'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    try {
      for (const ops of BATCHES) await db.batch(ops);
      // LevelDB flushes each log record to the file before the write returns.
      const logs = fs.readdirSync(path.join(dir, 'db')).filter((f) => f.endsWith('.log')).sort();
      const payloads = logs.flatMap((f) => parseLog(fs.readFileSync(path.join(dir, 'db', f))).records.map((r) => r.payload));
      expect(payloads).toHaveLength(BATCHES.length);
      let seq = batchHeader(payloads[0]!).seq;
      for (const [i, ops] of BATCHES.entries()) {
        const mine = encodeBatch(seq, ops as BatchEntry[]);
        expect(mine.equals(payloads[i]!)).toBe(true);
        expect(batchEntries(mine)).toEqual(batchEntries(payloads[i]!));
        seq += ops.length;
      }
      // Negative controls: the comparison sees the order of entries and the sequence number.
      const two = BATCHES[1]! as BatchEntry[];
      const first = batchHeader(payloads[1]!).seq;
      expect(encodeBatch(first, [two[1]!, two[0]!, two[2]!]).equals(payloads[1]!)).toBe(false);
      expect(encodeBatch(first + 1, two).equals(payloads[1]!)).toBe(false);
    } finally {
      await db.close();
    }
  });

  it('refuses what no batch can be', () => {
    expect(() => encodeBatch(1, [])).toThrow(WriteBatchError);
    expect(() => encodeBatch(-1, [{ type: 'del', key: Buffer.from('k') }])).toThrow(WriteBatchError);
    expect(() => encodeBatch(2 ** 53, [{ type: 'del', key: Buffer.from('k') }])).toThrow(WriteBatchError);
  });
});
