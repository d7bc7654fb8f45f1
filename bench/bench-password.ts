import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomicSync } from '../agent/fs/durable-fs.js';

/**
 * The benchmarks' repository password: one file in the bench directory, made once (32 random bytes in
 * hex, mode 0600) and given to every process that opens an encrypted repository — backup-run.ts, the
 * example node (--backup-password-file), the CLI (--password-file), embedded agents
 * (`backup.password.file`) — as an operator gives theirs. Nothing of value is behind it: the bench's
 * repositories are deleted when it ends.
 */
export function benchPasswordFile(benchDir = defaultBenchDir()): string {
  const file = path.join(benchDir, 'bench-password');
  if (!fs.existsSync(file)) {
    fs.mkdirSync(benchDir, { recursive: true });
    writeFileAtomicSync(file, `${randomBytes(32).toString('hex')}\n`, 0o600);
  }
  return file;
}

/** BENCH_DIR, else <repo>/.scratch/bench: where every bench keeps its data. */
export function defaultBenchDir(): string {
  return path.resolve(process.env.BENCH_DIR || path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '.scratch', 'bench'));
}
