import type { BackupPruneResult } from '../../shared/api.js';
import type { KeepKey } from '../../shared/input-rules.js';
import { applyPolicy, parseRetention } from '../retention/apply-policy.js';
import type { Repository } from '../repository/repository.js';
import { PackBuilder } from '../repository/pack.js';
import { PACK_TARGET_SIZE, packName, type IndexFile, type Tree } from '../repository/format.js';
import type { PruneClient } from '../repository/prune-client.js';

/** Backup retention: the keep-N windows of the checkpoint policy (monthly included); pinned backups are kept. */
export type BackupRetention = Record<KeepKey, number>;

/**
 * Applies retention to the backups, then collects garbage: packs holding no blob a remaining backup
 * needs are deleted; packs holding some are rewritten with only those; what the log archive (its
 * PruneClient: agent/log-archive/wal-prune.ts) says no kept base needs is deleted, and the base it
 * protects is kept. Without `logArchive` nothing under `wal/` is touched. Under an exclusive lock, so no
 * backup runs meanwhile (a backup holds a shared lock for its whole run, and a prune that finds one
 * refuses with REPOSITORY_LOCKED). Crash-safe order: new packs, then one new index listing every pack
 * kept, then old index files, then old packs. Interrupted anywhere, every remaining backup is whole
 * (at worst a blob is listed twice, or an unindexed pack waits for the next prune).
 */
export async function pruneRepository(
  repo: Repository,
  policy: Partial<BackupRetention>,
  options: { dryRun?: boolean; now?: Date; logArchive?: PruneClient } = {},
): Promise<BackupPruneResult> {
  const dryRun = options.dryRun === true;
  const retention = parseRetention({ ...policy, maxAgeMs: null, minFreeBytes: 0 });
  const lock = await repo.lock('prune', true);
  try {
    const snapshots = await repo.listSnapshots();
    // The log archive: asked first, for the base retention may not take.
    const wal = (await options.logArchive?.survey(repo, new Set(snapshots.map((s) => s.id)))) ?? null;
    const logArchiveBase = wal?.protect ?? null;
    const policy = applyPolicy(
      snapshots.map((s) => ({ id: s.id, createdAt: new Date(s.createdAt), pinned: s.pinned, exclusiveBytes: 0 })),
      retention,
      options.now ?? new Date(),
    );
    // Taken out of what the policy removes, after it decided (as a pin it would not count towards keep-N).
    const saved = policy.remove.some((d) => d.id === logArchiveBase);
    const outcome = saved ? { remove: policy.remove.filter((d) => d.id !== logArchiveBase), keep: [...policy.keep, logArchiveBase!] } : policy;
    const result: BackupPruneResult = {
      dryRun,
      removed: outcome.remove,
      kept: outcome.keep,
      logArchiveBase: saved ? logArchiveBase : null,
      packsDeleted: 0,
      packsRewritten: 0,
      bytesFreed: 0,
      walObjectsDeleted: 0,
    };
    await repo.loadIndex();
    const keep = new Set(outcome.keep);
    const referenced = new Set<string>();
    const trees = new Set<string>();
    for (const s of snapshots) {
      if (!keep.has(s.id)) continue;
      referenced.add(s.tree);
      trees.add(s.tree);
      const tree = JSON.parse((await repo.readBlob(s.tree, 'tree')).toString('utf8')) as Tree;
      for (const f of tree.files) for (const c of f.chunks) referenced.add(c);
    }

    // Which blobs live in which pack (a blob may be in two packs after an interrupted prune: keep one).
    const packBlobs = new Map<string, [string, number, number][]>();
    const owner = new Map<string, string>();
    for (const [id, loc] of repo.blobs) {
      owner.set(id, loc.pack);
      const list = packBlobs.get(loc.pack) ?? [];
      list.push([id, loc.offset, loc.length]);
      packBlobs.set(loc.pack, list);
    }
    const stored = new Map<string, number>();
    for await (const obj of repo.list('data/')) stored.set(obj.name.slice(obj.name.lastIndexOf('/') + 1), obj.size);

    const keepPacks: IndexFile['packs'] = [];
    const rewrite: string[] = [];
    const drop: string[] = [];
    for (const [pack, info] of repo.packs) {
      const blobs = packBlobs.get(pack) ?? [];
      const used = blobs.filter(([id]) => referenced.has(id));
      if (used.length === 0) drop.push(pack);
      else if (used.length < blobs.length) rewrite.push(pack);
      else keepPacks.push({ id: pack, size: info.size, blobs: blobs.sort((a, b) => a[1] - b[1]) });
    }
    // Packs no index names: left by interrupted backups (none runs now: we hold the exclusive lock).
    const orphans = [...stored.keys()].filter((p) => !repo.packs.has(p));
    result.packsDeleted = drop.length + orphans.length;
    result.packsRewritten = rewrite.length;
    result.bytesFreed =
      [...drop, ...orphans].reduce((s, p) => s + (stored.get(p) ?? 0), 0) +
      rewrite.reduce((s, p) => s + (packBlobs.get(p) ?? []).filter(([id]) => !referenced.has(id)).reduce((t, b) => t + b[2], 0), 0);
    // The log archive: what no kept base needs.
    const walDoomed = wal?.doomed(keep) ?? { names: [], bytes: 0 };
    result.walObjectsDeleted = walDoomed.names.length;
    result.bytesFreed += walDoomed.bytes;
    if (dryRun) return result;

    for (const id of outcome.remove.map((d) => d.id)) await repo.deleteSnapshot(id);
    // After the snapshots: interrupted between the two, what is left is deleted by the next prune.
    for (const name of walDoomed.names) await repo.deleteObject(name);

    const packBuffer = Buffer.allocUnsafe(PACK_TARGET_SIZE + 2 * 1024 * 1024);
    const tail = (blobs: Parameters<typeof repo.codec.packTail>[0]) => repo.codec.packTail(blobs);
    let builder = new PackBuilder(packBuffer, tail);
    const newPacks: IndexFile['packs'] = [];
    const flush = async () => {
      if (builder.count === 0) return;
      const { id, data, blobs, buffer } = builder.finish();
      await repo.uploadPack(id, data);
      builder = new PackBuilder(buffer, tail);
      newPacks.push({ id, size: data.length, blobs });
    };
    const moved = new Set<string>();
    for (const pack of rewrite) {
      for (const [id] of packBlobs.get(pack) ?? []) {
        if (!referenced.has(id) || moved.has(id) || owner.get(id) !== pack) continue;
        // Moved as stored (a sealed blob is bound to its type and id, not to its pack), once it opens.
        builder.add(id, await repo.readStoredBlob(id, trees.has(id) ? 'tree' : 'data'));
        moved.add(id);
        if (builder.size >= PACK_TARGET_SIZE) await flush();
      }
    }
    await flush();

    const oldIndexes = new Set<string>();
    for await (const obj of repo.list('index/')) oldIndexes.add(obj.name);
    const written = await repo.writeIndex([...keepPacks, ...newPacks]);
    for (const name of oldIndexes) if (name !== written) await repo.deleteObject(name);
    for (const pack of [...drop, ...rewrite, ...orphans]) await repo.deleteObject(packName(pack));
    // Every pack no index named is gone: the pending markers of interrupted backups have nothing left to
    // point at (no backup runs beside a prune).
    for await (const obj of repo.list('pending/')) await repo.deleteObject(obj.name);
    await repo.loadIndex();
    return result;
  } finally {
    await lock.release();
  }
}
