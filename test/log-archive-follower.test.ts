/**
 * The log follower on real classic-level databases with a small write buffer, so that logs rotate (and
 * old ones are unlinked) while it follows them; the incremental record reader against torn tails and
 * damage; the log writer a restore uses, read back by the project's reader and by LevelDB itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { LogFollower, type ReadBatch } from '../dist/agent/log-archive/log-follower.js';
import { ArchiveWorker } from '../dist/agent/log-archive/archive-worker-client.js';
import type { ArchiveWorkerOps } from '../dist/agent/log-archive/archive-worker-ops.js';
import { WorkerClient } from '../dist/agent/worker/worker-client.js';
import { LogTail } from '../dist/agent/log-archive/log-tail.js';
import { encodeLog } from '../dist/agent/log-archive/log-writer.js';
import { batchEntries, batchLast } from '../dist/agent/log-archive/write-batch.js';
import { dbSequence } from '../dist/agent/log-archive/db-sequence.js';
import { appendBatches } from '../dist/agent/log-archive/restore-to-moment.js';
import { LogCorruptionError, parseLog } from '../dist/agent/leveldb/log-reader.js';
import { tempDir } from './support/processes.js';

const dirs: string[] = [];
/** The thread where the followers' records are assembled and checked, as in the archiver. */
const worker = new ArchiveWorker();
afterAll(async () => {
  await worker.close();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function newDir(name: string): string {
  const d = tempDir(name);
  dirs.push(d);
  return d;
}

/** The database state the batches describe, applied in order. */
function replay(batches: readonly { payload: Buffer }[], into = new Map<string, string>()): Map<string, string> {
  for (const b of batches) {
    for (const e of batchEntries(b.payload)) {
      if (e.type === 'put') into.set(e.key.toString('utf8'), e.value.toString('utf8'));
      else into.delete(e.key.toString('utf8'));
    }
  }
  return into;
}

async function contents(db: ClassicLevel<string, string>): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for await (const [k, v] of db.iterator()) m.set(k, v);
  return m;
}

function logNumbers(dir: string): number[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith('.log')).map((n) => Number(n.slice(0, -4)));
}

describe('LogFollower', () => {
  it('reads every batch of a database whose logs rotate and are unlinked while it follows them', async () => {
    const dir = newDir('follow');
    const db = new ClassicLevel<string, string>(dir, { writeBufferSize: 64 * 1024 });
    await db.open();
    const follower = new LogFollower(dir, worker);
    await follower.open();
    const read: ReadBatch[] = [];
    const seenLogs = new Set<number>();
    let unlinkedWhileFollowed = 0;
    const keys = 300;
    let ops = 0;
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 25; i++) {
        const k = `k${(round * 7 + i * 13) % keys}`;
        const r = (round + i) % 5;
        // Values up to 40 KiB: records that span blocks (FIRST/MIDDLE/LAST) as well as small FULL ones.
        const size = r === 0 ? 40_000 : 40 + 2 * ((round * 31 + i) % 300);
        if (r === 1) await db.del(k);
        else if (r === 2) await db.batch([{ type: 'put', key: `${k}a`, value: randomBytes(size / 2).toString('hex') }, { type: 'del', key: k }, { type: 'put', key: `${k}b`, value: 'x' }]);
        else await db.put(k, randomBytes(size / 2).toString('hex'));
        ops++;
      }
      const before = new Set(logNumbers(dir));
      for (const n of before) seenLogs.add(n);
      const pass = await follower.pass();
      expect(pass.problem).toBeNull();
      read.push(...pass.batches);
      for (const n of seenLogs) if (!fs.existsSync(path.join(dir, `${String(n).padStart(6, '0')}.log`))) unlinkedWhileFollowed++;
    }
    const last = await follower.pass();
    read.push(...last.batches);
    await follower.close();
    // The case the follower exists for happened: logs switched and were unlinked while it had them open.
    expect(seenLogs.size).toBeGreaterThan(3);
    expect(unlinkedWhileFollowed).toBeGreaterThan(0);
    // Every batch, once, in order, without a gap.
    expect(read.length).toBe(ops);
    expect(read[0]!.seq).toBe(1);
    for (let i = 1; i < read.length; i++) expect(read[i]!.seq).toBe(batchLast(read[i - 1]!) + 1);
    // ...and they are the database.
    expect(replay(read)).toEqual(await contents(db));
    await db.close();
    expect((await dbSequence(dir)).sequence).toBe(batchLast(read.at(-1)!));
  });

  it('reports a damaged log instead of skipping past it', async () => {
    const dir = newDir('follow-damaged');
    const db = new ClassicLevel<string, string>(dir);
    await db.open();
    for (let i = 0; i < 20; i++) await db.put(`k${i}`, 'v'.repeat(100));
    await db.close();
    const log = logNumbers(dir).sort((a, b) => b - a)[0]!;
    const file = path.join(dir, `${String(log).padStart(6, '0')}.log`);
    const bytes = fs.readFileSync(file);
    expect(parseLog(bytes).records.length).toBe(20);
    bytes.writeUInt8(bytes[bytes.length - 300]! ^ 0x40, bytes.length - 300); // inside a record's payload, well before the end
    fs.writeFileSync(file, bytes);
    const follower = new LogFollower(dir, worker);
    await follower.open();
    const pass = await follower.pass();
    await follower.close();
    expect(pass.problem).toMatch(/checksum mismatch/);
    expect(pass.batches.length).toBeLessThan(20);
  });
});

