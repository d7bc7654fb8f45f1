// CRC-32C (Castagnoli), as LevelDB's util/crc32c.cc computes it, and LevelDB's masking of stored CRCs.

/**
 * Slicing-by-8 tables (LevelDB's portable path does the same with 4 bytes at a time): TABLES[0] is the
 * byte-at-a-time table; TABLES[k][b] is the CRC of byte b followed by k zero bytes, so eight bytes fold
 * in with eight lookups and no data-dependent loop between them. Measured on 72 MB, Node 20: 1.6-2.2×
 * the byte-at-a-time loop; the log archive reads every byte of the node's log through it, and a
 * checkpoint's verification every byte of its tables.
 */
const TABLES = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = t[0]!;
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t0[i] = c >>> 0;
  }
  for (let k = 1; k < 8; k++) {
    const prev = t[k - 1]!;
    const cur = t[k]!;
    for (let i = 0; i < 256; i++) cur[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!;
  }
  return t as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
})();
const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;

/** The CRC-32C of data[start, end), continuing from `init` (the CRC of what came before). */
export function crc32c(data: Uint8Array, start = 0, end = data.length, init = 0): number {
  let crc = ~init >>> 0;
  let i = start;
  for (const whole = end - ((end - start) & 7); i < whole; i += 8) {
    const low = (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24)) ^ crc;
    crc = t7[low & 0xff]! ^ t6[(low >>> 8) & 0xff]! ^ t5[(low >>> 16) & 0xff]! ^ t4[low >>> 24]! ^ t3[data[i + 4]!]! ^ t2[data[i + 5]!]! ^ t1[data[i + 6]!]! ^ t0[data[i + 7]!]!;
  }
  for (; i < end; i++) crc = t0[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

const MASK_DELTA = 0xa282ead8;

/** LevelDB stores masked CRCs so that a CRC of data that itself holds CRCs stays well distributed. */
export function unmaskCrc(masked: number): number {
  const rot = (masked - MASK_DELTA) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}

export function maskCrc(crc: number): number {
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + MASK_DELTA) >>> 0;
}
