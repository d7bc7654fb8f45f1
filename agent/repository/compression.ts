import zlib from 'node:zlib';
import { AdminError, ErrorCodes } from '../../shared/errors.js';

/**
 * Compression of what the repository stores, before it is encrypted (docs/FORMAT.md). A stored
 * plaintext is one mode byte, then a body:
 *
 *   mode 0 (none)    the data itself
 *   mode 1 (brotli)  frames, back to back, each: compressed length (u32 LE), raw length (u32 LE; its top
 *                    bit set on the last frame), then one complete brotli stream of exactly that many
 *                    bytes that inflates to exactly the raw length. Every frame holds FRAME_SIZE raw
 *                    bytes but the last, which holds 1 to FRAME_SIZE; a body has at least one frame,
 *                    and nothing after its last. So a body cut anywhere, even between frames, is refused
 *                    on its own, whatever the layer around it checks.
 *   mode 2 (zstd)    reserved, never written: zstd is in node:zlib only from Node 22.15 (and there still
 *                    experimental), and Node 20 must read every repository.
 *
 * Why brotli, quality 1 (README, "Compression"; bench/compression-bench.ts measures it): it is in
 * node:zlib on every supported Node; on a node's log and JSON it stores about a fifth of the raw bytes,
 * within two points of zstd and ahead of deflate, at a few hundred MB/s of one core, and it gives up on
 * random data at about 1 GB/s. Higher qualities gain a point for several times the CPU.
 *
 * Why frames: node:zlib decompresses synchronously only in one call (its incremental API is
 * asynchronous, on libuv's pool, which the database shares), and a restore must stream a 32 MiB segment
 * without holding it whole. Independent 1 MiB frames decode one at a time, synchronously, in bounded
 * memory, for a tenth of a point of ratio (a merged 32 MiB segment: 19.3 % of its bytes in one
 * stream, 19.4 % in frames). A blob (CHUNK_SIZE) is one frame.
 */

/** The mode byte that precedes a stored plaintext inside its envelope (FORMAT.md). Never renumber. */
export const Compression = { none: 0, brotli: 1, zstd: 2 } as const;
export type CompressionMode = (typeof Compression)[keyof typeof Compression];

/** What a writer asks for: 'never' (tables: already compressed), 'try' (compress, keep only if it saves enough). */
export type CompressionPolicy = 'never' | 'try';

/**
 * A compressed body is kept only when it saves at least this share of the bytes. What a repository
 * stores either compresses (a node's log about 80 % saved, MANIFEST and JSON about 55 %, objects of a
 * few hundred bytes about 18 %) or does not (random values: under 1 %): this only has to tell the two
 * apart, and keeps no body whose decompression at restore would buy less than 64 KiB a MiB.
 */
export const MIN_SAVING = 1 / 16;

/** Raw bytes per frame of a brotli body: a blob (CHUNK_SIZE) is one frame. */
export const FRAME_SIZE = 1024 * 1024;
const FRAME_HEADER = 8;
const LAST_FRAME = 0x8000_0000;
/**
 * The longest compressed frame accepted: brotli grows incompressible input by at most a few bytes per
 * 16 KiB (its bound for 1 MiB is 262 bytes more; quality 1 on 1 MiB of random bytes makes 5), so a
 * valid frame is never near this. A reader buffers at
 * most one frame: this bounds its memory whatever a header claims.
 */
const MAX_FRAME_BODY = FRAME_SIZE + FRAME_SIZE / 64;

const BROTLI_QUALITY = 1;
/** A 1 MiB window: a frame's whole length. */
const BROTLI_LGWIN = 20;

/**
 * The envelope's plaintext for `data`: [mode byte, body] pieces (no concatenation: the caller feeds them to a cipher).
 * With 'try', compressed and kept only if it saves at least MIN_SAVING of the bytes, else mode none + data itself.
 * Synchronous (it runs in a worker thread). Deterministic output is NOT required.
 */
