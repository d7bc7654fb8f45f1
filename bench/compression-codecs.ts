import { createRequire } from 'node:module';
import zlib from 'node:zlib';

/**
 * The compression benchmark's candidates, each a synchronous one-shot compress and decompress (what a
 * worker thread would run): deflate (raw) and brotli from node:zlib on every Node; zstd from node:zlib
 * where the running Node has it (22.15 and later), and from an npm binding when one is installed
 * (`npm install --no-save @toondepauw/node-zstd@2.0.0`: N-API, a prebuilt binary inside a registry
 * package, no compiler and no download at install).
 */

export interface Codec {
  name: string;
  /** Where it comes from: node:zlib, or the npm package. */
  source: string;
  compress(data: Buffer): Buffer;
  decompress(body: Buffer, size: number): Buffer;
}

/** brotli's window: 1 MiB covers a whole blob; a segment longer than that gets 4 MiB (brotli's default). */
export function brotliWindow(size: number): number {
  return size <= 1 << 20 ? 20 : 22;
}

export function brotli(quality: number): Codec {
  return {
    name: `brotli q${quality}`,
    source: 'node:zlib',
    compress: (data) =>
      zlib.brotliCompressSync(data, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: quality,
          [zlib.constants.BROTLI_PARAM_LGWIN]: brotliWindow(data.length),
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
        },
      }),
    decompress: (body, size) => zlib.brotliDecompressSync(body, { maxOutputLength: Math.max(1, size) }),
  };
}

export function deflateRaw(level: number): Codec {
  return {
    name: `deflate-raw ${level}`,
    source: 'node:zlib',
    compress: (data) => zlib.deflateRawSync(data, { level }),
    decompress: (body, size) => zlib.inflateRawSync(body, { maxOutputLength: Math.max(1, size) }),
  };
}

interface ZlibWithZstd {
  zstdCompressSync(data: Buffer, options: { params: Record<number, number> }): Buffer;
  zstdDecompressSync(data: Buffer, options: { maxOutputLength: number }): Buffer;
  constants: { ZSTD_c_compressionLevel: number };
}

interface ZstdBinding {
  Encoder: new (level: number) => { encodeSync(data: Buffer): Buffer };
  Decoder: new () => { decodeSync(data: Buffer): Buffer };
}

export const ZSTD_BINDING = '@toondepauw/node-zstd';

/** zstd at `level` from every source this process has: node:zlib's, the binding's, or none. */
export function zstd(level: number): Codec[] {
  const out: Codec[] = [];
  const z = zlib as unknown as Partial<ZlibWithZstd>;
  if (typeof z.zstdCompressSync === 'function' && typeof z.zstdDecompressSync === 'function' && z.constants) {
    const { zstdCompressSync, zstdDecompressSync } = z as ZlibWithZstd;
    const param = (zlib.constants as unknown as ZlibWithZstd['constants']).ZSTD_c_compressionLevel;
    out.push({
      name: `zstd ${level}`,
      source: 'node:zlib',
      compress: (data) => zstdCompressSync(data, { params: { [param]: level } }),
      decompress: (body, size) => zstdDecompressSync(body, { maxOutputLength: Math.max(1, size) }),
    });
  }
  const binding = loadBinding();
  if (binding) {
    const encoder = new binding.Encoder(level);
    const decoder = new binding.Decoder();
    out.push({ name: `zstd ${level}`, source: ZSTD_BINDING, compress: (data) => encoder.encodeSync(data), decompress: (body) => decoder.decodeSync(body) });
  }
  return out;
}

let binding: ZstdBinding | null | undefined;
function loadBinding(): ZstdBinding | null {
  if (binding === undefined) {
    try {
      binding = createRequire(import.meta.url)(ZSTD_BINDING) as ZstdBinding;
    } catch {
      binding = null;
    }
  }
  return binding;
}

export function zstdSources(): string {
  const z = zlib as unknown as Partial<ZlibWithZstd>;
  const sources = [typeof z.zstdCompressSync === 'function' ? 'node:zlib' : null, loadBinding() ? ZSTD_BINDING : null].filter(Boolean);
  return sources.length > 0 ? sources.join(' and ') : `none (node:zlib has zstd from Node 22.15; ${ZSTD_BINDING} is not installed)`;
}

export function candidates(): Codec[] {
  return [deflateRaw(1), deflateRaw(6), brotli(1), brotli(3), brotli(5), ...zstd(1), ...zstd(3)];
}
