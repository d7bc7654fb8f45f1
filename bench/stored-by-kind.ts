import type { Repository } from '../agent/repository/repository.js';
import type { Tree } from '../agent/repository/format.js';

/** A LevelDB file's kind, as the repository's compression policy sees it. */
export type FileKind = 'table' | 'log' | 'manifest' | 'other';

/** Raw bytes (the files) and stored bytes (their blobs as they lie in the packs) of one kind. */
export interface StoredBytes {
  files: number;
  raw: number;
  stored: number;
}

export function fileKind(name: string): FileKind {
  if (/\.(ldb|sst)$/.test(name)) return 'table';
  if (/\.log$/.test(name)) return 'log';
  if (/^MANIFEST-\d+$/.test(name)) return 'manifest';
  return 'other';
}

/**
 * What one backup's files became in the repository, by kind: the files' sizes against the sizes of
 * their blobs in the packs (the index's lengths: compressed where it paid, sealed, each with its 57
 * bytes of envelope; an unencrypted repository's are the raw chunks). A blob two files share (equal
 * chunks) is counted for each. Read from the repository itself (snapshot, tree, index), not computed.
 */
export async function storedByKind(repo: Repository, backupId: string): Promise<Record<FileKind, StoredBytes>> {
  if (repo.blobs.size === 0) await repo.loadIndex();
  const snapshot = await repo.readSnapshot(backupId);
  const tree = JSON.parse((await repo.readBlob(snapshot.tree, 'tree')).toString('utf8')) as Tree;
  const out: Record<FileKind, StoredBytes> = { table: zero(), log: zero(), manifest: zero(), other: zero() };
  for (const f of tree.files) {
    const s = out[fileKind(f.name)];
    s.files++;
    s.raw += f.size;
    for (const chunk of f.chunks) {
      const at = repo.blobs.get(chunk);
      if (!at) throw new Error(`blob ${chunk} of ${f.name} is not in the index`);
      s.stored += at.length;
    }
  }
  return out;
}

function zero(): StoredBytes {
  return { files: 0, raw: 0, stored: 0 };
}