export function compressPlaintext(data: Buffer, policy: CompressionPolicy): { mode: CompressionMode; pieces: Buffer[] } {
  if (policy !== 'try' && policy !== 'never') throw new AdminError(ErrorCodes.INTERNAL, `unknown compression policy ${JSON.stringify(policy)}`);
  const stored = () => ({ mode: Compression.none, pieces: [Buffer.of(Compression.none), data] });
  if (policy === 'never' || data.length === 0) return stored();
  // Kept only at this size or less (mode byte and frame headers included).
  const budget = Math.floor(data.length * (1 - MIN_SAVING));
  const pieces = [Buffer.of(Compression.brotli)];
  let size = 1;
  for (let at = 0; at < data.length; at += FRAME_SIZE) {
    const raw = data.subarray(at, Math.min(data.length, at + FRAME_SIZE));
    const body = zlib.brotliCompressSync(raw, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY,
        [zlib.constants.BROTLI_PARAM_LGWIN]: BROTLI_LGWIN,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
      },
    });
    const header = Buffer.allocUnsafe(FRAME_HEADER);
    header.writeUInt32LE(body.length, 0);
    header.writeUInt32LE((raw.length | (at + raw.length === data.length ? LAST_FRAME : 0)) >>> 0, 4);
    pieces.push(header, body);
    size += FRAME_HEADER + body.length;
    if (size > budget) return stored(); // cannot pay any more: the rest would only add to it
  }
  return { mode: Compression.brotli, pieces };
}

/**
 * The original bytes from an envelope's plaintext (mode byte + body). `maxLength`: the most the caller can
 * expect (a chunk size, an object's limit): a body that would inflate past it is refused (decompression bomb),
 * as is an unknown mode byte. Throws AdminError CORRUPT with a one-line message (the caller prefixes the object's name).
 */
export function decompressPlaintext(plaintext: Buffer, maxLength: number): Buffer {
  if (plaintext.length === 0) throw corrupt('no compression mode byte: the plaintext is empty');
  const decompressor = createDecompressor(plaintext[0]!, maxLength);
  const out = [...decompressor.push(plaintext.subarray(1)), ...decompressor.end()];
  // Mode none, or one frame: the bytes as they are, no copy.
  return out.length === 1 ? out[0]! : Buffer.concat(out);
}

/** Which policy a file of a LevelDB checkpoint gets: 'never' for tables (.ldb, .sst), 'try' for the rest. */
export function policyForFile(name: string): CompressionPolicy {
  return /\.(ldb|sst)$/.test(name) ? 'never' : 'try';
}

/**
 * A body decompressed as it streams in (a log segment, opened 64 KiB at a time): `push` each piece of
 * the body in order (the mode byte already taken off and given to createDecompressor), and use what it
 * returns; `end` once the body is complete. Throws AdminError CORRUPT (one line, no object name) as soon
 * as the body is wrong: a frame header out of bounds, a frame that does not inflate to its stated
 * length, output past maxLength, or (at end) a body cut short. Holds at most one frame, so its memory is
 * bounded whatever the body says. Not usable after it threw or ended.
 */
export interface PlaintextDecompressor {
  push(piece: Buffer): Buffer[];
  end(): Buffer[];
}

/**
 * A streaming decompressor for a body of `mode` (the envelope's first plaintext byte). An unknown or
 * reserved mode is refused here, before any body is read.
 */
export function createDecompressor(mode: number, maxLength: number): PlaintextDecompressor {
  if (!Number.isSafeInteger(maxLength) || maxLength < 0) throw new AdminError(ErrorCodes.INTERNAL, `bad maxLength ${maxLength}`);
  switch (mode) {
    case Compression.none:
      return new StoredReader(maxLength);
    case Compression.brotli:
      return new BrotliFrameReader(maxLength);
    case Compression.zstd:
      throw corrupt('compression mode 2 (zstd) is reserved: this version never writes it and cannot read it');
    default:
      throw corrupt(`unknown compression mode ${mode}`);
  }
}

class StoredReader implements PlaintextDecompressor {
  private length = 0;
  private done = false;
  constructor(private readonly maxLength: number) {}

  push(piece: Buffer): Buffer[] {
    usable(this.done);
    this.length += piece.length;
    if (this.length > this.maxLength) {
      this.done = true;
      throw corrupt(`the stored body is longer than the ${this.maxLength} bytes expected`);
    }
    return [piece];
  }

  end(): Buffer[] {
    usable(this.done);
    this.done = true;
    return [];
  }
}

class BrotliFrameReader implements PlaintextDecompressor {
  /** Pieces not yet parsed, `buffered` bytes in all: joined only once a whole header or frame is in. */
  private pending: Buffer[] = [];
  private buffered = 0;
  /** The frame whose header was read, awaiting its body. */
  private frame: { body: number; raw: number } | null = null;
  private frames = 0;
  private produced = 0;
  private lastSeen = false;
  private done = false;

