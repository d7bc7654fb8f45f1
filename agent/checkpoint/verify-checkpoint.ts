import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ClassicLevel } from 'classic-level';
import type { VerifyReport } from '../../shared/api.js';
import { ErrorCodes, toAdminError } from '../../shared/errors.js';

/** The file work verification needs: done in the agent's worker, or directly by the CLI. */
export interface VerifyFs {
  /** Makes `dst` an openable, throwaway copy of the checkpoint database `src` (checkpoint-dir.ts cloneDbSync). */
  clone(src: string, dst: string): Promise<void>;
  removeTree(p: string): Promise<void>;
  /** Checks every checksum of a closed database directory (leveldb/check-db-files.ts); throws CORRUPT. */
  checkFiles(dir: string): Promise<unknown>;
}

/**
 * Verifies a checkpoint: first every checksum in its files (table blocks, MANIFEST and WAL records:
 * classic-level cannot be asked to verify checksums on reads), then by opening a throwaway clone of it with classic-level (the checkpoint itself
 * must stay pristine: opening a database rewrites its MANIFEST, turns its WAL into a table and may
 * compact) and reading every entry back. A missing table, a bad MANIFEST or WAL record, or a block
 * that does not decode fails the open or the read. The clone lives in `scratchDir` (a `.clone-*`
 * directory there, removed afterwards and by the agent's start-up cleaning if we die).
 */
export async function verifyCheckpoint(
  id: string,
  checkpointDb: string,
  scratchDir: string,
  fsOps: VerifyFs,
): Promise<VerifyReport> {
  const started = Date.now();
  const clone = path.join(scratchDir, `.clone-${randomBytes(6).toString('hex')}`);
  let entries = 0;
  try {
    await fsOps.checkFiles(checkpointDb);
    await fsOps.clone(checkpointDb, clone);
    const db = new ClassicLevel<Buffer, Buffer>(clone, { createIfMissing: false, keyEncoding: 'buffer', valueEncoding: 'buffer' });
    try {
      await db.open();
      const it = db.iterator({ fillCache: false });
      try {
        for (;;) {
          const batch = await it.nextv(1000);
          if (batch.length === 0) break;
          entries += batch.length;
        }
      } finally {
        await it.close();
      }
    } finally {
      await db.close().catch(() => {});
    }
    return { id, ok: true, entries, durationMs: Date.now() - started };
  } catch (err) {
    const e = toAdminError(err);
    if (e.code === ErrorCodes.CANCELLED) throw e; // stopped, not damaged: no verdict on the checkpoint
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    const message = cause && !e.message.includes(cause) ? `${e.message}: ${cause}` : e.message;
    return { id, ok: false, entries, durationMs: Date.now() - started, error: { code: 'CORRUPT', message } };
  } finally {
    await fsOps.removeTree(clone).catch(() => {});
  }
}
