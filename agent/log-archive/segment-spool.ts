import fs from 'node:fs';
import path from 'node:path';
import { mkdirDurable, writeFileAtomic } from '../fs/durable-fs.js';
import { decodeSegment, parseWalName, segmentName, sha256Here, WAL_PREFIX, type SegmentInfo, type Sha256 } from './segment.js';

/** A segment in the spool: what it holds, its file, its size. */
export interface SpooledSegment {
  info: SegmentInfo;
  file: string;
  bytes: number;
}

/**
 * The log archive's spool on disk: finished segments waiting for the storage, one file each, exactly the
 * bytes that will be stored, named after the stored name (so a listing sorts each timeline oldest
 * first). A file is whole or absent: written atomically (temp, fsync, rename, fsync dir), and checked
 * against its digest when read back, so a file the disk damaged is never stored as if whole.
 */
export class SegmentSpool {
  /** `sha256` checks what is read back (the agent's runs off its event loop). */
  constructor(
    readonly dir: string,
    private readonly sha256: Sha256 = sha256Here,
  ) {}

  /** Writes one finished segment. Atomic. */
  async write(info: SegmentInfo, data: Buffer): Promise<SpooledSegment> {
    await mkdirDurable(this.dir);
    const file = path.join(this.dir, spoolFileName(info));
    await writeFileAtomic(file, data);
    return { info, file, bytes: data.length };
  }

  /** A spooled segment's bytes, checked (CORRUPT if they are not the segment its name says). */
  async read(s: { info: SegmentInfo; file: string }): Promise<Buffer> {
    const data = await fs.promises.readFile(s.file);
    await decodeSegment(s.file, s.info, data, this.sha256);
    return data;
  }

  async remove(s: { file: string }): Promise<void> {
    await fs.promises.rm(s.file, { force: true });
  }

  /**
   * What is in the directory (a previous run's leftovers), oldest first; a file whose name is not a
   * spooled segment's comes with `info` null. Empty when the directory does not exist.
   */
  async list(): Promise<{ file: string; info: SegmentInfo | null }[]> {
    let names: string[];
    try {
      names = (await fs.promises.readdir(this.dir)).filter((n) => n.endsWith('.seg')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names.map((n) => ({ file: path.join(this.dir, n), info: spoolInfo(n) }));
  }
}

/** A spooled segment's file name: its timeline, then its stored name's fields (sorts oldest first). */
function spoolFileName(info: SegmentInfo): string {
  return `${info.timeline}~${segmentName(info).slice(`${WAL_PREFIX}${info.timeline}/seg/`.length)}.seg`;
}

/** The segment a spool file name stands for, or null. */
function spoolInfo(name: string): SegmentInfo | null {
  const m = /^([^~/]+)~([^/]+)\.seg$/.exec(name);
  if (!m) return null;
  const parsed = parseWalName(`${WAL_PREFIX}${m[1]!}/seg/${m[2]!}`);
  return parsed?.kind === 'segment' ? parsed.segment : null;
}
