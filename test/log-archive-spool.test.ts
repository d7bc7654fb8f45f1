import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  decodeSegment,
  encodeSegment,
  sha256Here,
  wholePasses,
  type SegmentBatch,
  type SegmentInfo,
  type Sha256,
} from '../dist/agent/log-archive/segment.js';
import { SegmentSpool } from '../dist/agent/log-archive/segment-spool.js';
import { ArchiveWorker } from '../dist/agent/log-archive/archive-worker-client.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
/** Hashes in its own thread, as the agent's archiver does. */
const worker = new ArchiveWorker();
afterAll(() => worker.close());

function spoolIn(sha256: Sha256 = sha256Here): SegmentSpool {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'node-admin-spool-'));
  dirs.push(d);
  return new SegmentSpool(path.join(d, 'db.log-archive-spool'), sha256); // created by the first write
}

/** A WriteBatch as LevelDB writes it: seq (u64 LE), count (u32 LE), then one put (tag 1, varint-sized key and value). */
function putBatch(seq: number, key: string, value: string): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(seq), 0);
  head.writeUInt32LE(1, 8);
  const k = Buffer.from(key);
  const v = Buffer.from(value);
  return Buffer.concat([head, Buffer.from([1, k.length]), k, Buffer.from([v.length]), v]);
}

async function segment(timeline: string, first: number, count: number, from: number): Promise<{ info: SegmentInfo; data: Buffer }> {
  const batches = Array.from({ length: count }, (_, i) => ({ seq: first + i, count: 1, payload: putBatch(first + i, `k${first + i}`, 'v'), readAt: from + i }));
  const info: SegmentInfo = { timeline, first, last: first + count - 1, from, to: from + 1000 };
  return { info, data: await encodeSegment(info, batches) };
}

describe('segments hashed in the archive worker', () => {
  it('are the same bytes as hashed here, and damage is caught the same way', async () => {
    for (const [first, count] of [[1, 1], [10, 300], [5000, 40]] as const) {
      const batches = Array.from({ length: count }, (_, i) => ({ seq: first + i, count: 1, payload: putBatch(first + i, `k${i}`, 'v'.repeat(i % 200)), readAt: 1000 + i }));
      const info: SegmentInfo = { timeline: '20261124t010000000z-aaaa', first, last: first + count - 1, from: 999, to: 1000 + count };
      const here = await encodeSegment(info, batches);
      const there = await encodeSegment(info, batches, worker.sha256);
      expect(there.equals(here)).toBe(true);
      expect((await decodeSegment('s', info, there, worker.sha256)).map((b) => b.seq)).toEqual((await decodeSegment('s', info, here)).map((b) => b.seq));
      for (const at of [0, 20, Math.floor(there.length / 2), there.length - 1]) {
        const bad = Buffer.from(there);
        bad[at]! ^= 0x01;
        await expect(decodeSegment('s', info, bad, worker.sha256)).rejects.toMatchObject({ code: 'CORRUPT' });
      }
    }
  });
});

