import fs from 'node:fs';
import path from 'node:path';
import { alignedBuffers, openDirect, readPages } from '../agent/fs/direct-io.js';

/**
 * A measure of what a full backup or a restore must do at the least: read every byte of a
 * directory once and write as many bytes once, durably. Both at the same time, each with `depth` 1 MiB
 * requests in flight, O_DIRECT (no page cache on either side), then an fsync: no hashing, no format, no
 * process start. One of the device's two measures: `cp -r` + `sync` (through the page cache, the kernel
 * copying) is the other, and the faster of the two in a round is the device's limit
 * (backup-bench-kit.ts deviceLimitSeconds): which one wins depends on the machine and the day.
 */

const MiB = 1024 * 1024;

export interface DeviceFloor {
  seconds: number;
  bytesRead: number;
  bytesWritten: number;
}

export async function measureDeviceFloor(dir: string, scratchFile: string, depth = 16): Promise<DeviceFloor> {
  const pieces: { file: string; offset: number; length: number }[] = [];
  for (const name of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, name);
    const st = fs.statSync(file);
    if (!st.isFile()) continue;
    for (let offset = 0; offset < st.size; offset += MiB) pieces.push({ file, offset, length: Math.min(MiB, st.size - offset) });
  }
  const total = pieces.reduce((s, p) => s + p.length, 0);
  const readBuffers = alignedBuffers(depth, MiB);
  const writeBuffers = alignedBuffers(depth, MiB);
  for (const b of writeBuffers) b.fill(0x5a);
  fs.rmSync(scratchFile, { force: true });
  const out = await openDirect(scratchFile, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  if (!out) throw new Error(`${path.dirname(scratchFile)} refuses O_DIRECT: no device floor here`);

  const started = performance.now();
  let bytesRead = 0;
  let bytesWritten = 0;
  try {
    let nextPiece = 0;
    const handles = new Map<string, Promise<fs.promises.FileHandle>>();
    const open = (file: string) => {
      let h = handles.get(file);
      if (!h) {
        h = openDirect(file, fs.constants.O_RDONLY).then((fh) => fh ?? fs.promises.open(file, 'r'));
        handles.set(file, h);
      }
      return h;
    };
    const reader = async (buf: Buffer) => {
      while (nextPiece < pieces.length) {
        const p = pieces[nextPiece++]!;
        const n = await readPages(await open(p.file), buf, p.offset, p.length);
        bytesRead += n; // not `bytesRead += await …`: that reads bytesRead before the await
      }
    };
    let nextWrite = 0;
    const writer = async (buf: Buffer) => {
      while (nextWrite < total) {
        const at = nextWrite;
        nextWrite += MiB;
        const { bytesWritten: n } = await out.write(buf, 0, MiB, at);
        bytesWritten += n;
      }
    };
    try {
      await Promise.all([...readBuffers.map(reader), ...writeBuffers.map(writer)]);
    } finally {
      await Promise.all([...handles.values()].map(async (h) => (await h).close()));
    }
    await out.sync();
  } finally {
    await out.close();
    fs.rmSync(scratchFile, { force: true });
  }
  if (bytesRead !== total) throw new Error(`device floor: read ${bytesRead} bytes of ${dir}, expected ${total}`);
  return { seconds: (performance.now() - started) / 1000, bytesRead, bytesWritten };
}
