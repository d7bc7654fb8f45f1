import crypto from 'node:crypto';
import { createHook } from 'node:async_hooks';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_KDF_COST,
  EnvelopeReader,
  EnvelopeWriter,
  SEAL_HEADER_BYTES,
  SEAL_MAGIC,
  SealError,
  TAG_BYTES,
  blobId,
  blobLabel,
  deriveKeys,
  keyFingerprint,
  keyLabel,
  newMasterKey,
  objectLabel,
  open,
  openAfterByteInto,
  openInto,
  openedLength,
  parseKeyFile,
  seal,
  sealInto,
  sealedLength,
  serializeKeyFile,
  unwrapMasterKey,
  wrapMasterKey,
  type BlobType,
  type KeyFile,
  type SealErrorKind,
} from '../dist/agent/repository/crypto/index.js';
import { AdminError, ErrorCodes } from '../dist/shared/errors.js';
import * as sealedOps from '../dist/agent/repository/sealed-ops.js';
import { SealedCodec } from '../dist/agent/repository/sealed-codec.js';
import { CryptoPool } from '../dist/agent/repository/crypto-pool.js';
import { prng } from './support/prng.js';

/**
 * The format 3 primitives (agent/repository/crypto/), checked against an independent implementation
 * of the format as docs/FORMAT.md ("Format 3") describes it (written here from node:crypto alone), and
 * attacked: every bit flipped, chunks moved, cut and added, keys and labels swapped, key files
 * tampered. Every refusal is checked for its kind, through open() and through the streaming reader
 * fed whole, byte by byte and in random splits; every attack's harness is first shown to open the
 * untouched envelope (the negative control: the refusal comes from the damage, not the harness).
 */

const SHIFT = 12; // the smallest chunk (4 KiB): many chunks from little data
const CHUNK = 2 ** SHIFT;
const SEALED_CHUNK = CHUNK + TAG_BYTES;
const FAST_KDF = { N: 2 ** 10, r: 8, p: 1 };

// ---- an independent implementation of the format, from the description ----

function refKey(purposeKey: Buffer, salt: Buffer): Buffer {
  return crypto.createHmac('sha256', purposeKey).update(salt).digest();
}

