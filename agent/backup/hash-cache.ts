import fs from 'node:fs';
import path from 'node:path';
import fsp from 'node:fs/promises';
import { writeFileAtomic } from '../fs/durable-fs.js';

/**
 * What we hashed before, keyed by (device, inode, size, mtime in ns). Checkpoints hard-link the same
 * table inode again and again, and LevelDB never writes a table after it is named in the MANIFEST, so a
 * hit means the file's chunks are known without reading a byte of it. Copied files (WAL, MANIFEST)
 * are new inodes in every checkpoint and are always read.
 *
 * Entries not used for MAX_IDLE_MS are dropped on save, which bounds the file as tables come and go.
 */
const MAX_IDLE_MS = 14 * 86_400_000;

interface Entry {
  chunks: string[];
  usedAt: number;
}

/** What identifies a file's content without reading it (the fields of a `stat` with `bigint: true`). */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
}

export class HashCache {
  private readonly entries: Map<string, Entry>;

  private constructor(
    private readonly file: string | null,
    entries: Map<string, Entry>,
  ) {
    this.entries = entries;
  }

  /** Loads the cache file; a missing or unreadable one is an empty cache (it is only a cache). */
  static load(file: string | null): HashCache {
    const entries = new Map<string, Entry>();
    if (file) {
      try {
        const data = JSON.parse(fs.readFileSync(file, 'utf8')) as { version: number; entries: [string, Entry][] };
        if (data.version === 1) for (const [k, v] of data.entries) entries.set(k, v);
      } catch {
        // start empty
      }
    }
    return new HashCache(file, entries);
  }

  static key(st: FileIdentity): string {
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
  }

  get(st: FileIdentity): string[] | undefined {
    const e = this.entries.get(HashCache.key(st));
    if (e) e.usedAt = Date.now();
    return e?.chunks;
  }

  set(st: FileIdentity, chunks: string[]): void {
    this.entries.set(HashCache.key(st), { chunks, usedAt: Date.now() });
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Writes the cache file atomically (temp file, fsync, rename, fsync of the directory), without
   * blocking the event loop on the disk: the agent runs inside a node that keeps serving.
   */
  async save(): Promise<void> {
    if (!this.file) return;
    const cutoff = Date.now() - MAX_IDLE_MS;
    for (const [k, e] of this.entries) if (e.usedAt < cutoff) this.entries.delete(k);
    await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: 0o750 });
    await writeFileAtomic(this.file, JSON.stringify({ version: 1, entries: [...this.entries] }));
  }
}
