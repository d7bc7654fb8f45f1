import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { BLOCK_SIZE, LogCorruptionError, parseLog } from '../dist/agent/leveldb/log-reader.js';
import { crc32c, maskCrc } from '../dist/agent/leveldb/crc32c.js';
import { replayManifest } from '../dist/agent/leveldb/db-state.js';
import { tempDir } from './support/processes.js';

/** Writes records the way LevelDB's log::Writer does (db/log_writer.cc), to test the reader against. */
function writeLog(payloads: Buffer[]): Buffer {
  const out: Buffer[] = [];
  let blockOffset = 0;
  for (const payload of payloads) {
    let left = payload;
    let begin = true;
    do {
      const leftover = BLOCK_SIZE - blockOffset;
      if (leftover < 7) {
        out.push(Buffer.alloc(leftover));
        blockOffset = 0;
      }
      const avail = BLOCK_SIZE - blockOffset - 7;
      const len = Math.min(left.length, avail);
      const end = len === left.length;
      const type = begin && end ? 1 : begin ? 2 : end ? 4 : 3;
      const header = Buffer.alloc(7);
      const data = left.subarray(0, len);
      header.writeUInt32LE(maskCrc(crc32c(Buffer.concat([Buffer.from([type]), data]))), 0);
      header.writeUInt16LE(len, 4);
      header[6] = type;
      out.push(header, data);
      blockOffset += 7 + len;
      left = left.subarray(len);
      begin = false;
    } while (left.length > 0);
  }
  return Buffer.concat(out);
}

describe('LevelDB log reader', () => {
  it('computes CRC-32C like LevelDB (known vectors)', () => {
    // From LevelDB's util/crc32c_test.cc.
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)))).toBe(0x113fdb5c);
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283); // the check value of CRC-32C
  });

  it('computes CRC-32C eight bytes at a time exactly as one byte at a time, over any range and any start', () => {
    // The plain byte-at-a-time definition (LevelDB's util/crc32c.cc without its fast paths), as the model.
    const table = Array.from({ length: 256 }, (_, i) => {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      return c >>> 0;
    });
    const model = (data: Uint8Array, start: number, end: number, init: number) => {
      let crc = ~init >>> 0;
      for (let i = start; i < end; i++) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
      return ~crc >>> 0;
    };
    const data = randomBytes(4096);
    let checked = 0;
    for (let start = 0; start < 24; start++) {
      for (const length of [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4000 - start]) {
        for (const init of [0, 0xffffffff, 0x12345678]) {
          expect(crc32c(data, start, start + length, init)).toBe(model(data, start, start + length, init));
          checked++;
        }
      }
    }
    // Continuing from a CRC is the same as one CRC over both parts (LevelDB's Extend).
    expect(crc32c(data, 100, 3000, crc32c(data, 0, 100))).toBe(crc32c(data, 0, 3000));
    // The negative control: one bit flipped anywhere in the range changes the CRC.
    const flipped = Buffer.from(data);
    flipped[1234]! ^= 0x10;
    expect(crc32c(flipped, 0, 4096)).not.toBe(crc32c(data, 0, 4096));
    expect(checked).toBe(24 * 13 * 3);
  });

  it('reads back records of every size, across block boundaries', () => {
    const sizes = [0, 1, 100, BLOCK_SIZE - 14, BLOCK_SIZE - 7, BLOCK_SIZE, 3 * BLOCK_SIZE + 5, 17];
    const payloads = sizes.map((n) => randomBytes(n));
    const log = writeLog(payloads);
    const parsed = parseLog(log);
    expect(parsed.records.map((r) => r.payload)).toEqual(payloads);
    expect(parsed.completeEnd).toBe(log.length);
  });

  it('treats any cut at the end as a clean end, keeping exactly the whole records before it', () => {
    const payloads = Array.from({ length: 40 }, (_, i) => randomBytes(200 + i * 997));
    const log = writeLog(payloads);
    const ends = parseLog(log).records.map((r) => r.end);
    for (let cut = 0; cut <= log.length; cut += 613) {
      const parsed = parseLog(log.subarray(0, cut));
      const whole = ends.filter((e) => e <= cut).length;
      expect(parsed.records).toHaveLength(whole);
      expect(parsed.completeEnd).toBe(whole === 0 ? 0 : ends[whole - 1]);
    }
  });

  it('reports a flipped byte in the middle as corruption', () => {
    const log = writeLog([randomBytes(500), randomBytes(500), randomBytes(500)]);
    const damaged = Buffer.from(log);
    damaged[600] = damaged[600]! ^ 0x01;
    expect(() => parseLog(damaged)).toThrow(LogCorruptionError);
  });
});

interface StableView {
  state: ReturnType<typeof replayManifest>;
  /** LevelDB's own list of live tables (leveldb.sstables). */
  report: string;
  /** Which of the state's tables exist as files. */
  onDisk: Set<number>;
}

