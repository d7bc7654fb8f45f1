import type { Repository } from '../repository/repository.js';
import { MAX_TREE_BYTES } from '../repository/repository.js';
import { packName, type Snapshot, type Tree } from '../repository/format.js';
import { toAdminError } from '../../shared/errors.js';
import type { BackupVerifyReport } from '../../shared/api.js';
import { alignedBuffers, roundUpToAlign } from '../fs/direct-io.js';
import { mapLimit } from '../fs/map-limit.js';
import { BufferPool } from './pack-extents.js';

/** Packs of a `--read-data` verify held at once: one read while another's blobs are opened. */
const PACKS_AT_ONCE = 2;
/** Blobs of one pack opened at once (enough for every crypto thread of a pool). */
const OPENS_AT_ONCE = 4;

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
    repo.codec.warmUp();
    // One pack read while another's blobs are opened, and several of a pack's blobs opened at once (the
    // crypto threads in parallel), each into a scratch buffer of shared memory: nothing comes back from
    // a thread but a length. One pack, one blob at a time, a verify left a pool of two threads idle
    // while it read and waited for each blob in turn: slower than opening in the calling thread.
    const chunkSize = repo.config.chunkSize;
    const scratch = new BufferPool(alignedBuffers(PACKS_AT_ONCE * OPENS_AT_ONCE, roundUpToAlign(repo.codec.storedLength(chunkSize))));
    const perPack = await mapLimit([...packsNeeded].sort(), PACKS_AT_ONCE, async (pack) => {
      const found: string[] = [];
      const name = packName(pack);
      if (!stored.has(name)) return found;
      let data: Buffer;
      try {
        data = await repo.getPack(pack);
      } catch (err) {
        found.push(`object ${name} unreadable: ${toAdminError(err).message}`);
        return found;
      }
      bytesRead += data.length;
      try {
        repo.codec.readPackTail(pack, data);
      } catch (err) {
        found.push(`object ${name} is damaged: ${(err as Error).message}`);
      }
      const blobs = (blobsByPack.get(pack) ?? []).filter(([id]) => referenced.has(id));
      const opened = await mapLimit(blobs, OPENS_AT_ONCE, async ([id, loc]) => {
        const blob = data.subarray(loc.offset, loc.offset + loc.length);
        if (blob.length !== loc.length) return 'truncated';
        const isTree = trees.has(id);
        // A tree may be longer than a chunk: it opens into memory of its own.
        const out = isTree ? undefined : await scratch.take();
        try {
          await repo.codec.openBlob(isTree ? 'tree' : 'data', id, blob, isTree ? MAX_TREE_BYTES : chunkSize, out);
          return null;
        } catch (err) {
          return err;
        } finally {
          if (out) scratch.give(out);
        }
      });
      opened.forEach((err, i) => {
        const [id, loc] = blobs[i]!;
        if (err !== null) found.push(`object ${name} is damaged: blob ${id} at offset ${loc.offset}: ${err instanceof Error ? err.message : String(err)}`);
      });
      return found;
    });
    errors.push(...perPack.flat());
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
