import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Compression,
  FRAME_SIZE,
  MIN_SAVING,
  compressPlaintext,
  createDecompressor,
  decompressPlaintext,
  policyForFile,
  type CompressionPolicy,
} from '../dist/agent/repository/compression.js';
import { canonicalJson, type Tree } from '../dist/agent/repository/format.js';
import { AdminError } from '../dist/shared/errors.js';
import { tempDir } from './support/processes.js';

/**
 * The repository's compression codec (agent/repository/compression.ts) on the data a repository really
 * stores: a LevelDB write-ahead log and MANIFEST and tables written here by classic-level, a snapshot's
 * tree in the repository's JSON, random bytes. Every refusal is paired with the same bytes undamaged
 * being accepted, so no check passes because everything fails.
 */

const MiB = 1024 * 1024;
const plaintextOf = (r: { pieces: Buffer[] }) => Buffer.concat(r.pieces);

/** Records as an indexer stores them: JSON with hex hashes, decimal amounts and counters. */
function record(i: number): Buffer {
  const h = (label: string) => createHash('sha256').update(`${label}-${i}`).digest('hex');
  return Buffer.from(
    JSON.stringify({ height: 18_000_000 + (i >> 6), index: i & 63, hash: `0x${h('tx')}`, from: `0x${h('from').slice(0, 40)}`, value: String(BigInt(i) * 10n ** 15n), nonce: i % 977, status: 1 }),
  );
}

function expectCorrupt(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a CORRUPT error').toBeInstanceOf(AdminError);
  expect((caught as AdminError).code).toBe('CORRUPT');
  expect((caught as AdminError).message).toMatch(message);
  expect((caught as AdminError).message).not.toContain('\n');
}

/** Streams `body` through a decompressor in pieces of `size` bytes; what it returned before end, and after. */
function streamed(mode: number, body: Buffer, size: number, maxLength: number): { beforeEnd: Buffer[]; all: Buffer } {
  const d = createDecompressor(mode, maxLength);
  const beforeEnd: Buffer[] = [];
  for (let at = 0; at < body.length; at += size) beforeEnd.push(...d.push(body.subarray(at, at + size)));
  const tail = d.end();
  return { beforeEnd, all: Buffer.concat([...beforeEnd, ...tail]) };
}

/** The frames of a brotli body: [offset of header, compressed length, raw field]. */
function frames(body: Buffer): { at: number; length: number; rawField: number }[] {
  const out = [];
  for (let at = 0; at < body.length; ) {
    const length = body.readUInt32LE(at);
    out.push({ at, length, rawField: body.readUInt32LE(at + 4) });
    at += 8 + length;
  }
  return out;
}