describe('LogFollower in the archive worker', () => {
  it('assembles and checks records in the worker thread, never on this one', async () => {
    const dir = newDir('follow-thread');
    const db = new ClassicLevel<string, string>(dir);
    await db.open();
    for (let i = 0; i < 50; i++) await db.put(`k${i}`, 'v'.repeat(2000));
    // Every LogTail.push made on this thread is counted (the worker has its own copy of the module).
    let here = 0;
    const push = LogTail.prototype.push;
    LogTail.prototype.push = function (this: LogTail, bytes: Buffer) {
      here++;
      return push.call(this, bytes);
    };
    try {
      const follower = new LogFollower(dir, worker);
      await follower.open();
      const pass = await follower.pass();
      await follower.close();
      expect(pass.problem).toBeNull();
      expect(pass.batches.length).toBe(50);
      expect(here).toBe(0);
      // Control: the counter sees a push made on this thread.
      new LogTail().push(Buffer.alloc(0));
      expect(here).toBe(1);
    } finally {
      LogTail.prototype.push = push;
      await db.close();
    }
  });

  it('declares a break, never a splice, when the worker lost its place (restarted mid-log)', async () => {
    const dir = newDir('follow-restarted');
    const db = new ClassicLevel<string, string>(dir);
    await db.open();
    // A thread lent to the worker (as an agent lends its first crypto thread), so that the test can restart it.
    const thread = new WorkerClient<ArchiveWorkerOps>(new URL('../dist/agent/log-archive/archive-worker.js', import.meta.url), 'restarted');
    const own = new ArchiveWorker(thread);
    const follower = new LogFollower(dir, own);
    await follower.open();
    for (let i = 0; i < 10; i++) await db.put(`a${i}`, 'x'.repeat(100));
    const first = await follower.pass();
    expect(first.problem).toBeNull();
    expect(first.batches.length).toBe(10);
    await thread.cancel(); // the next call starts a fresh thread, which knows nothing of the log
    for (let i = 0; i < 10; i++) await db.put(`b${i}`, 'y'.repeat(100));
    const second = await follower.pass();
    expect(second.problem).toMatch(/lost its place/);
    expect(second.problemKind).toBe('damaged');
    expect(second.batches).toEqual([]);
    await follower.close();
    await own.close();
    await thread.close();
    await db.close();
  });
});