  constructor(private readonly maxLength: number) {}

  push(piece: Buffer): Buffer[] {
    usable(this.done);
    if (piece.length === 0) return [];
    this.pending.push(piece);
    this.buffered += piece.length;
    const out: Buffer[] = [];
    try {
      this.refuseAfterLast(this.buffered);
      if (this.buffered < this.needed()) return out;
      let data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.buffered);
      while (data.length >= this.needed()) {
        if (this.frame === null) {
          this.frame = this.header(data);
          data = data.subarray(FRAME_HEADER);
        } else {
          out.push(this.inflate(data.subarray(0, this.frame.body), this.frame.raw));
          data = data.subarray(this.frame.body);
          this.frame = null;
          this.refuseAfterLast(data.length);
        }
      }
      this.pending = data.length > 0 ? [data] : [];
      this.buffered = data.length;
    } catch (err) {
      this.done = true;
      throw err;
    }
    return out;
  }

  end(): Buffer[] {
    usable(this.done);
    this.done = true;
    if (this.frame !== null || this.buffered > 0) {
      const what = this.frame === null ? 'header' : 'compressed';
      throw corrupt(`the compressed body is cut short: frame ${this.frames + 1} has ${this.buffered} of its ${this.needed()} ${what} bytes`);
    }
    if (this.frames === 0) throw corrupt('the compressed body holds no frame');
    if (!this.lastSeen) throw corrupt(`the compressed body is cut short: it ends after frame ${this.frames}, which is not marked last`);
    return [];
  }

  private refuseAfterLast(bytes: number): void {
    if (this.lastSeen && this.frame === null && bytes > 0) throw corrupt(`${bytes} bytes follow the last frame (frame ${this.frames})`);
  }

  private needed(): number {
    return this.frame === null ? FRAME_HEADER : this.frame.body;
  }

  private header(data: Buffer): { body: number; raw: number } {
    const n = this.frames + 1;
    const body = data.readUInt32LE(0);
    const field = data.readUInt32LE(4);
    const last = (field & LAST_FRAME) !== 0;
    const raw = field & ~LAST_FRAME;
    if (raw === 0 || raw > FRAME_SIZE) throw corrupt(`frame ${n} claims ${raw} raw bytes, not 1 to ${FRAME_SIZE}`);
    if (!last && raw !== FRAME_SIZE) throw corrupt(`frame ${n} holds ${raw} raw bytes and is not the last: every frame but the last holds ${FRAME_SIZE}`);
    if (body === 0 || body > MAX_FRAME_BODY) throw corrupt(`frame ${n} claims ${body} compressed bytes, not 1 to ${MAX_FRAME_BODY}`);
    if (this.produced + raw > this.maxLength) throw corrupt(`the compressed body inflates past the ${this.maxLength} bytes expected (frame ${n})`);
    this.lastSeen = last;
    return { body, raw };
  }

  private inflate(body: Buffer, raw: number): Buffer {
    const n = ++this.frames;
    let result: { buffer: Buffer; engine: { bytesWritten: number } };
    try {
      // `info` gives the input the stream consumed: bytes after its end are refused, not ignored.
      const options = { maxOutputLength: raw, chunkSize: Math.max(64, raw), info: true };
      result = zlib.brotliDecompressSync(body, options) as unknown as typeof result;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ERR_BUFFER_TOO_LARGE') throw corrupt(`frame ${n} inflates past the ${raw} bytes its header says`);
      throw corrupt(`frame ${n} does not decompress: ${e.message}`);
    }
    if (result.buffer.length !== raw) throw corrupt(`frame ${n} inflates to ${result.buffer.length} bytes, its header says ${raw}`);
    if (result.engine.bytesWritten !== body.length) throw corrupt(`frame ${n} has ${body.length - result.engine.bytesWritten} bytes after its compressed stream`);
    this.produced += raw;
    return result.buffer;
  }
}

function usable(done: boolean): void {
  if (done) throw new AdminError(ErrorCodes.INTERNAL, 'decompressor used after it ended or failed');
}

function corrupt(message: string): AdminError {
  return new AdminError(ErrorCodes.CORRUPT, message);
}