describe('the log archive spool on disk (SegmentSpool)', () => {
  it('lists what was written oldest first per timeline, reads it back byte for byte, removes it', async () => {
    const spool = spoolIn();
    expect(await spool.list()).toEqual([]); // no directory yet
    const written = [await segment('20261124t010000000z-aaaa', 100, 3, 5000), await segment('20261124t010000000z-aaaa', 9, 2, 1000), await segment('20261124t000000000z-bbbb', 1, 1, 9000)];
    for (const s of written) await spool.write(s.info, s.data);
    const listed = await spool.list();
    expect(listed.map((e) => e.info)).toEqual([written[2]!.info, written[1]!.info, written[0]!.info]);
    for (const e of listed) {
      const original = written.find((w) => w.info.first === e.info!.first)!;
      expect((await spool.read({ info: e.info!, file: e.file })).equals(original.data)).toBe(true);
    }
    await spool.remove(listed[0]!);
    expect((await spool.list()).length).toBe(2);
    expect(fs.readdirSync(spool.dir).filter((n) => !n.endsWith('.seg'))).toEqual([]); // no temp file left
  });

  it.each([
    ['this thread', sha256Here],
    ['the archive worker', worker.sha256],
  ])('a damaged file is CORRUPT on read (hashed in %s); a file not named as a segment lists with info null', async (_where, sha256) => {
    const spool = spoolIn(sha256);
    const s = await segment('20261124t010000000z-aaaa', 5, 4, 1000);
    const spooled = await spool.write(s.info, s.data);
    await expect(spool.read(spooled)).resolves.toBeInstanceOf(Buffer); // positive control
    const bytes = fs.readFileSync(spooled.file);
    bytes[bytes.length - 40]! ^= 0xff;
    fs.writeFileSync(spooled.file, bytes);
    await expect(spool.read(spooled)).rejects.toMatchObject({ code: 'CORRUPT' });
    // Bytes of another segment under this one's name: also refused.
    const other = await segment('20261124t010000000z-aaaa', 5, 4, 2000);
    fs.writeFileSync(spooled.file, other.data);
    await expect(spool.read(spooled)).rejects.toMatchObject({ code: 'CORRUPT' });
    fs.writeFileSync(path.join(spool.dir, 'stray.seg'), 'x');
    expect((await spool.list()).find((e) => e.file.endsWith('stray.seg'))?.info).toBeNull();
  });
});

describe('segments of whole passes (wholePasses): what a shipment or a spill puts in one segment', () => {
  /** Passes given as payload sizes per batch; a pass's batches share their readAt. */
  function passes(...sizes: number[][]): SegmentBatch[] {
    let seq = 1;
    return sizes.flatMap((pass, p) => pass.map((n) => ({ seq: seq++, count: 1, payload: Buffer.alloc(n), readAt: 1000 + p })));
  }
  /** The result as pass sizes again. */
  function shape(batches: SegmentBatch[]): number[][] {
    const out = new Map<number, number[]>();
    for (const b of batches) out.set(b.readAt, [...(out.get(b.readAt) ?? []), b.payload.length]);
    return [...out.values()];
  }
  const cases: { name: string; in: number[][]; max: number; out: number[][] }[] = [
    { name: 'nothing', in: [], max: 10, out: [] },
    { name: 'all of it, when it fits', in: [[3, 3], [4]], max: 10, out: [[3, 3], [4]] },
    { name: 'exactly the limit', in: [[5], [5], [1]], max: 10, out: [[5], [5]] },
    { name: 'never cuts a pass', in: [[4], [4, 4], [1]], max: 10, out: [[4]] },
    { name: 'a first pass over the limit, alone', in: [[8, 8], [1]], max: 10, out: [[8, 8]] },
    { name: 'a single batch over the limit', in: [[30]], max: 10, out: [[30]] },
  ];
  it.each(cases)('$name', (c) => {
    const batches = passes(...c.in);
    const got = wholePasses(batches, c.max);
    expect(shape(got)).toEqual(c.out);
    expect(got).toEqual(batches.slice(0, got.length)); // a prefix, in order
  });

  it('taken again and again, cuts the whole backlog into segments that each hold at most the limit or one pass', () => {
    const sizes = Array.from({ length: 200 }, (_, i) => Array.from({ length: 1 + (i % 4) }, (_, j) => 100 + ((i * 7 + j * 13) % 900)));
    let rest = passes(...sizes);
    const segments: SegmentBatch[][] = [];
    while (rest.length > 0) {
      const s = wholePasses(rest, 2000);
      segments.push(s);
      rest = rest.slice(s.length);
    }
    expect(segments.flat()).toEqual(passes(...sizes)); // nothing lost, nothing twice, in order
    for (const s of segments) {
      const bytes = s.reduce((n, b) => n + b.payload.length, 0);
      expect(bytes <= 2000 || shape(s).length === 1).toBe(true);
    }
    // Each segment ends at a pass's end: the next begins with a later readAt.
    for (let i = 1; i < segments.length; i++) expect(segments[i]![0]!.readAt).toBeGreaterThan(segments[i - 1]!.at(-1)!.readAt);
  });
});
