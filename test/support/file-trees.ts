import fs from 'node:fs';
import path from 'node:path';

/** Every file under `d`, by path relative to it, with its bytes. */
export function files(d: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(d, rel), { withFileTypes: true })) {
      const p = path.join(rel, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(p, fs.readFileSync(path.join(d, p)));
    }
  };
  walk('');
  return out;
}

/** Null when the two trees hold the same files with the same bytes, else the first difference. */
export function treeDifference(a: Map<string, Buffer>, b: Map<string, Buffer>): string | null {
  for (const n of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(n);
    const y = b.get(n);
    if (!x || !y) return `${n} only on one side`;
    if (!x.equals(y)) return `${n} differs`;
  }
  return null;
}
