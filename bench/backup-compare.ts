import fs from 'node:fs';
import path from 'node:path';

/**
 * Checks for the backup benchmark: a restored directory against the checkpoint it came from (same file
 * names, same bytes: a fast wrong backup is worthless), and how many bytes a repository holds.
 */

export interface CompareResult {
  ok: boolean;
  files: number;
  bytes: number;
  /** What differs, at most a few lines. */
  problems: string[];
}

const BUF = 1 << 20;

/** Byte-for-byte comparison of the regular files directly in `expected` and `actual` (like cmp, per file). */
export function compareDirs(expected: string, actual: string): CompareResult {
  const problems: string[] = [];
  const list = (dir: string) =>
    fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => e.name)
      .sort();
  const want = list(expected);
  const got = list(actual);
  const gotSet = new Set(got);
  for (const n of want) if (!gotSet.has(n)) problems.push(`missing ${n}`);
  const wantSet = new Set(want);
  for (const n of got) if (!wantSet.has(n)) problems.push(`unexpected ${n}`);
  let files = 0;
  let bytes = 0;
  const a = Buffer.allocUnsafe(BUF);
  const b = Buffer.allocUnsafe(BUF);
  for (const name of want) {
    if (!gotSet.has(name)) continue;
    const fa = fs.openSync(path.join(expected, name), 'r');
    const fb = fs.openSync(path.join(actual, name), 'r');
    try {
      const sa = fs.fstatSync(fa).size;
      const sb = fs.fstatSync(fb).size;
      if (sa !== sb) {
        problems.push(`${name}: ${sb} bytes, expected ${sa}`);
        continue;
      }
      for (let pos = 0; pos < sa; pos += BUF) {
        const n = Math.min(BUF, sa - pos);
        readFully(fa, a, n, pos);
        readFully(fb, b, n, pos);
        if (a.compare(b, 0, n, 0, n) !== 0) {
          problems.push(`${name}: differs within bytes ${pos}..${pos + n}`);
          break;
        }
      }
      files++;
      bytes += sa;
    } finally {
      fs.closeSync(fa);
      fs.closeSync(fb);
    }
  }
  return { ok: problems.length === 0, files, bytes, problems: problems.slice(0, 5) };
}

function readFully(fd: number, buf: Buffer, length: number, position: number): void {
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, position + got);
    if (n === 0) throw new Error('file shrank while compared');
    got += n;
  }
}

/** Apparent size of every regular file under `dir` (0 when it does not exist). */
export function treeBytes(dir: string): number {
  let total = 0;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += treeBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

/** The directory under `root` (itself included) that holds a file named `marker`: restic restores full paths. */
export function findDirWith(root: string, marker: string): string | null {
  if (fs.existsSync(path.join(root, marker))) return root;
  for (const e of fs.readdirSync(root, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const found = findDirWith(path.join(root, e.name), marker);
    if (found) return found;
  }
  return null;
}