function refNonce(index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  let v = BigInt(index);
  for (let i = 10; i >= 0; i--) {
    n[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  n[11] = last ? 1 : 0;
  return n;
}

/**
 * Seals chunk plaintexts exactly as given, with given flags: the honest encoder when called with the
 * format's chunking, a forger holding the key otherwise.
 */
function refSealChunks(purposeKey: Buffer, label: string, chunks: { plain: Buffer; last: boolean }[], shift: number, salt = crypto.randomBytes(32)): Buffer {
  const header = Buffer.concat([Buffer.from('NASEAL03', 'latin1'), Buffer.of(shift), salt]);
  const key = refKey(purposeKey, salt);
  const aad = Buffer.concat([header, Buffer.from(label, 'utf8')]);
  const out = [header];
  chunks.forEach(({ plain, last }, i) => {
    const c = crypto.createCipheriv('aes-256-gcm', key, refNonce(i, last), { authTagLength: 16 });
    c.setAAD(aad);
    out.push(c.update(plain), c.final(), c.getAuthTag());
  });
  return Buffer.concat(out);
}

function refSeal(purposeKey: Buffer, label: string, plain: Buffer, shift: number): Buffer {
  const size = 2 ** shift;
  const chunks: { plain: Buffer; last: boolean }[] = [];
  for (let o = 0; o === 0 || o < plain.length; o += size) chunks.push({ plain: plain.subarray(o, o + size), last: o + size >= plain.length });
  return refSealChunks(purposeKey, label, chunks, shift);
}

/** Opens by the description alone, and records the (key, nonce) of every chunk it verified. */
function refOpen(purposeKey: Buffer, label: string, env: Buffer, used?: (key: Buffer, nonce: Buffer) => void): Buffer {
  if (env.subarray(0, 8).toString('latin1') !== 'NASEAL03') throw new Error('reference: bad magic');
  const shift = env[8]!;
  const salt = env.subarray(9, 41);
  const key = refKey(purposeKey, salt);
  const aad = Buffer.concat([env.subarray(0, 41), Buffer.from(label, 'utf8')]);
  const sealedChunk = 2 ** shift + 16;
  const out: Buffer[] = [];
  let at = 41;
  for (let i = 0; ; i++) {
    const last = env.length - at <= sealedChunk;
    const end = last ? env.length : at + sealedChunk;
    const nonce = refNonce(i, last);
    const d = crypto.createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
    d.setAAD(aad);
    d.setAuthTag(env.subarray(end - 16, end));
    const plain = Buffer.concat([d.update(env.subarray(at, end - 16)), d.final()]);
    used?.(key, nonce);
    out.push(plain);
    at = end;
    if (last) return Buffer.concat(out);
  }
}

// ---- feeding envelopes to every reader ----


function randomSplits(buf: Buffer, rand: () => number, maxPiece = 3 * CHUNK): Buffer[] {
  const pieces: Buffer[] = [];
  for (let o = 0; o < buf.length; ) {
    const n = Math.floor(rand() * maxPiece);
    pieces.push(buf.subarray(o, o + n)); // empty pieces too
    o += n;
  }
  return pieces;
}

interface Feed {
  /** The plaintext handed out, in order, before the outcome. */
  handedOut: Buffer;
  error: unknown;
}

function feed(purposeKey: Buffer, label: string, pieces: Buffer[]): Feed {
  const reader = new EnvelopeReader(purposeKey, label);
  const out: Buffer[] = [];
  try {
    for (const p of pieces) out.push(...reader.push(p));
    out.push(...reader.end());
    return { handedOut: Buffer.concat(out), error: null };
  } catch (error) {
    return { handedOut: Buffer.concat(out), error };
  }
}

const byteByByte = (env: Buffer) => [...env].map((b) => Buffer.of(b));

type Outcome = { ok: Buffer } | { kind: SealErrorKind };

function outcomeOf(f: () => Buffer): Outcome {
  try {
    return { ok: f() };
  } catch (err) {
    if (err instanceof SealError) return { kind: err.kind };
    throw err;
  }
}

/**
 * Opens `env` through open() and the reader (whole, byte by byte unless skipped, random splits): all
 * must agree on `expected`. On refusal, what the reader handed out must be whole verified chunks of
 * `plain` that precede the damage (`verifiedChunks` of them at most).
 */
function expectEverywhere(purposeKey: Buffer, label: string, env: Buffer, expected: SealErrorKind | Buffer, opts: { plain?: Buffer; bytewise?: boolean; seed?: number } = {}): void {
  const whole = outcomeOf(() => open(purposeKey, label, env));
  const feeds: [string, Buffer[]][] = [
    ['whole', [env]],
    ['random splits', randomSplits(env, prng(opts.seed ?? env.length))],
  ];
  if (opts.bytewise !== false) feeds.push(['byte by byte', byteByByte(env)]);
  if (Buffer.isBuffer(expected)) {
    expect(whole).toEqual({ ok: expected });
    for (const [how, pieces] of feeds) {
      const f = feed(purposeKey, label, pieces);
      expect(f.error, how).toBeNull();
      expect(f.handedOut.equals(expected), how).toBe(true);
    }
    return;
  }
  expect(whole).toEqual({ kind: expected });
  for (const [how, pieces] of feeds) {
    const f = feed(purposeKey, label, pieces);
    expect(f.error, how).toBeInstanceOf(SealError);
    expect((f.error as SealError).kind, how).toBe(expected);
    // Only whole chunks, and only authentic ones, ever left the reader.
    expect(f.handedOut.length % CHUNK, how).toBe(0);
    if (opts.plain) expect(f.handedOut.equals(opts.plain.subarray(0, f.handedOut.length)), how).toBe(true);
  }
}

function chunksOf(env: Buffer, shift = SHIFT): { header: Buffer; chunks: Buffer[] } {
  const size = 2 ** shift + TAG_BYTES;
  const chunks: Buffer[] = [];
  for (let o = SEAL_HEADER_BYTES; o < env.length; o += size) chunks.push(env.subarray(o, o + size));
  return { header: env.subarray(0, SEAL_HEADER_BYTES), chunks };
}

function caught(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

async function caughtAsync(f: () => Promise<unknown>): Promise<unknown> {
  try {
    await f();
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

const keys = deriveKeys(newMasterKey());
const LABEL = objectLabel('wal/0123abcd/00000001.seg');

// ---- the test vectors printed in docs/FORMAT.md ("Format 3") (computed there by an independent
// implementation, Python's hmac, hashlib and cryptography): the document and the code agree ----

describe('documented test vectors', () => {
  const master = Buffer.from([...Array(32).keys()]);

  it('derives the documented subkeys, fingerprint and blob ids', () => {
    const k = deriveKeys(master);
    expect(k.id.toString('hex')).toBe('560f58bb3939fba2a41498145b80104e2cf2fd848834881f27f5c3e77b55687f');
    expect(k.blob.toString('hex')).toBe('f57b2aae2195492afbdb0e2d9f15515044e1067015f057a8478ff89d7e6a3fe3');
    expect(k.object.toString('hex')).toBe('2a432dd5b2f77a8f8e88232f7f6d095e63228427cf17f4d9b3d96f665ff535a0');
    expect(k.cache.toString('hex')).toBe('1316efc14d48b119e409b93ee6ca2d415e8ec3f9936f03ab7125774497b90893');
    expect(keyFingerprint(k)).toBe('b451e747abbff37f16a865ca8a252065');
    expect(blobId(k.id, 'data', [Buffer.from('hello')])).toBe('dd1cc4272747778bc92102f68b153206e8d51c8883ed33703fb92ef5d40b9b64');
    expect(blobId(k.id, 'tree', [Buffer.from('hello')])).toBe('e078083b2eb3544e0acc91289d6c543e32bf9fba63a2db796ac1381e244905b9');
  });

  it('opens the documented envelope, and refuses it under another label (control)', () => {
    const env = Buffer.from(
      '4e415345414c30330caaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa66e73fd389f6e40cb3c840ab74e9a29c17cebcdc0939ccbf82dc',
      'hex',
    );
    const k = deriveKeys(master);
    expect(open(k.object, objectLabel('config'), env).toString()).toBe('node-admin');
    expect((caught(() => open(k.object, objectLabel('configs'), env)) as SealError).kind).toBe('auth');
  });

  it('unwraps the documented key file', async () => {
    const file =
      '{"createdAt":"2026-01-01T00:00:00.000Z","hostname":"example","kdf":{"N":1024,"name":"scrypt","p":1,"r":8,"salt":"ERERERERERERERERERERERERERERERERERERERERERE="},"key":"TkFTRUFMMDMeIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI0qJtKv4GCGY7NPGVgcxwzJreONA+2rZYOEiUKnWa1wuF/vmgfsrOSfi7ygHW5DUE=","username":"ops","version":1}';
    const bytes = Buffer.from(file);
    expect(serializeKeyFile(parseKeyFile(bytes)).equals(bytes)).toBe(true);
    expect((await unwrapMasterKey(bytes, Buffer.from('password'), 'vector'))!.equals(master)).toBe(true);
    expect(await unwrapMasterKey(bytes, Buffer.from('passwore'), 'vector')).toBeNull();
  });
});

// ---- keys ----

describe('keys', () => {
  it('derives four distinct 32-byte subkeys by HKDF-SHA256 with the documented info strings', () => {
    const master = newMasterKey();
    const k = deriveKeys(master);
    const hkdf = (purpose: string) => Buffer.from(crypto.hkdfSync('sha256', master, Buffer.alloc(0), `node-admin v3 ${purpose}`, 32));
    expect(k.id.equals(hkdf('blob-id'))).toBe(true);
    expect(k.blob.equals(hkdf('blob'))).toBe(true);
    expect(k.object.equals(hkdf('object'))).toBe(true);
    expect(k.cache.equals(hkdf('cache'))).toBe(true);
    const all = [k.id, k.blob, k.object, k.cache, master].map((b) => b.toString('hex'));
    expect(new Set(all).size).toBe(5);
    // Deterministic, and another master gives other keys.
    expect(deriveKeys(master).object.equals(k.object)).toBe(true);
    expect(deriveKeys(newMasterKey()).object.equals(k.object)).toBe(false);
  });

  it('makes random 32-byte master keys and refuses a key of another length', () => {
    const a = newMasterKey();
    expect(a.length).toBe(32);
    expect(a.equals(newMasterKey())).toBe(false);
    const err = caught(() => deriveKeys(a.subarray(0, 31)));
    expect(err).toBeInstanceOf(AdminError);
  });

  it('fingerprints a key for local caches: 32 hex of HMAC(cacheKey, fixed text), different per key', () => {
    const master = newMasterKey();
    const k = deriveKeys(master);
    const expected = crypto.createHmac('sha256', k.cache).update('node-admin v3 cache fingerprint').digest('hex').slice(0, 32);
    expect(keyFingerprint(k)).toBe(expected);
    expect(keyFingerprint(deriveKeys(master))).toBe(expected);
    expect(keyFingerprint(deriveKeys(newMasterKey()))).not.toBe(expected);
    expect(keyFingerprint(k)).toMatch(/^[0-9a-f]{32}$/);
  });
});

// ---- blob ids and labels ----

describe('blob ids and labels', () => {
  const data = crypto.randomBytes(10_000);

  it('is HMAC-SHA256(idKey, typeByte || data): same data same id, whatever the pieces', () => {
    const id = blobId(keys.id, 'data', [data]);
    expect(id).toBe(crypto.createHmac('sha256', keys.id).update(Buffer.of(0x64)).update(data).digest('hex'));
    expect(blobId(keys.id, 'tree', [data])).toBe(crypto.createHmac('sha256', keys.id).update(Buffer.of(0x74)).update(data).digest('hex'));
    for (const cut of [0, 1, 4999, 9999, 10_000]) expect(blobId(keys.id, 'data', [data.subarray(0, cut), data.subarray(cut)])).toBe(id);
    expect(blobId(keys.id, 'data', randomSplits(data, prng(7), 300))).toBe(id);
    expect(id).toMatch(/^[0-9a-f]{64}$/);
  });

  it('differs under another key, for another type, and from the plain SHA-256', () => {
    const id = blobId(keys.id, 'data', [data]);
    expect(blobId(deriveKeys(newMasterKey()).id, 'data', [data])).not.toBe(id);
    expect(blobId(keys.id, 'tree', [data])).not.toBe(id);
    expect(id).not.toBe(crypto.createHash('sha256').update(data).digest('hex'));
    const other = Buffer.from(data);
    other[0]! ^= 1;
    expect(blobId(keys.id, 'data', [other])).not.toBe(id);
  });

  it('spells labels one way and refuses malformed ids and names', () => {
    const id = blobId(keys.id, 'data', [data]);
    expect(blobLabel('data', id)).toBe(`node-admin v3 blob data ${id}`);
    expect(blobLabel('tree', id)).toBe(`node-admin v3 blob tree ${id}`);
    expect(objectLabel('snapshots/abc')).toBe('node-admin v3 object snapshots/abc');
    for (const bad of [id.toUpperCase(), id.slice(1), `${id}0`, '', `${id.slice(1)} `]) {
      expect((caught(() => blobLabel('data', bad)) as SealError).kind).toBe('format');
    }
    expect((caught(() => blobLabel('pack' as 'data', id)) as SealError).kind).toBe('format');
    for (const bad of ['', '/snapshots', 'snapshots/', 'snapshots//a', 'Snapshots/a', 'snap shots', 'a\nb', 'x'.repeat(1025)]) {
      expect((caught(() => objectLabel(bad)) as SealError).kind, JSON.stringify(bad).slice(0, 30)).toBe('format');
    }
  });
});

// ---- sealing ----

describe('seal and open', () => {
  const sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17, 40 * CHUNK + 5];

  it('round-trips every size, at the predicted length, through open() and the reader', () => {
    for (const n of sizes) {
      const plain = crypto.randomBytes(n);
      const env = seal(keys.object, LABEL, [plain], SHIFT);
      expect(env.length, `n=${n}`).toBe(sealedLength(n, SHIFT));
      expect(env.length).toBe(SEAL_HEADER_BYTES + n + TAG_BYTES * Math.max(1, Math.ceil(n / CHUNK)));
      expectEverywhere(keys.object, LABEL, env, plain, { bytewise: n <= 2 * CHUNK });
    }
    // The default shift: one chunk for a blob.
    const mib = crypto.randomBytes(1 << 20);
    const env = seal(keys.blob, LABEL, [mib]);
    expect(env.length).toBe(sealedLength(1 << 20));
    expect(env.length).toBe(SEAL_HEADER_BYTES + (1 << 20) + TAG_BYTES);
    expect(env[8]).toBe(30);
    expect(open(keys.blob, LABEL, env).equals(mib)).toBe(true);
  });

  it('writes exactly the described format, and opens what the description writes', () => {
    for (const n of sizes) {
      const plain = crypto.randomBytes(n);
      const env = seal(keys.object, LABEL, [plain], SHIFT);
      expect(env.subarray(0, 8).equals(SEAL_MAGIC)).toBe(true);
      expect(env[8]).toBe(SHIFT);
      expect(refOpen(keys.object, LABEL, env).equals(plain), `n=${n}`).toBe(true);
      expect(open(keys.object, LABEL, refSeal(keys.object, LABEL, plain, SHIFT)).equals(plain), `n=${n}`).toBe(true);
    }
  });

  it('gives the same envelope contents whatever the pieces, split anywhere', () => {
    const plain = crypto.randomBytes(CHUNK + 300);
    for (let cut = 0; cut <= plain.length; cut++) {
      const env = seal(keys.object, LABEL, [plain.subarray(0, cut), plain.subarray(cut)], SHIFT);
      expect(refOpen(keys.object, LABEL, env).equals(plain)).toBe(true);
    }
    const big = crypto.randomBytes(5 * CHUNK + 99);
    const rand = prng(42);
    for (let i = 0; i < 200; i++) {
      const env = seal(keys.object, LABEL, randomSplits(big, rand, CHUNK / 2), SHIFT);
      expect(open(keys.object, LABEL, env).equals(big)).toBe(true);
    }
  });

  it('seals into and opens into a buffer of the caller at an offset, touching nothing else', () => {
    for (const n of sizes) {
      const plain = crypto.randomBytes(n);
      const len = sealedLength(n, SHIFT);
      const buf = Buffer.alloc(len + 200, 0xaa);
      expect(sealInto(keys.object, LABEL, [plain], buf, 100, SHIFT)).toBe(len);
      expect(buf.subarray(0, 100).every((b) => b === 0xaa) && buf.subarray(100 + len).every((b) => b === 0xaa)).toBe(true);
      const env = buf.subarray(100, 100 + len);
      expect(refOpen(keys.object, LABEL, env).equals(plain)).toBe(true);
      expect(openedLength(env)).toBe(n);
      const out = Buffer.alloc(n + 10, 0x55);
      expect(openInto(keys.object, LABEL, env, out, 10)).toBe(n);
      expect(out.subarray(10).equals(plain)).toBe(true);
      expect(out.subarray(0, 10).every((b) => b === 0x55)).toBe(true);
    }
    const env = seal(keys.object, LABEL, [crypto.randomBytes(100)]);
    expect((caught(() => sealInto(keys.object, LABEL, [Buffer.alloc(100)], Buffer.alloc(sealedLength(100) - 1), 0)) as AdminError).code).toBe(ErrorCodes.INTERNAL);
    // An envelope holding more than the caller expects: refused before anything is decrypted.
    expect((caught(() => openInto(keys.object, LABEL, env, Buffer.alloc(99), 0)) as SealError).kind).toBe('format');
  });

  it('opens into a buffer only the chunks that verified', () => {
    const plain = crypto.randomBytes(3 * CHUNK + 10);
    const env = seal(keys.object, LABEL, [plain], SHIFT);
    const bad = Buffer.from(env);
    bad[SEAL_HEADER_BYTES + SEALED_CHUNK + 5]! ^= 1; // inside chunk 1
    const out = Buffer.alloc(plain.length, 0x55);
    expect((caught(() => openInto(keys.object, LABEL, bad, out, 0)) as SealError).kind).toBe('auth');
    // Chunk 0 verified (its bytes may be there); not one byte of chunk 1 or later is.
    const first = out.subarray(0, CHUNK);
    expect(first.equals(plain.subarray(0, CHUNK)) || first.every((b) => b === 0x55)).toBe(true);
    expect(out.subarray(CHUNK).every((b) => b === 0x55)).toBe(true);
    // Control: the same buffer check sees plaintext when it is written.
    openInto(keys.object, LABEL, env, out, 0);
    expect(out.subarray(CHUNK).every((b) => b === 0x55)).toBe(false);
  });

  it('uses a fresh salt, hence a fresh key, for every envelope', () => {
    const plain = Buffer.from('same plaintext');
    const a = seal(keys.object, LABEL, [plain]);
    const b = seal(keys.object, LABEL, [plain]);
    expect(a.subarray(9, 41).equals(b.subarray(9, 41))).toBe(false);
    expect(a.subarray(41).equals(b.subarray(41))).toBe(false);
  });
});

// ---- the fast paths: output cut to land aligned, blobs opened straight into the caller's buffer ----

/** A view of shared, page-aligned memory (as the lanes' buffers are: direct-io.ts), `bytes` long. */
function sharedMemory(bytes: number): Buffer {
  const pages = Math.ceil(bytes / 65536);
  const Memory = (globalThis as unknown as { WebAssembly: { Memory: new (d: object) => { buffer: SharedArrayBuffer } } }).WebAssembly.Memory;
  return Buffer.from(new Memory({ initial: pages, maximum: pages, shared: true }).buffer);
}

describe('sealing into and opening out of shared memory (updates cut for aligned copies)', () => {
  const lengths = [0, 1, 22, 23, 63, 64, 65, 65535, 65536, 65537, 3 * 65536 + 41, 1024 * 1024];

  it('seals at every alignment, from pieces of any shape, exactly what the reference opens', () => {
    const mem = sharedMemory(4 * 1024 * 1024);
    const rand = prng(7);
    for (const n of lengths) {
      const plain = crypto.randomBytes(n);
      for (const offset of [0, 1, 7, 8, 41, 63, 64, 4095, 65536 - 3]) {
        // A mode byte and the data, as a blob is sealed; and random splits.
        for (const pieces of [[plain.subarray(0, 1), plain.subarray(1)], randomSplits(plain, rand, 70000), [plain]]) {
          mem.fill(0xaa, offset > 0 ? offset - 1 : 0, offset + sealedLength(n) + 1);
          const len = sealInto(keys.blob, LABEL, pieces, mem, offset);
          expect(len).toBe(sealedLength(n));
          const env = Buffer.from(mem.subarray(offset, offset + len));
          expect(refOpen(keys.blob, LABEL, env).equals(plain)).toBe(true);
          if (offset > 0) expect(mem[offset - 1]).toBe(0xaa);
          expect(mem[offset + len]).toBe(0xaa);
        }
      }
    }
  });

  it('openAfterByteInto gives what open gives after the first byte, into shared memory, in place or not', () => {
    const mem = sharedMemory(4 * 1024 * 1024);
    for (const n of lengths.filter((n) => n > 0)) {
      for (const first of [0, 1]) {
        const plain = crypto.randomBytes(n);
        plain[0] = first;
        const env = seal(keys.blob, LABEL, [plain]);
        expect(open(keys.blob, LABEL, env).equals(plain)).toBe(true); // the negative control
        // Elsewhere, and over the envelope's own bytes (a restore opens in place), starting at or before them.
        for (const [at, into] of [[2 * 1024 * 1024 + 5, 0], [4096, 4096], [4096 + 41, 4096], [5000, 4999], [64, 1]] as [number, number][]) {
          mem.fill(0x55, 0);
          env.copy(mem, at);
          const got = openAfterByteInto(keys.blob, LABEL, mem.subarray(at, at + env.length), 0, mem.subarray(into));
          if (first !== 0) {
            expect(got).toBeNull();
            expect(mem.subarray(at, at + env.length).equals(env)).toBe(true); // nothing written
          } else {
            expect(got).toBe(n - 1);
            expect(mem.subarray(into, into + n - 1).equals(plain.subarray(1))).toBe(true);
          }
        }
      }
    }
  });

  it('a blob opens to the same bytes into shared memory in place (the fast path) as through the scratch', () => {
    const mem = sharedMemory(4 * 1024 * 1024);
    const blobs = [crypto.randomBytes(1024 * 1024), Buffer.alloc(300000, 'compressible '), crypto.randomBytes(17)];
    for (const data of blobs) {
      for (const policy of ['never', 'try'] as const) {
        const id = sealedOps.identifyBlob(keys.id, 'data', data);
        const stored = Buffer.from(sealedOps.sealBlob(keys, 'data', id, data, policy, null));
        const slow = sealedOps.openBlob(keys, 'data', id, stored, 2 * 1024 * 1024, null);
        expect(slow.equals(data)).toBe(true);
        stored.copy(mem, 8192);
        const fast = sealedOps.openBlob(keys, 'data', id, mem.subarray(8192, 8192 + stored.length), 2 * 1024 * 1024, mem.subarray(4096));
        expect(fast.byteOffset).toBe(4096);
        expect(fast.equals(data)).toBe(true);
        const other = sealedOps.identifyBlob(keys.id, 'data', Buffer.from('other'));
        stored.copy(mem, 8192);
        expect(caught(() => sealedOps.openBlob(keys, 'data', other, mem.subarray(8192, 8192 + stored.length), 2 * 1024 * 1024, mem.subarray(0)))).toBeInstanceOf(SealError);
      }
    }
  });

  it('checkBlob takes what openBlob opens and refuses what a store could do to it, in the thread and through a crypto thread', async () => {
    const data = Buffer.concat([crypto.randomBytes(70000), Buffer.alloc(200000, 'compressible ')]);
    const id = sealedOps.identifyBlob(keys.id, 'data', data);
    const otherId = sealedOps.identifyBlob(keys.id, 'data', Buffer.from('other'));
    const stored = Buffer.from(sealedOps.sealBlob(keys, 'data', id, data, 'try', null));
    const flipped = Buffer.from(stored);
    flipped[flipped.length >> 1]! ^= 1;
    // Sealed under the other id's label by a key holder: authentic, but its plaintext is of another id.
    const forged = Buffer.from(sealedOps.sealBlob(keys, 'data', otherId, data, 'try', null));
    const codec = new SealedCodec(keys, new CryptoPool(1));
    try {
      const max = 1024 * 1024;
      // What it opens to: the mode byte and the bytes as stored (compressed here), not decompressed.
      const opened = sealedOps.checkBlob(keys, 'data', id, stored, max);
      expect(opened).toBeLessThan(data.length);
      expect(opened).toBeGreaterThan(70000);
      await codec.checkBlob('data', id, stored, max);
      const refusals: [string, BlobType, string, Buffer, number][] = [
        ['another id', 'data', otherId, stored, max],
        ['another type', 'tree', id, stored, max],
        ['a flipped byte', 'data', id, flipped, max],
        ['truncated', 'data', id, stored.subarray(0, stored.length - 1), max],
        ['more than maxLength as stored', 'data', id, stored, opened - 2],
      ];
      for (const [what, ...args] of refusals) {
        // Each refused by openBlob too (the control: checkBlob refuses nothing openBlob takes, above).
        expect(caught(() => sealedOps.openBlob(keys, ...args, null)), what).toBeInstanceOf(Error);
        expect(caught(() => sealedOps.checkBlob(keys, ...args)), what).toBeInstanceOf(Error);
        await expect(codec.checkBlob(...args), what).rejects.toThrow();
      }
      // What only the key's holder makes passes the check (it is authentic) and is refused where the
      // plaintext is used: openBlob, as a restore or verify --read-data opens it.
      expect(sealedOps.checkBlob(keys, 'data', otherId, forged, max)).toBe(opened);
      expect((caught(() => sealedOps.openBlob(keys, 'data', otherId, forged, max, null)) as Error).message).toMatch(/another id/);
      expect(caught(() => sealedOps.openBlob(keys, 'data', id, stored, data.length - 1, null))).toBeInstanceOf(Error);
    } finally {
      await codec.close();
    }
  });

  it('openAfterByteInto refuses what open refuses, and leaves several chunks to open', () => {
    const plain = Buffer.concat([Buffer.of(0), crypto.randomBytes(100000)]);
    const env = seal(keys.blob, LABEL, [plain]);
    for (const bit of [0, 41 * 8 + 3, 50 * 8, (env.length - 1) * 8 + 7]) {
      const bad = Buffer.from(env);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      const expected = caught(() => open(keys.blob, LABEL, bad)) as SealError;
      expect(expected).toBeInstanceOf(SealError);
      let err: unknown = null;
      try {
        const got = openAfterByteInto(keys.blob, LABEL, bad, 0, Buffer.alloc(plain.length));
        // Null: the caller opens it the general way, which refuses it.
        expect(got).toBeNull();
        err = caught(() => open(keys.blob, LABEL, bad));
      } catch (e) {
        err = e;
      }
      expect((err as SealError).kind).toBe(expected.kind);
    }
    expect(caught(() => openAfterByteInto(keys.blob, objectLabel('other'), env, 0, Buffer.alloc(plain.length)))).toBeInstanceOf(SealError);
    expect(openAfterByteInto(keys.blob, LABEL, seal(keys.blob, LABEL, [plain], SHIFT), 0, Buffer.alloc(plain.length))).toBeNull();
    expect(openAfterByteInto(keys.blob, LABEL, env.subarray(0, SEAL_HEADER_BYTES + TAG_BYTES), 0, Buffer.alloc(10))).toBeNull();
  });
});

// ---- attacks ----

describe('refusals', () => {
  const plain = crypto.randomBytes(3 * CHUNK + 1000); // chunks 0..2 full, chunk 3 last
  const env = seal(keys.object, LABEL, [plain], SHIFT);
  const { header, chunks } = chunksOf(env);
  const [c0, c1, c2, c3] = chunks as [Buffer, Buffer, Buffer, Buffer];
  // The smallest envelope with a first, a middle and a last chunk: for the attacks tried at every bit.
  const smallPlain = crypto.randomBytes(2 * CHUNK + 100);
  const small = seal(keys.object, LABEL, [smallPlain], SHIFT);

  it('opens the untouched envelopes through every reader (control for everything below)', () => {
    expect(chunks.length).toBe(4);
    expectEverywhere(keys.object, LABEL, env, plain);
    expect(chunksOf(small).chunks.length).toBe(3);
    expectEverywhere(keys.object, LABEL, small, smallPlain);
  });

  it('refuses every single-bit flip, with the kind its place calls for, never handing out the damaged chunk', () => {
    const rand = prng(1);
    let flips = 0;
    for (let byte = 0; byte < small.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(small);
        bad[byte]! ^= 1 << bit;
        let expected: SealErrorKind = 'auth';
        if (byte < 8) expected = 'format';
        if (byte === 8 && !(bad[8]! >= 12 && bad[8]! <= 30)) expected = 'format';
        expect(outcomeOf(() => open(keys.object, LABEL, bad))).toEqual({ kind: expected });
        const f = feed(keys.object, LABEL, randomSplits(bad, rand));
        expect((f.error as SealError).kind).toBe(expected);
        // What left the reader: whole chunks before the damaged one, authentic.
        const damagedChunk = byte < SEAL_HEADER_BYTES ? 0 : Math.floor((byte - SEAL_HEADER_BYTES) / SEALED_CHUNK);
        expect(f.handedOut.length).toBeLessThanOrEqual(damagedChunk * CHUNK);
        expect(f.handedOut.length % CHUNK).toBe(0);
        expect(f.handedOut.equals(smallPlain.subarray(0, f.handedOut.length))).toBe(true);
        flips++;
      }
    }
    expect(flips).toBe(small.length * 8);
  });

  it('refuses bit flips through the reader fed byte by byte, handing out exactly the chunks before the damage', () => {
    // Every byte of the header and around each chunk boundary, and every 37th byte elsewhere.
    const near = (o: number) => [...chunksOf(small).chunks.keys()].some((k) => Math.abs(o - (SEAL_HEADER_BYTES + k * SEALED_CHUNK)) <= 20);
    let tried = 0;
    for (let byte = 0; byte < small.length; byte++) {
      if (!(byte < SEAL_HEADER_BYTES || near(byte) || byte >= small.length - 20 || byte % 37 === 0)) continue;
      const bad = Buffer.from(small);
      bad[byte]! ^= 1 << byte % 8;
      const f = feed(keys.object, LABEL, byteByByte(bad));
      expect(f.error).toBeInstanceOf(SealError);
      const damagedChunk = byte < SEAL_HEADER_BYTES ? 0 : Math.floor((byte - SEAL_HEADER_BYTES) / SEALED_CHUNK);
      expect(f.handedOut.length).toBe(damagedChunk * CHUNK); // every chunk before the damage, none after
      expect(f.handedOut.equals(smallPlain.subarray(0, f.handedOut.length))).toBe(true);
      tried++;
    }
    expect(tried).toBeGreaterThan(300);
  });

  it('refuses a wrong label and a wrong key (another purpose, another repository)', () => {
    expectEverywhere(keys.object, objectLabel('wal/0123abcd/00000002.seg'), env, 'auth', { plain });
    expectEverywhere(keys.object, `${LABEL} `, env, 'auth', { plain });
    expectEverywhere(keys.blob, LABEL, env, 'auth', { plain });
    expectEverywhere(deriveKeys(newMasterKey()).object, LABEL, env, 'auth', { plain });
  });

  it('refuses a blob moved to another id or type', () => {
    const data = crypto.randomBytes(500);
    const other = crypto.randomBytes(500);
    const id = blobId(keys.id, 'data', [data]);
    const otherId = blobId(keys.id, 'data', [other]);
    const sealed = seal(keys.blob, blobLabel('data', id), [data]);
    expect(open(keys.blob, blobLabel('data', id), sealed).equals(data)).toBe(true);
    expect((caught(() => open(keys.blob, blobLabel('data', otherId), sealed)) as SealError).kind).toBe('auth');
    expect((caught(() => open(keys.blob, blobLabel('tree', id), sealed)) as SealError).kind).toBe('auth');
    expect((caught(() => open(keys.object, blobLabel('data', id), sealed)) as SealError).kind).toBe('auth');
  });

  it('refuses chunks swapped, reordered, duplicated, dropped or taken from another envelope', () => {
    const cat = (...parts: Buffer[]) => Buffer.concat([header, ...parts]);
    expectEverywhere(keys.object, LABEL, cat(c1, c0, c2, c3), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, cat(c0, c2, c1, c3), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, cat(c0, c0, c1, c2, c3), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, cat(c0, c1, c1, c2, c3), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, cat(c0, c1, c2, c3, c3), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, cat(c0, c2, c3), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, cat(c0, c1, c3), 'auth', { plain });
    // A chunk at the same place in another envelope of the same plaintext, key and label.
    const twin = chunksOf(seal(keys.object, LABEL, [plain], SHIFT)).chunks;
    expectEverywhere(keys.object, LABEL, cat(c0, twin[1]!, c2, c3), 'auth', { plain });
    // The other envelope's header in front of these chunks.
    expectEverywhere(keys.object, LABEL, Buffer.concat([chunksOf(seal(keys.object, LABEL, [plain], SHIFT)).header, c0, c1, c2, c3]), 'auth', { plain });
  });

  it('refuses truncation at every chunk boundary as truncated', () => {
    expectEverywhere(keys.object, LABEL, header, 'truncated');
    for (let k = 1; k <= 3; k++) {
      expectEverywhere(keys.object, LABEL, env.subarray(0, SEAL_HEADER_BYTES + k * SEALED_CHUNK), 'truncated', { plain });
    }
    // An envelope whose plaintext fills its chunks exactly: cut before its (full) last chunk.
    const full = crypto.randomBytes(2 * CHUNK);
    const fullEnv = seal(keys.object, LABEL, [full], SHIFT);
    expect(fullEnv.length).toBe(SEAL_HEADER_BYTES + 2 * SEALED_CHUNK);
    expectEverywhere(keys.object, LABEL, fullEnv, full);
    expectEverywhere(keys.object, LABEL, fullEnv.subarray(0, SEAL_HEADER_BYTES + SEALED_CHUNK), 'truncated', { plain: full });
  });

  it('refuses truncation at every byte offset, with the documented kind', () => {
    const rand = prng(3);
    for (let cut = 0; cut < small.length; cut++) {
      const short = small.subarray(0, cut);
      // Inside the header, at a boundary, or with no room left for a tag: truncated; else the tail
      // cannot verify as the last chunk: auth.
      const into = (cut - SEAL_HEADER_BYTES) % SEALED_CHUNK;
      const expected: SealErrorKind = cut <= SEAL_HEADER_BYTES || into < TAG_BYTES ? 'truncated' : 'auth';
      expect(outcomeOf(() => open(keys.object, LABEL, short)), `cut=${cut}`).toEqual({ kind: expected });
      const f = feed(keys.object, LABEL, randomSplits(short, rand));
      expect((f.error as SealError).kind, `cut=${cut}`).toBe(expected);
      expect(f.handedOut.equals(smallPlain.subarray(0, f.handedOut.length))).toBe(true);
    }
  });

  it('refuses bytes after the last chunk', () => {
    expectEverywhere(keys.object, LABEL, Buffer.concat([env, Buffer.of(0)]), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, Buffer.concat([env, crypto.randomBytes(16)]), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, Buffer.concat([env, c3]), 'auth', { plain });
    expectEverywhere(keys.object, LABEL, Buffer.concat([env, env]), 'auth', { plain });
    const full = crypto.randomBytes(2 * CHUNK);
    const fullEnv = seal(keys.object, LABEL, [full], SHIFT);
    expectEverywhere(keys.object, LABEL, Buffer.concat([fullEnv, Buffer.of(0)]), 'auth', { plain: full });
  });

  it('refuses a header with another chunk shift: out of range as format, in range as auth', () => {
    for (const shift of [0, 11, 31, 64, 255]) {
      const bad = Buffer.from(env);
      bad[8] = shift;
      expectEverywhere(keys.object, LABEL, bad, 'format');
    }
    for (const shift of [13, 14, 20, 30]) {
      const bad = Buffer.from(env);
      bad[8] = shift;
      expectEverywhere(keys.object, LABEL, bad, 'auth', { plain });
    }
  });

  it('refuses what is not an envelope as format, as soon as its first bytes show it', () => {
    expectEverywhere(keys.object, LABEL, Buffer.concat([Buffer.from('NASEAL02'), env.subarray(8)]), 'format');
    expectEverywhere(keys.object, LABEL, Buffer.from('{"version":1,"files":[]}'), 'format');
    expectEverywhere(keys.object, LABEL, Buffer.from('NASE'), 'truncated'); // a prefix of the magic: could be one
    expectEverywhere(keys.object, LABEL, Buffer.alloc(0), 'truncated');
    const reader = new EnvelopeReader(keys.object, LABEL);
    expect((caught(() => reader.push(Buffer.from('X'))) as SealError).kind).toBe('format');
  });

  it('refuses forgeries made with the key that break the chunking rules', () => {
    const three = crypto.randomBytes(3 * CHUNK);
    const forge = (parts: [Buffer, boolean][]) => refSealChunks(keys.object, LABEL, parts.map(([p, last]) => ({ plain: p, last })), SHIFT);
    // Control: the forger's honest chunking opens.
    expectEverywhere(keys.object, LABEL, forge([[three.subarray(0, CHUNK), false], [three.subarray(CHUNK, 2 * CHUNK), false], [three.subarray(2 * CHUNK), true]]), three);
    // A last chunk larger than the chunk size.
    expectEverywhere(keys.object, LABEL, forge([[three.subarray(0, CHUNK + 1), true]]), 'auth');
    // A last-flagged chunk in the middle, more after it.
    expectEverywhere(keys.object, LABEL, forge([[three.subarray(0, CHUNK), true], [three.subarray(CHUNK), true]]), 'auth');
    // No last-flagged chunk at all (as if cut at a boundary by the writer itself).
    expectEverywhere(keys.object, LABEL, forge([[three.subarray(0, CHUNK), false], [three.subarray(CHUNK, 2 * CHUNK), false]]), 'truncated');
    // A short chunk that is not last.
    expectEverywhere(keys.object, LABEL, forge([[three.subarray(0, 100), false], [three.subarray(100, 200), true]]), 'auth');
    // An empty last chunk after full ones: a second encoding of the same plaintext, refused.
    expectEverywhere(keys.object, LABEL, forge([[three.subarray(0, CHUNK), false], [Buffer.alloc(0), true]]), 'format');
  });

  it('names the envelope in one line and never shows key bytes', () => {
    const err = caught(() => open(keys.blob, LABEL, env)) as SealError;
    expect(err).toBeInstanceOf(AdminError);
    expect(err.code).toBe(ErrorCodes.CORRUPT);
    expect(err.message).not.toContain('\n');
    expect(err.message).toContain(LABEL);
    for (const k of [keys.blob, keys.object, keys.id, keys.cache]) {
      expect(err.message).not.toContain(k.toString('hex'));
      expect(err.message).not.toContain(k.toString('base64'));
    }
  });

  it('keeps refusing after a refusal, and refuses use after end()', () => {
    const reader = new EnvelopeReader(keys.object, LABEL);
    const bad = Buffer.from(env);
    bad[100]! ^= 1;
    const first = caught(() => reader.push(bad));
    expect(first).toBeInstanceOf(SealError);
    expect(caught(() => reader.push(Buffer.of(1)))).toBe(first);
    expect(caught(() => reader.end())).toBe(first);
    const good = new EnvelopeReader(keys.object, LABEL);
    good.push(env);
    good.end();
    expect((caught(() => good.push(env)) as AdminError).code).toBe(ErrorCodes.INTERNAL);
  });

  it('lets a reader cap the chunk size it will buffer', () => {
    const big = seal(keys.object, LABEL, [crypto.randomBytes(100)], 20);
    const reader = new EnvelopeReader(keys.object, LABEL, { maxChunkShift: 16 });
    // Refused when the shift byte arrives, before any chunk is buffered.
    expect((caught(() => reader.push(big.subarray(0, 9))) as SealError).kind).toBe('format');
    const ok = new EnvelopeReader(keys.object, LABEL, { maxChunkShift: 20 });
    expect(Buffer.concat([...ok.push(big), ...ok.end()]).length).toBe(100);
  });
});

// ---- the streaming writer ----

describe('EnvelopeWriter', () => {
  it('writes the same format as seal, for every size and any split, holding a full chunk until it knows it is not the last', () => {
    const rand = prng(9);
    for (const n of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 7 * CHUNK + 3]) {
      const plain = crypto.randomBytes(n);
      for (const pieces of [[plain], randomSplits(plain, rand, CHUNK * 2), randomSplits(plain, rand, 50)]) {
        const w = new EnvelopeWriter(keys.object, LABEL, SHIFT);
        const out: Buffer[] = [];
        for (const p of pieces) out.push(...w.write(p));
        out.push(...w.finish());
        const env = Buffer.concat(out);
        expect(env.length, `n=${n}`).toBe(sealedLength(n, SHIFT));
        expect(refOpen(keys.object, LABEL, env).equals(plain)).toBe(true);
        expect(open(keys.object, LABEL, env).equals(plain)).toBe(true);
      }
    }
    const w = new EnvelopeWriter(keys.object, LABEL, SHIFT);
    const first = Buffer.concat(w.write(crypto.randomBytes(CHUNK)));
    expect(first.length).toBe(SEAL_HEADER_BYTES); // the full chunk may still be the last one
    expect(Buffer.concat(w.write(Buffer.of(1))).length).toBe(SEALED_CHUNK);
    expect(Buffer.concat(w.finish()).length).toBe(1 + TAG_BYTES);
    expect((caught(() => w.write(Buffer.of(1))) as AdminError).code).toBe(ErrorCodes.INTERNAL);
  });

  it('copies what it holds: the caller may reuse its buffer', () => {
    // Small writes (all held), and writes of several chunks (sealed straight away but for the tail).
    for (const size of [1000, 3 * CHUNK + 10]) {
      const buf = Buffer.alloc(size);
      const expected: Buffer[] = [];
      const w = new EnvelopeWriter(keys.object, LABEL, SHIFT);
      const out: Buffer[] = [];
      for (let i = 0; i < 10; i++) {
        crypto.randomFillSync(buf);
        expected.push(Buffer.from(buf));
        out.push(...w.write(buf));
      }
      buf.fill(0);
      out.push(...w.finish());
      expect(open(keys.object, LABEL, Buffer.concat(out)).equals(Buffer.concat(expected)), `size=${size}`).toBe(true);
    }
  });
});

// ---- nonce and key uniqueness ----

describe('nonces', () => {
  /** Records the (key, nonce) pairs that verified every chunk; `repeats` counts pairs seen before. */
  class PairLog {
    readonly seen = new Set<string>();
    repeats = 0;
    pairs = 0;
    record(env: Buffer, purposeKey: Buffer, label: string): void {
      refOpen(purposeKey, label, env, (key, nonce) => {
        const pair = Buffer.concat([key, nonce]).toString('latin1');
        if (this.seen.has(pair)) this.repeats++;
        else this.seen.add(pair);
        this.pairs++;
      });
    }
  }

  it('the detector sees a repeated (key, nonce) pair (control)', () => {
    const log = new PairLog();
    const env = seal(keys.blob, LABEL, [Buffer.from('x')]);
    log.record(env, keys.blob, LABEL);
    log.record(env, keys.blob, LABEL);
    expect(log.repeats).toBe(1);
  });

  /** A million (NODE_ADMIN_NONCE_SEALS: CI gives Node 24 and 26 a smaller sample). */
  const SEALS = Number(process.env.NODE_ADMIN_NONCE_SEALS ?? 1_000_000);
  it(`never repeats a (key, nonce) pair over ${SEALS.toLocaleString('en-US')} small blobs and a thousand multi-chunk envelopes`, () => {
    // A one-chunk envelope's nonce is always (0, last): its (key, nonce) pair is new exactly when its
    // key is, and its key is HMAC(blobKey, salt). So the salts of the million are recorded, and every
    // 1000th envelope is opened by the independent implementation, which proves that this key and this
    // nonce are the ones that sealed it (GCM would not verify under any other pair).
    const salts = new Set<string>();
    const log = new PairLog();
    const data = crypto.randomBytes(64 + SEALS);
    const label = blobLabel('data', '0'.repeat(64));
    let sealMs = 0;
    const cpu = process.cpuUsage();
    for (let i = 0; i < SEALS; i++) {
      const t = performance.now();
      const env = seal(keys.blob, label, [data.subarray(i, i + 64)]);
      sealMs += performance.now() - t;
      salts.add(env.toString('latin1', 9, 41));
      if (i % 1000 === 0) log.record(env, keys.blob, label);
    }
    const cpuS = (process.cpuUsage(cpu).user + process.cpuUsage(cpu).system) / 1e6;
    expect(salts.size).toBe(SEALS);
    // Multi-chunk envelopes: every chunk's (key, nonce) pair, independently verified.
    const plain = crypto.randomBytes(16 * CHUNK);
    for (let i = 0; i < 1000; i++) log.record(seal(keys.blob, LABEL, [plain], SHIFT), keys.blob, LABEL);
    expect(log.pairs).toBe(Math.ceil(SEALS / 1000) + 1000 * 16);
    expect(log.repeats).toBe(0);
    console.log(
      `nonces: ${SEALS.toLocaleString('en-US')} seals of 64-byte blobs took ${(sealMs / 1000).toFixed(1)} s of wall time in seal() (${((sealMs * 1000) / SEALS).toFixed(1)} us each), ` +
        `the loop ${cpuS.toFixed(1)} s of CPU (load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores); no salt repeated`,
    );
  });
});

// ---- key files ----

/** Counts scrypt jobs started (libuv's SCRYPTREQUEST async resources) while `f` runs. */
async function scryptJobs(f: () => Promise<unknown>): Promise<{ jobs: number; result: unknown }> {
  let jobs = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === 'SCRYPTREQUEST') jobs++;
    },
  });
  hook.enable();
  try {
    const result = await f().catch((err: unknown) => err);
    return { jobs, result };
  } finally {
    hook.disable();
  }
}