const reportedTables = (report: string): number[] => [...report.matchAll(/^\s*(\d+):(\d+)\[/gm)].map((m) => Number(m[1]));
const sameSet = (a: Iterable<number>, b: Iterable<number>): boolean => {
  const x = new Set(a);
  const y = new Set(b);
  return x.size === y.size && [...x].every((n) => y.has(n));
};

/**
 * A replay of the MANIFEST and LevelDB's report of its live tables, taken while no edit landed (CURRENT
 * and the MANIFEST the same, and whole, before and after; the report the same twice) and once LevelDB
 * has installed the MANIFEST's last edit: it appends an edit, fsyncs, and only then installs the new
 * version, so for an fsync's time the report is exactly one edit behind. Only in that case is it looked
 * at again (polled, with a deadline); any other difference is returned, for the test to fail on. The
 * state's tables are checked for on disk inside the same window: LevelDB deletes a table only after an
 * edit that drops it is in the MANIFEST.
 */
async function stableView(db: ClassicLevel<string, Buffer>, dbPath: string): Promise<StableView & { lagged: number }> {
  const deadline = Date.now() + 60_000;
  let lagged = 0;
  for (;;) {
    const current = fs.readFileSync(path.join(dbPath, 'CURRENT'), 'utf8').trim();
    const manifest = fs.readFileSync(path.join(dbPath, current));
    const report = db.getProperty('leveldb.sstables');
    const state = replayManifest(manifest);
    const onDisk = new Set([...state.tables.keys()].filter((n) => fs.existsSync(path.join(dbPath, `${String(n).padStart(6, '0')}.ldb`))));
    const stable =
      db.getProperty('leveldb.sstables') === report &&
      fs.readFileSync(path.join(dbPath, 'CURRENT'), 'utf8').trim() === current &&
      fs.statSync(path.join(dbPath, current)).size === manifest.length &&
      state.manifestBytes === manifest.length;
    if (stable) {
      const records = parseLog(manifest).records;
      const oneEditBehind = records.length >= 2 ? replayManifest(manifest.subarray(0, records.at(-2)!.end)) : null;
      const tables = reportedTables(report);
      const lagging = oneEditBehind !== null && !sameSet(tables, state.tables.keys()) && sameSet(tables, oneEditBehind.tables.keys());
      if (!lagging) return { state, report, onDisk, lagged };
      lagged++;
    }
    if (Date.now() > deadline) throw new Error('the MANIFEST and LevelDB\'s report never stood still together for one look in 60 s');
    await new Promise((r) => setImmediate(r)); // let LevelDB go on
  }
}

describe('MANIFEST replay against a live database', () => {
  const dir = tempDir('manifest');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('finds exactly the tables LevelDB reports as live, through flushes and compactions', async () => {
    const dbPath = path.join(dir, 'db');
    const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 64 * 1024, maxFileSize: 64 * 1024 });
    await db.open();
    const value = randomBytes(700);
    const everLive = new Set<number>();
    let live = new Set<number>();
    let lagged = 0;
    for (let round = 0; round < 8; round++) {
      for (let b = 0; b < 10; b++) {
        await db.batch(Array.from({ length: 100 }, (_, i) => ({ type: 'put' as const, key: `k${(round * 7 + b * 131 + i * 17) % 5000}`, value })));
      }
      if (round % 3 === 2) await db.compactRange('k0', 'k~');
      // Compactions may still run: compare at a moment no MANIFEST edit lands in (see stableView).
      const view = await stableView(db, dbPath);
      lagged += view.lagged;
      const reported = reportedTables(view.report);
      expect([...view.state.tables.keys()].sort((a, b) => a - b)).toEqual(reported.sort((a, b) => a - b));
      expect(view.state.nextFileNumber).toBeGreaterThan(Math.max(0, ...reported));
      for (const n of view.state.tables.keys()) expect(view.onDisk.has(n), `table ${n} on disk`).toBe(true);
      live = new Set(view.state.tables.keys());
      live.forEach((n) => everLive.add(n));
    }
    // Compactions really happened in between: tables live at one look were gone at a later one.
    const compactedAway = [...everLive].filter((n) => !live.has(n)).length;
    console.log(`MANIFEST replay: ${everLive.size} tables seen live, ${compactedAway} compacted away; ${lagged} looks found LevelDB one edit behind its MANIFEST`);
    expect(compactedAway).toBeGreaterThan(0);
    await db.close();
  });
});

describe('checksum verification of a database directory', () => {
  const dir = tempDir('tablecheck');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('passes a healthy database and names the file with one flipped byte, through the CLI too', async () => {
    const { checkDbFilesSync } = await import('../dist/agent/leveldb/check-db-files.js');
    const { createOfflineCheckpoint } = await import('../dist/agent/index.js');
    const { runCli } = await import('./support/processes.js');
    const dbPath = path.join(dir, 'db');
    const db = new ClassicLevel<string, string>(dbPath, { writeBufferSize: 64 * 1024 });
    await db.open();
    // Compressible values and keys with long shared prefixes: snappy-compressed data and index blocks.
    for (let b = 0; b < 20; b++) {
      await db.batch(Array.from({ length: 200 }, (_, i) => ({ type: 'put' as const, key: `some/long/common/prefix/${b}/${i}`, value: `value-${i}-`.repeat(20) })));
    }
    await db.close();
    const healthy = checkDbFilesSync(dbPath);
    expect(healthy.tables).toBeGreaterThan(0);
    expect(healthy.blocks).toBeGreaterThan(healthy.tables);

    const checkpointDir = path.join(dir, 'checkpoints');
    const record = await createOfflineCheckpoint({ dbPath, checkpointDir });
    const ok = await runCli(['checkpoint', 'verify', record.id, '--checkpoint-dir', checkpointDir, '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, entries: 4000 });

    // Damage one byte in the middle of a table (the checkpoint shares it with the source by hard link).
    const table = fs.readdirSync(record.path).find((n) => n.endsWith('.ldb'))!;
    const file = path.join(record.path, table);
    const bytes = fs.readFileSync(file);
    const at = Math.floor(bytes.length / 3);
    bytes[at] = bytes[at]! ^ 0x20;
    fs.writeFileSync(file, bytes);
    expect(() => checkDbFilesSync(record.path)).toThrow(new RegExp(`${table}: checksum mismatch`));
    const bad = await runCli(['checkpoint', 'verify', record.id, '--checkpoint-dir', checkpointDir]);
    expect(bad.code).toBe(7);
    expect(bad.stderr).toContain(table);
  });
});