describe('LogTail', () => {
  it('gives the same records as the whole-file reader, whatever the pieces the file arrives in', () => {
    const payloads = [10, 32_760, 32_761, 70_000, 1, 0, 5000, 32_768 - 14, 200].map((n) => randomBytes(n));
    const bytes = encodeLog(payloads);
    expect(parseLog(bytes).records.map((r) => r.payload)).toEqual(payloads);
    for (const piece of [100, 4096, 32_768, 50_000]) {
      const tail = new LogTail();
      const got: Buffer[] = [];
      for (let at = 0; at < bytes.length; at += piece) got.push(...tail.push(bytes.subarray(at, at + piece)));
      expect(got).toEqual(payloads);
      expect(tail.incompleteBytes).toBe(0);
    }
  });

  it('takes a log a byte at a time', () => {
    const payloads = [40, 32_768 - 14, 3, 40_000].map((n) => randomBytes(n));
    const bytes = encodeLog(payloads);
    const tail = new LogTail();
    const got: Buffer[] = [];
    for (let at = 0; at < bytes.length; at++) got.push(...tail.push(bytes.subarray(at, at + 1)));
    expect(got).toEqual(payloads);
  });

  it('holds a torn tail back until it is complete', () => {
    const payloads = [randomBytes(100), randomBytes(50_000)];
    const bytes = encodeLog(payloads);
    const tail = new LogTail();
    expect(tail.push(bytes.subarray(0, bytes.length - 1))).toEqual([payloads[0]]);
    expect(tail.incompleteBytes).toBeGreaterThan(0);
    expect(tail.push(bytes.subarray(bytes.length - 1))).toEqual([payloads[1]]);
  });

  it('throws on damage before the end', () => {
    const bytes = encodeLog([randomBytes(100), randomBytes(100)]);
    bytes.writeUInt8(bytes[50]! ^ 1, 50);
    expect(() => new LogTail().push(bytes)).toThrow(LogCorruptionError);
  });
});

describe('appendBatches', () => {
  it('writes a log LevelDB replays after the database\'s own, with the sequence numbers it holds', async () => {
    // A source database, followed from its start: its batches are what an archive holds.
    const src = newDir('append-src');
    const db = new ClassicLevel<string, string>(src, { writeBufferSize: 32 * 1024 });
    await db.open();
    const follower = new LogFollower(src, worker);
    await follower.open();
    for (let i = 0; i < 200; i++) {
      if (i % 3 === 0) await db.batch([{ type: 'put', key: `a${i % 50}`, value: `v${i}`.repeat(50) }, { type: 'del', key: `a${(i + 7) % 50}` }]);
      else await db.put(`a${i % 50}`, `w${i}`.repeat(40));
    }
    const all = (await follower.pass()).batches;
    await follower.close();
    const expected = await contents(db);
    await db.close();
    expect(all.length).toBe(200);

    // A copy of the database as it was after batch 120: a fresh database given batches 1..120.
    const base = newDir('append-base');
    fs.rmSync(base, { recursive: true });
    const first = new ClassicLevel<string, string>(base, { writeBufferSize: 32 * 1024 });
    await first.open();
    await first.close();
    expect(await appendBatches(base, all.slice(0, 120))).toBe(batchLast(all[119]!));
    const mid = new ClassicLevel<string, string>(base);
    await mid.open();
    await mid.close();
    expect((await dbSequence(base)).sequence).toBe(batchLast(all[119]!));
    // The rest on top: exactly the source database.
    expect(await appendBatches(base, all.slice(120))).toBe(batchLast(all[199]!));
    const done = new ClassicLevel<string, string>(base, { createIfMissing: false });
    await done.open();
    expect(await contents(done)).toEqual(expected);
    await done.close();
    // A batch that does not follow the database's last sequence is refused, not written.
    await expect(appendBatches(base, all.slice(150, 160))).rejects.toThrow(/does not follow/);
  });
});