describe('key files', () => {
  const master = newMasterKey();
  const password = Buffer.from('correct horse battery staple');
  const origin = { hostname: 'node-1', username: 'ops' };

  async function wrapped(): Promise<KeyFile> {
    return wrapMasterKey(master, password, 'k1', FAST_KDF, origin);
  }

  it('round-trips through the object and through its canonical bytes', async () => {
    const kf = await wrapped();
    expect(kf.version).toBe(1);
    expect(kf.kdf).toMatchObject({ name: 'scrypt', ...FAST_KDF });
    expect(Buffer.from(kf.kdf.salt, 'base64').length).toBe(32);
    expect(kf.hostname).toBe('node-1');
    expect((await unwrapMasterKey(kf, password, 'k1'))!.equals(master)).toBe(true);
    const bytes = serializeKeyFile(kf);
    expect(bytes.toString()).toMatch(/^\{"createdAt":"[^"]+","hostname":"node-1","kdf":\{"N":1024,"name":"scrypt","p":1,"r":8,"salt":"[^"]+"\},"key":"[^"]+","username":"ops","version":1\}$/);
    expect(parseKeyFile(bytes)).toEqual(kf);
    expect((await unwrapMasterKey(bytes, password, 'k1'))!.equals(master)).toBe(true);
    expect((await unwrapMasterKey(JSON.parse(bytes.toString()), password, 'k1'))!.equals(master)).toBe(true);
    // The wrapped key is the described envelope under scrypt's KEK with the key label.
    const kek = crypto.scryptSync(password, Buffer.from(kf.kdf.salt, 'base64'), 32, { N: 1024, r: 8, p: 1 });
    expect(refOpen(kek, keyLabel('k1', kf.kdf), Buffer.from(kf.key, 'base64')).equals(master)).toBe(true);
    expect(keyLabel('k1', kf.kdf)).toBe(`node-admin v3 key keys/k1 {"N":1024,"name":"scrypt","p":1,"r":8,"salt":"${kf.kdf.salt}"}`);
  });

  it('answers null for a wrong password or a key file moved to another key id', async () => {
    const kf = await wrapped();
    expect(await unwrapMasterKey(kf, Buffer.from('correct horse battery stapl'), 'k1')).toBeNull();
    expect(await unwrapMasterKey(kf, Buffer.from('x'), 'k1')).toBeNull();
    expect(await unwrapMasterKey(kf, password, 'k2')).toBeNull();
    expect((await unwrapMasterKey(kf, password, 'k1'))!.equals(master)).toBe(true); // control
  });

  it('never returns a key from an envelope with any bit flipped (null, or format for the magic)', async () => {
    const kf = await wrapped();
    const env = Buffer.from(kf.key, 'base64');
    for (let byte = 0; byte < env.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(env);
        bad[byte]! ^= 1 << bit;
        const result = await unwrapMasterKey({ ...kf, key: bad.toString('base64') }, password, 'k1').catch((err: unknown) => err);
        if (byte < 8 || (byte === 8 && !(bad[8]! >= 12 && bad[8]! <= 30))) expect((result as SealError).kind).toBe('format');
        else expect(result).toBeNull();
      }
    }
  });

  it('answers null when N, r, p or the salt are changed within bounds (they feed scrypt and the label)', async () => {
    const kf = await wrapped();
    const salt = Buffer.from(kf.kdf.salt, 'base64');
    salt[0]! ^= 1;
    for (const kdf of [
      { ...kf.kdf, N: 2048 },
      { ...kf.kdf, r: 9 },
      { ...kf.kdf, p: 2 },
      { ...kf.kdf, salt: salt.toString('base64') },
    ]) {
      expect(await unwrapMasterKey({ ...kf, kdf }, password, 'k1')).toBeNull();
    }
  });

  it('refuses malformed key files as format', async () => {
    const kf = await wrapped();
    const cases: [string, unknown][] = [
      ['not an object', 'text'],
      ['null', null],
      ['version 2', { ...kf, version: 2 }],
      ['another kdf', { ...kf, kdf: { ...kf.kdf, name: 'argon2id' } }],
      ['salt too short', { ...kf, kdf: { ...kf.kdf, salt: crypto.randomBytes(31).toString('base64') } }],
      ['salt not base64', { ...kf, kdf: { ...kf.kdf, salt: '!'.repeat(44) } }],
      ['key not canonical base64', { ...kf, key: `${kf.key.slice(0, -2)}` }],
      ['key too long', { ...kf, key: Buffer.concat([Buffer.from(kf.key, 'base64'), Buffer.of(0)]).toString('base64') }],
      ['unknown field', { ...kf, comment: 'x' }],
      ['unknown kdf field', { ...kf, kdf: { ...kf.kdf, dkLen: 64 } }],
      ['control character in hostname', { ...kf, hostname: 'a\u001b[2Jb' }],
      ['createdAt not a time', { ...kf, createdAt: 'yesterday' }],
      ['missing key', { ...kf, key: undefined }],
    ];
    for (const [what, value] of cases) {
      const { jobs, result } = await scryptJobs(() => unwrapMasterKey(value, password, 'k1'));
      expect(result, what).toBeInstanceOf(SealError);
      expect((result as SealError).kind, what).toBe('format');
      expect(jobs, what).toBe(0);
    }
    expect((caught(() => parseKeyFile(Buffer.from('{'))) as SealError).kind).toBe('format');
    expect((caught(() => parseKeyFile(Buffer.from([0xff, 0xfe, 0x7b, 0x7d]))) as SealError).kind).toBe('format');
    expect((caught(() => parseKeyFile(Buffer.alloc(70_000, 0x20))) as SealError).kind).toBe('format');
    expect(parseKeyFile(serializeKeyFile(kf))).toEqual(kf); // control: the untouched file parses
  });

  it('refuses out-of-bounds scrypt parameters before any scrypt runs', async () => {
    const kf = await wrapped();
    const control = await scryptJobs(() => unwrapMasterKey(kf, password, 'k1'));
    expect(control.jobs).toBe(1); // the hook sees scrypt when it runs
    expect(Buffer.isBuffer(control.result)).toBe(true);
    const bad: Record<string, unknown>[] = [
      { N: 2 ** 21 },
      { N: 2 ** 9 },
      { N: 3000 },
      { N: 2 ** 30 },
      { N: '1024' },
      { N: 2 ** 20, r: 9 }, // 128*N*r*p above 1 GiB
      { N: 2 ** 16, r: 16, p: 16 },
      { r: 0 },
      { r: 33 },
      { r: 1.5 },
      { p: 0 },
      { p: 17 },
      { p: -1 },
    ];
    for (const change of bad) {
      const { jobs, result } = await scryptJobs(() => unwrapMasterKey({ ...kf, kdf: { ...kf.kdf, ...change } }, password, 'k1'));
      expect((result as SealError).kind, JSON.stringify(change)).toBe('format');
      expect(jobs, JSON.stringify(change)).toBe(0);
    }
    // The bound itself is allowed (1 GiB exactly): shown without running it.
    expect(() => parseKeyFile(serializeKeyFile({ ...kf, kdf: { ...kf.kdf, N: 2 ** 20, r: 8, p: 1 } }))).not.toThrow();
  });

  it('refuses to wrap with a bad cost, an empty password or a bad key id', async () => {
    for (const cost of [{ N: 1000, r: 8, p: 1 }, { N: 2 ** 21, r: 8, p: 1 }, { N: 2 ** 16, r: 0, p: 1 }]) {
      expect(((await caughtAsync(() => wrapMasterKey(master, password, 'k1', cost))) as AdminError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
    }
    expect(((await caughtAsync(() => wrapMasterKey(master, Buffer.alloc(0), 'k1', FAST_KDF))) as AdminError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
    for (const id of ['', 'K1', 'a/b', 'a b', 'x'.repeat(129)]) {
      expect(((await caughtAsync(() => wrapMasterKey(master, password, id, FAST_KDF))) as AdminError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
    }
    const kf = await wrapped();
    expect(((await caughtAsync(() => unwrapMasterKey(kf, password, 'a/b'))) as SealError).kind).toBe('format');
  });

  it('leaves createdAt, hostname and username unauthenticated (informational only)', async () => {
    const kf = await wrapped();
    const changed = { ...kf, createdAt: '2000-01-01T00:00:00.000Z', hostname: 'elsewhere', username: 'someone' };
    expect((await unwrapMasterKey(changed, password, 'k1'))!.equals(master)).toBe(true);
  });

  it(`unwraps at the default cost N=2^${Math.log2(DEFAULT_KDF_COST.N)}, r=${DEFAULT_KDF_COST.r}, p=${DEFAULT_KDF_COST.p} (prints the time)`, async () => {
    const kf = await wrapMasterKey(master, password, 'k1');
    expect(kf.kdf).toMatchObject(DEFAULT_KDF_COST);
    const times: string[] = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      const cpu = process.cpuUsage();
      expect((await unwrapMasterKey(kf, password, 'k1'))!.equals(master)).toBe(true);
      const c = process.cpuUsage(cpu);
      times.push(`${((performance.now() - t) / 1000).toFixed(2)} s (CPU ${((c.user + c.system) / 1e6).toFixed(2)} s)`);
    }
    console.log(`scrypt unwrap at the default cost: ${times.join(', ')}; load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores`);
  });
});
