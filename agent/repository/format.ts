import { createHash } from 'node:crypto';

/**
 * The repository format, version 1 (documented for people in docs/FORMAT.md).
 *
 *   config                         RepoConfig, written once at init
 *   data/<id[0:2]>/<id>            packs: blobs back to back, then a header (PackHeader JSON), its
 *                                  length (u32 LE) and the magic "NAPACK01"; <id> = sha256 of the pack
 *   index/<id>                     IndexFile: which blob is where; <id> = sha256 of its bytes
 *   snapshots/<snapshot id>        Snapshot: the commit point of a backup, written LAST
 *   locks/<lock id>                Lock: who works on the repository now
 *   pending/<lock id>              PendingMarker: a backup that may leave packs without an index
 *
 * Every blob is addressed by the SHA-256 of its bytes (hex). A file is a list of data blobs (fixed-size
 * chunks, so an append-only file that grew shares all but its last chunk with its older self); a
 * snapshot's file list is itself a blob (a "tree"), so backing up the same checkpoint twice stores
 * only a new, small snapshot object. All JSON is canonical (fixed key order, no whitespace), so the same
 * content always has the same bytes and the same id.
 */

/** The config's `version` of format 1 and 2 (format 2 only added objects that older readers skip). */
export const FORMAT_VERSION = 1;
/** Format 3: encrypted and authenticated (or, said explicitly at creation, neither). */
export const FORMAT_V3 = 3;
export const PACK_MAGIC = Buffer.from('NAPACK01');
/** Chunk size for file data: tables (2 MiB by default) are two chunks; a grown WAL re-sends one. */
export const CHUNK_SIZE = 1024 * 1024;
/**
 * Blobs start at multiples of this in a pack (zeros in between): a directory storage then writes each
 * chunk straight from the page-aligned buffer it was read into, and a restore reads it back, with
 * O_DIRECT (agent/fs/direct-io.ts). Readers need not know it: the header and index give every offset.
 */
export const BLOB_ALIGN = 4096;
/** A pack is cut once it holds this much. Small enough to bound memory, large enough to save requests. */
export const PACK_TARGET_SIZE = 8 * 1024 * 1024;

export interface RepoConfig {
  format: 'node-admin-repository';
  version: number;
  id: string;
  chunkSize: number;
  createdAt: string;
  /** Format 3: how blobs and objects are sealed ('none' only when made with --insecure-no-encryption). */
  encryption?: 'aes-256-gcm' | 'none';
  /** Format 3: what compresses plaintexts before they are sealed. */
  compression?: 'brotli' | 'none';
}

export interface PackHeader {
  version: number;
  /** [blob id, offset, length] in pack order. */
  blobs: [string, number, number][];
}

export interface IndexFile {
  version: number;
  packs: { id: string; size: number; blobs: [string, number, number][] }[];
}

export interface TreeFile {
  name: string;
  size: number;
  chunks: string[];
}

export interface Tree {
  version: number;
  files: TreeFile[];
}

export interface Snapshot {
  version: number;
  id: string;
  createdAt: string;
  hostname: string;
  pinned: boolean;
  checkpoint: { id: string; label: string | null; createdAt: string; trigger: string };
  /** Blob id of the Tree. */
  tree: string;
  files: number;
  bytes: number;
}

export interface Lock {
  version: number;
  id: string;
  exclusive: boolean;
  hostname: string;
  pid: number;
  operation: string;
  createdAt: string;
  /** The holder rewrites the lock before this; past it the lock is stale and anyone may remove it. */
  expiresAt: string;
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** JSON with object keys sorted at every level and no whitespace: same value, same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys((value as Record<string, unknown>)[key]);
    return out;
  }
  return value;
}

export const isBlobId = (s: unknown): s is string => typeof s === 'string' && /^[0-9a-f]{64}$/.test(s);

export const packName = (id: string) => `data/${id.slice(0, 2)}/${id}`;
export const indexName = (id: string) => `index/${id}`;
export const snapshotName = (id: string) => `snapshots/${id}`;
export const lockName = (id: string) => `locks/${id}`;
export const pendingName = (lockId: string) => `pending/${lockId}`;

/**
 * `pending/<lock id>`: written by a backup before it stores its first pack, deleted once every pack it
 * stored has an index object. One left behind (a kill, a full disk, a store that stayed down) says that
 * packs may be stored that no index names: the next backup then lists the packs and indexes them from
 * their headers (FORMAT.md, "Packs stored without an index").
 */
export interface PendingMarker {
  version: number;
  /** The lock of the backup that wrote it: while that lock is live, the backup may still be running. */
  lock: string;
  hostname: string;
  pid: number;
  createdAt: string;
}

/** A snapshot's id is its backup's id (shared/input-rules.ts): sortable by time, lowercase for every store. */
export { isBackupId as isSnapshotId } from '../../shared/input-rules.js';