describe('compression of stored plaintexts', () => {
  const dir = tempDir('compression');
  let log: Buffer; // a write-ahead log of JSON records, several frames long
  let manifest: Buffer;
  let table: Buffer; // a table of random values
  let tree: Buffer;

  beforeAll(async () => {
    const dbPath = path.join(dir, 'db');
    const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
    await db.open();
    let i = 0;
    // ~2.6 MiB of records (three frames): well under the 4 MiB write buffer (which also counts the
    // memtable's own overhead), so they are all in one .log.
    for (let bytes = 0; bytes < 2.6 * MiB; ) {
      const ops = [];
      for (let j = 0; j < 100; j++, i++) {
        const value = record(i);
        bytes += value.length + 20;
        ops.push({ type: 'put' as const, key: `tx/${String(i).padStart(10, '0')}`, value });
      }
      await db.batch(ops);
    }
    const logs = fs.readdirSync(dbPath).filter((n) => n.endsWith('.log'));
    expect(logs).toHaveLength(1);
    log = fs.readFileSync(path.join(dbPath, logs[0]!));
    // Then random values past the write buffer, and a compaction: tables, and a MANIFEST with their edits.
    for (let k = 0; k < 40; k++) {
      const values = randomBytes(100 * 1024);
      await db.batch(Array.from({ length: 100 }, (_, j) => ({ type: 'put' as const, key: `r/${String(k * 100 + j).padStart(8, '0')}`, value: values.subarray(j * 1024, (j + 1) * 1024) })));
    }
    await db.compactRange('r/', 'r/~');
    // Many small flushes and compactions: each appends its version edit to the MANIFEST, as a node's
    // compactions do over its life (a MANIFEST is rewritten only when the database is opened).
    for (let k = 0; k < 40; k++) {
      await db.batch(Array.from({ length: 20 }, (_, j) => ({ type: 'put' as const, key: `m/${String(k * 20 + j).padStart(8, '0')}`, value: record(k * 20 + j) })));
      await db.compactRange('m/', 'm/~');
    }
    await db.close();
    const names = fs.readdirSync(dbPath).sort();
    manifest = fs.readFileSync(path.join(dbPath, names.find((n) => n.startsWith('MANIFEST-'))!));
    // The largest table: the compaction's output of random values.
    const tables = names.filter((n) => n.endsWith('.ldb')).map((n) => fs.readFileSync(path.join(dbPath, n)));
    table = tables.sort((a, b) => b.length - a.length)[0]!;
    const files: Tree['files'] = Array.from({ length: 300 }, (_, k) => ({
      name: `${String(1000 + k * 7).padStart(6, '0')}.ldb`,
      size: 2 * MiB - k,
      chunks: [randomBytes(32).toString('hex'), randomBytes(32).toString('hex')],
    }));
    tree = Buffer.from(canonicalJson({ version: 1, files } satisfies Tree));
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('has the data it needs: a multi-frame log, a MANIFEST, a table', () => {
    expect(log.length).toBeGreaterThan(2 * FRAME_SIZE);
    expect(manifest.length).toBeGreaterThan(2000);
    expect(table.length).toBeGreaterThan(512 * 1024);
  });

  it("compresses a node's log, MANIFEST and JSON under 'try', and gives the same bytes back, whole and streamed", () => {
    for (const [name, data] of [['log', log], ['MANIFEST', manifest], ['tree', tree]] as const) {
      const r = compressPlaintext(data, 'try');
      expect(r.mode, name).toBe(Compression.brotli);
      const plaintext = plaintextOf(r);
      expect(plaintext[0], name).toBe(Compression.brotli);
      expect(plaintext.length, name).toBeLessThanOrEqual(data.length * (1 - MIN_SAVING));
      expect(decompressPlaintext(plaintext, data.length).equals(data), name).toBe(true);
      // Streamed as a restore opens a segment (64 KiB), and in awkward pieces across every boundary.
      for (const size of [64 * 1024, 7777, 1]) {
        if (size === 1 && data.length > 64 * 1024) continue; // a byte at a time: only on the small ones
        expect(streamed(r.mode, plaintext.subarray(1), size, data.length).all.equals(data), `${name} in ${size}-byte pieces`).toBe(true);
      }
    }
  });

  it('cuts a long plaintext into 1 MiB frames, all full but the last, which alone is marked last', () => {
    const body = plaintextOf(compressPlaintext(log, 'try')).subarray(1);
    const f = frames(body);
    expect(f).toHaveLength(Math.ceil(log.length / FRAME_SIZE));
    f.slice(0, -1).forEach((x) => expect(x.rawField).toBe(FRAME_SIZE));
    expect(f.at(-1)!.rawField).toBe((0x8000_0000 | (log.length % FRAME_SIZE || FRAME_SIZE)) >>> 0);
    // A blob (CHUNK_SIZE) is one frame.
    const chunk = frames(plaintextOf(compressPlaintext(log.subarray(0, MiB), 'try')).subarray(1));
    expect(chunk).toHaveLength(1);
  });

  it('streams: each frame comes out as soon as its bytes are in, before end', () => {
    const plaintext = plaintextOf(compressPlaintext(log, 'try'));
    const { beforeEnd, all } = streamed(Compression.brotli, plaintext.subarray(1), 64 * 1024, log.length);
    expect(all.equals(log)).toBe(true);
    expect(beforeEnd).toHaveLength(Math.ceil(log.length / FRAME_SIZE));
    beforeEnd.forEach((b) => expect(b.length).toBeLessThanOrEqual(FRAME_SIZE));
  });

  it("stores a table as it is under 'never', the buffer itself; and 'never' means never, even where it would pay", () => {
    const r = compressPlaintext(table, 'never');
    expect(r.mode).toBe(Compression.none);
    expect(r.pieces).toHaveLength(2);
    expect(r.pieces[0]!.equals(Buffer.of(Compression.none))).toBe(true);
    expect(r.pieces[1]).toBe(table);
    const json = compressPlaintext(tree, 'never');
    expect(json.mode).toBe(Compression.none);
    expect(json.pieces[1]).toBe(tree);
    expect(decompressPlaintext(plaintextOf(json), tree.length).equals(tree)).toBe(true);
  });

  it("keeps random bytes as they are under 'try', passed through without a copy", () => {
    for (const data of [randomBytes(3 * MiB + 17), randomBytes(1000), table]) {
      const r = compressPlaintext(data, 'try');
      expect(r.mode).toBe(Compression.none);
      expect(r.pieces[1]).toBe(data);
      const back = decompressPlaintext(plaintextOf(r), data.length);
      expect(back.equals(data)).toBe(true);
    }
  });

  it('keeps a compressed body exactly when it saves MIN_SAVING of the bytes', () => {
    // Random bytes (incompressible) then zeros (almost free): the saving is about the zeros' share.
    const mixed = (zeros: number) => Buffer.concat([randomBytes(MiB - zeros), Buffer.alloc(zeros)]);
    const threshold = Math.ceil(MiB * MIN_SAVING);
    const above = compressPlaintext(mixed(threshold + 8192), 'try');
    const below = compressPlaintext(mixed(threshold - 8192), 'try');
    expect(above.mode).toBe(Compression.brotli);
    expect(plaintextOf(above).length).toBeLessThanOrEqual(MiB * (1 - MIN_SAVING));
    expect(below.mode).toBe(Compression.none);
  });

  it('stores an empty plaintext as mode none, and reads it back', () => {
    for (const policy of ['try', 'never'] as CompressionPolicy[]) {
      const r = compressPlaintext(Buffer.alloc(0), policy);
      expect(r.mode).toBe(Compression.none);
      expect(plaintextOf(r).equals(Buffer.of(0))).toBe(true);
    }
    expect(decompressPlaintext(Buffer.of(Compression.none), 0).length).toBe(0);
    // Mode brotli with no frame is never written: refused.
    expectCorrupt(() => decompressPlaintext(Buffer.of(Compression.brotli), 10), /holds no frame/);
    expectCorrupt(() => decompressPlaintext(Buffer.alloc(0), 10), /no compression mode byte/);
  });

  it('refuses a body that inflates past maxLength (a bomb), and accepts it at its length', () => {
    const zeros = Buffer.alloc(3 * MiB);
    const plaintext = plaintextOf(compressPlaintext(zeros, 'try'));
    expect(plaintext.length).toBeLessThan(10_000); // a small body...
    expect(decompressPlaintext(plaintext, zeros.length).equals(zeros)).toBe(true);
    // ...that inflates past what the caller can expect: refused before it is inflated.
    expectCorrupt(() => decompressPlaintext(plaintext, zeros.length - 1), /inflates past the 3145727 bytes expected/);
    expectCorrupt(() => decompressPlaintext(plaintext, 1000), /inflates past the 1000 bytes expected \(frame 1\)/);
    // Mode none: longer than expected is refused too.
    const stored = plaintextOf(compressPlaintext(Buffer.alloc(100, 1), 'never'));
    expect(decompressPlaintext(stored, 100).length).toBe(100);
    expectCorrupt(() => decompressPlaintext(stored, 99), /longer than the 99 bytes expected/);
  });

  it('refuses a frame whose stream inflates past the length its header states', () => {
    const zeros = Buffer.alloc(MiB);
    const plaintext = plaintextOf(compressPlaintext(zeros, 'try'));
    const lying = Buffer.from(plaintext);
    lying.writeUInt32LE((0x8000_0000 | 100) >>> 0, 1 + 4); // the header says 100 raw bytes; the stream holds 1 MiB
    expectCorrupt(() => decompressPlaintext(lying, 10 * MiB), /frame 1 inflates past the 100 bytes its header says/);
    const short = Buffer.from(plaintext);
    short.writeUInt32LE(FRAME_SIZE, 1 + 4); // full length, but not marked last: a frame must follow
    expectCorrupt(() => decompressPlaintext(short, 10 * MiB), /ends after frame 1, which is not marked last/);
    expect(decompressPlaintext(plaintext, 10 * MiB).equals(zeros)).toBe(true);
    // And one whose stream holds fewer bytes than its header states.
    const json = plaintextOf(compressPlaintext(tree, 'try'));
    const over = Buffer.from(json);
    over.writeUInt32LE((0x8000_0000 | (tree.length + 1)) >>> 0, 1 + 4);
    expectCorrupt(() => decompressPlaintext(over, 10 * MiB), new RegExp(`frame 1 inflates to ${tree.length} bytes, its header says ${tree.length + 1}`));
    expect(decompressPlaintext(json, 10 * MiB).equals(tree)).toBe(true);
  });

  it('refuses an unknown or reserved mode byte, and reads the same body under its own', () => {
    const plaintext = plaintextOf(compressPlaintext(tree, 'try'));
    expect(decompressPlaintext(plaintext, tree.length).equals(tree)).toBe(true);
    for (const mode of [3, 7, 0xff]) {
      const bad = Buffer.from(plaintext);
      bad[0] = mode;
      expectCorrupt(() => decompressPlaintext(bad, tree.length), new RegExp(`unknown compression mode ${mode}$`));
      expectCorrupt(() => createDecompressor(mode, tree.length), /unknown compression mode/);
    }
    const zstd = Buffer.from(plaintext);
    zstd[0] = Compression.zstd;
    expectCorrupt(() => decompressPlaintext(zstd, tree.length), /mode 2 \(zstd\) is reserved/);
  });

  it('refuses a body cut anywhere: in a header, in a frame, and between frames', () => {
    const plaintext = plaintextOf(compressPlaintext(log, 'try'));
    const body = plaintext.subarray(1);
    const f = frames(body);
    expect(f.length).toBeGreaterThanOrEqual(3);
    const cuts = [
      { at: 3, why: /frame 1 has 3 of its 8 header bytes/ },
      { at: 8 + 100, why: /frame 1 has 100 of its \d+ compressed bytes/ },
      { at: f[1]!.at, why: /ends after frame 1, which is not marked last/ }, // exactly between frames 1 and 2
      { at: f[2]!.at, why: /ends after frame 2, which is not marked last/ },
      { at: f[1]!.at + 5, why: /frame 2 has 5 of its 8 header bytes/ },
      { at: body.length - 1, why: /frame \d+ has \d+ of its \d+ compressed bytes/ },
    ];
    for (const { at, why } of cuts) {
      expectCorrupt(() => decompressPlaintext(plaintext.subarray(0, 1 + at), log.length), why);
      expectCorrupt(() => streamed(Compression.brotli, body.subarray(0, at), 64 * 1024, log.length), why);
    }
    // Uncut: the same bytes are read.
    expect(decompressPlaintext(plaintext, log.length).equals(log)).toBe(true);
  });

  it('refuses bytes after the last frame, and after a frame\'s compressed stream', () => {
    const plaintext = plaintextOf(compressPlaintext(manifest, 'try'));
    expectCorrupt(() => decompressPlaintext(Buffer.concat([plaintext, Buffer.of(0)]), manifest.length), /1 bytes follow the last frame \(frame 1\)/);
    expectCorrupt(() => decompressPlaintext(Buffer.concat([plaintext, plaintext.subarray(1)]), 2 * manifest.length), /bytes follow the last frame/);
    // Garbage inside a frame, after its brotli stream (which node:zlib alone would ignore): the frame's length covers it.
    const padded = Buffer.concat([plaintext, Buffer.from('xyz')]);
    padded.writeUInt32LE(plaintext.readUInt32LE(1) + 3, 1);
    expectCorrupt(() => decompressPlaintext(padded, manifest.length), /frame 1 has 3 bytes after its compressed stream/);
    expect(decompressPlaintext(plaintext, manifest.length).equals(manifest)).toBe(true);
  });

  it('refuses frame headers out of bounds before reading their bodies', () => {
    const plaintext = plaintextOf(compressPlaintext(tree, 'try'));
    const withHeader = (length: number, rawField: number) => {
      const b = Buffer.from(plaintext);
      b.writeUInt32LE(length, 1);
      b.writeUInt32LE(rawField >>> 0, 5);
      return b;
    };
    const raw = plaintext.readUInt32LE(5);
    expectCorrupt(() => decompressPlaintext(withHeader(0xffff_ffff, raw), 64 * MiB), /claims 4294967295 compressed bytes/);
    expectCorrupt(() => decompressPlaintext(withHeader(0, raw), 64 * MiB), /claims 0 compressed bytes/);
    expectCorrupt(() => decompressPlaintext(withHeader(plaintext.readUInt32LE(1), 0x8000_0000), 64 * MiB), /claims 0 raw bytes/);
    expectCorrupt(() => decompressPlaintext(withHeader(plaintext.readUInt32LE(1), 0x8000_0000 | (FRAME_SIZE + 1)), 64 * MiB), /claims 1048577 raw bytes/);
    // A header that claims 4 GiB is refused at once by a stream, not buffered for.
    const d = createDecompressor(Compression.brotli, 64 * MiB);
    expectCorrupt(() => d.push(withHeader(0xffff_ffff, raw).subarray(1, 9)), /claims 4294967295 compressed bytes/);
    expect(decompressPlaintext(withHeader(plaintext.readUInt32LE(1), raw), 64 * MiB).equals(tree)).toBe(true);
  });

  it('reads a body built from the format as documented, and refuses a short frame that is not the last', () => {
    const frame = (raw: Buffer, last: boolean) => {
      const body = zlib.brotliCompressSync(raw);
      const header = Buffer.alloc(8);
      header.writeUInt32LE(body.length, 0);
      header.writeUInt32LE((raw.length | (last ? 0x8000_0000 : 0)) >>> 0, 4);
      return Buffer.concat([header, body]);
    };
    const full = log.subarray(0, FRAME_SIZE);
    const tail = log.subarray(FRAME_SIZE, FRAME_SIZE + 5000);
    // Brotli at its default quality and window, not the writer's: a reader takes any valid stream.
    const good = Buffer.concat([Buffer.of(Compression.brotli), frame(full, false), frame(tail, true)]);
    expect(decompressPlaintext(good, 2 * FRAME_SIZE).equals(Buffer.concat([full, tail]))).toBe(true);
    const shortFirst = Buffer.concat([Buffer.of(Compression.brotli), frame(tail, false), frame(full, true)]);
    expectCorrupt(() => decompressPlaintext(shortFirst, 2 * FRAME_SIZE), /frame 1 holds 5000 raw bytes and is not the last/);
    const twoLast = Buffer.concat([Buffer.of(Compression.brotli), frame(full, true), frame(tail, true)]);
    expectCorrupt(() => decompressPlaintext(twoLast, 2 * FRAME_SIZE), /bytes follow the last frame \(frame 1\)/);
  });

  it('reads a body written by an earlier build (the format does not drift)', () => {
    // compressPlaintext's output for these records when the format was made; any later Node must read it.
    const written = Buffer.from(
      '017c000000ef01008007f7000080aaaaaaeaff6e97239fed20a4aba8de6e763030b1b3d9c1000c142cbd2c07a7bc39159f70e0657998931122e1c3e4fe2bcefb8a5713379d6d571c4f68cabeed7c66a6b5b52fa0a0684ba224455b32252bda522845d1964aa98ab6344a53b4a553baa22d4e71455b066528d60e4607f3a537fa9b0500406b',
      'hex',
    );
    const text = Array.from({ length: 12 }, (_, i) => `{"height":${18_000_000 + i},"hash":"0x${String(i).repeat(8)}"}`).join('\n');
    expect(decompressPlaintext(written, 495).toString()).toBe(text);
  });

  it('gives tables the policy never and every other file of a checkpoint try', () => {
    expect(policyForFile('000123.ldb')).toBe('never');
    expect(policyForFile('000123.sst')).toBe('never');
    for (const name of ['000124.log', 'MANIFEST-000002', 'CURRENT', 'OPTIONS-000005', 'LOG', 'LOG.old', '000123.ldb.tmp']) expect(policyForFile(name), name).toBe('try');
  });

  it('refuses use of a decompressor after it failed or ended', () => {
    const d = createDecompressor(Compression.none, 10);
    expect(d.push(Buffer.from('abc'))).toHaveLength(1);
    expect(d.end()).toEqual([]);
    expect(() => d.push(Buffer.from('x'))).toThrow(/used after it ended or failed/);
  });
});
