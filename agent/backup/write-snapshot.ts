import os from 'node:os';
import type { CheckpointRecord } from '../../shared/api.js';
import { newCheckpointId } from '../checkpoint/checkpoint-id.js';
import type { Repository } from '../repository/repository.js';
import { canonicalJson, type Snapshot, type Tree } from '../repository/format.js';

/** A backup that leaves more index files than this merges them into one. */
export const INDEX_FILES_BEFORE_COMPACTION = 32;

/** Where the tree's blob goes: the backup's pack placer (pack-placer.ts), as writeSnapshot uses it. */
export interface TreeSink {
  place(id: string, data: Buffer): Promise<void>;
  flush(): Promise<void>;
  drain(): Promise<void>;
  /** Throws when the backup must stop (cancelled, a pack failed to store). */
  check(): void;
}

export interface WriteSnapshotOptions {
  repo: Repository;
  packs: TreeSink;
  tree: Tree;
  checkpoint: CheckpointRecord;
  pinned: boolean;
  /** The checkpoint's size, as the snapshot records it. */
  bytes: number;
  /** The snapshot's id (default: a new one); a replica's copy keeps its primary's. */
  id?: string;
  /** The snapshot's time (default: now); a replica's copy keeps its primary's. */
  createdAt?: string;
}

/**
 * Commits a backup whose chunks are all placed: stores its tree as a blob, stores the last pack and
 * waits for every pack to be stored and indexed, then writes the snapshot, then tidies the index.
 *
 * Contract:
 * - Called once per backup, after every chunk has been placed.
 * - The snapshot is the commit point, written last and atomically (a put): it is written only once
 *   every pack it needs is stored and indexed and nothing failed or was cancelled; otherwise this
 *   throws and the backup does not exist for any reader.
 * - After the snapshot, index files are merged (above INDEX_FILES_BEFORE_COMPACTION): an optimisation
 *   only, whose failure leaves a valid index and does not fail the backup.
 * - It never reads a file of the checkpoint.
 */
export async function writeSnapshot(o: WriteSnapshotOptions): Promise<Snapshot> {
  const treeBytes = Buffer.from(canonicalJson(o.tree));
  const codec = o.repo.codec;
  const treeId = await codec.blobId('tree', treeBytes);
  await o.packs.place(treeId, await codec.sealBlob('tree', treeId, treeBytes, 'try'));
  await o.packs.flush();
  await o.packs.drain();
  o.packs.check();

  const { checkpoint } = o;
  const snapshot: Snapshot = {
    version: 1,
    id: o.id ?? newCheckpointId().toLowerCase(),
    createdAt: o.createdAt ?? new Date().toISOString(),
    hostname: os.hostname(),
    pinned: o.pinned,
    checkpoint: { id: checkpoint.id, label: checkpoint.label, createdAt: checkpoint.createdAt, trigger: checkpoint.trigger },
    tree: treeId,
    files: o.tree.files.length,
    bytes: o.bytes,
  };
  await o.repo.writeSnapshot(snapshot);
  // The backup exists. Its one index file per pack, and the earlier ones, become one file now and
  // then, so that the next run loads a few files rather than thousands.
  await o.repo.compactIndex(INDEX_FILES_BEFORE_COMPACTION).catch(() => {});
  return snapshot;
}
