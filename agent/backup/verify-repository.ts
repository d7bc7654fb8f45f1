import type { Repository } from '../repository/repository.js';
import { MAX_TREE_BYTES } from '../repository/repository.js';
import { packName, type Snapshot, type Tree } from '../repository/format.js';
import { toAdminError } from '../../shared/errors.js';
import type { BackupVerifyReport } from '../../shared/api.js';

/**
 * The log archive's part of a verify (agent/log-archive/archive-verify.ts, handed in by the caller:
 * backups never import the archive): its chains, and with readData every segment read back.
 */
export type ArchiveVerifier = (repo: Repository, options: { readData: boolean }) => Promise<{ segments: number; bytesRead: number; errors: string[] }>;

/**
 * Checks a repository (or one backup in it). Structure: every snapshot's tree and chunks are indexed,
 * every indexed pack is stored with the indexed size. With readData: every referenced pack is
 * downloaded and every blob in it re-hashed (and the pack's own hash and header checked). The whole
 * repository (no `id`) with `logArchive`: the log archive too.
 */
export async function verifyRepository(
  repo: Repository,
  options: { id?: string; readData?: boolean; logArchive?: ArchiveVerifier } = {},
): Promise<BackupVerifyReport> {
  const errors: string[] = [];
  await repo.loadIndex();
  const stored = new Map<string, number>();
  for await (const obj of repo.list('data/')) stored.set(obj.name, obj.size);

  const snapshots: Snapshot[] = options.id ? [await repo.readSnapshot(options.id)] : await repo.listSnapshots();
  const referenced = new Set<string>();
  const trees = new Set<string>();
  for (const s of snapshots) {
    referenced.add(s.tree);
    trees.add(s.tree);
    let tree: Tree;
    try {
      tree = JSON.parse((await repo.readBlob(s.tree, 'tree')).toString('utf8')) as Tree;
    } catch (err) {
      errors.push(`backup ${s.id}: tree unreadable: ${toAdminError(err).message}`);
      continue;
    }
    for (const f of tree.files) {
      for (const c of f.chunks) {
        referenced.add(c);
        if (!repo.blobs.has(c)) errors.push(`backup ${s.id}: chunk ${c} of ${f.name} is in no index`);
      }
    }
  }
  const packsNeeded = new Set<string>();
  for (const id of referenced) {
    const loc = repo.blobs.get(id);
    if (loc) packsNeeded.add(loc.pack);
  }
  for (const pack of packsNeeded) {
    const name = packName(pack);
    const size = stored.get(name);
    const indexed = repo.packs.get(pack)?.size;
    if (size === undefined) errors.push(`object ${name} is missing (indexed in ${repo.packs.get(pack)?.index})`);
    else if (size !== indexed) errors.push(`object ${name} has ${size} bytes, the index says ${indexed}`);
  }

  let bytesRead = 0;
  const blobsByPack = new Map<string, [string, { offset: number; length: number }][]>();
  for (const [id, loc] of repo.blobs) {
    const list = blobsByPack.get(loc.pack) ?? [];
    list.push([id, loc]);
    blobsByPack.set(loc.pack, list);
  }
  if (options.readData) {
    for (const pack of [...packsNeeded].sort()) {
      const name = packName(pack);
      if (!stored.has(name)) continue;
      let data: Buffer;
      try {
        data = await repo.getPack(pack);
      } catch (err) {
        errors.push(`object ${name} unreadable: ${toAdminError(err).message}`);
        continue;
      }
      bytesRead += data.length;
      try {
        repo.codec.readPackTail(pack, data);
      } catch (err) {
        errors.push(`object ${name} is damaged: ${(err as Error).message}`);
      }
      for (const [id, loc] of blobsByPack.get(pack) ?? []) {
        if (!referenced.has(id)) continue;
        const blob = data.subarray(loc.offset, loc.offset + loc.length);
        const type = trees.has(id) ? 'tree' : 'data';
        const opened = blob.length === loc.length ? await repo.codec.openBlob(type, id, blob, type === 'tree' ? MAX_TREE_BYTES : repo.config.chunkSize).then(() => null, (err: unknown) => err) : 'truncated';
        if (opened !== null) errors.push(`object ${name} is damaged: blob ${id} at offset ${loc.offset}: ${opened instanceof Error ? opened.message : String(opened)}`);
      }
    }
  }
  let segments = 0;
  if (options.logArchive && options.id === undefined) {
    const archive = await options.logArchive(repo, { readData: options.readData === true });
    segments = archive.segments;
    bytesRead += archive.bytesRead;
    errors.push(...archive.errors);
  }
  return { ok: errors.length === 0, snapshots: snapshots.length, blobs: referenced.size, packs: packsNeeded.size, segments, bytesRead, errors };
}
