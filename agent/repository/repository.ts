import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { parseBackupId } from '../../shared/input-rules.js';
import { isStorageError, type ObjectInfo, type Storage } from '../storage/storage.js';
import { mapLimit } from '../fs/map-limit.js';
import { StreamedPack, type PackSink } from './pack.js';
import { createWithKeys, openFormat, type OpenOptions, type OpenedFormat } from './open-format.js';
import { SealedOnlyStorage } from './sealed-only-storage.js';
import type { BlobType, RepoCodec } from './repo-codec.js';
import {
  FORMAT_V3,
  canonicalJson,
  indexName,
  isBlobId,
  isSnapshotId,
  lockName,
  packName,
  pendingName,
  snapshotName,
  type IndexFile,
  type Lock,
  type PendingMarker,
  type RepoConfig,
  type Snapshot,
} from './format.js';

export type { OpenOptions } from './open-format.js';

export interface BlobLocation {
  pack: string;
  offset: number;
  length: number;
}

/** Bytes read from the end of a pack no index names, to find its header (the trailer is 12 bytes). */
const STRAY_TAIL_READ = 64 * 1024;

/** Index files read at once by loadIndex. */
const INDEX_READS_AT_ONCE = 16;

/** How long a lock lives without being refreshed; holders refresh at a third of it. */
export const LOCK_TTL_MS = 15 * 60_000;

/**
 * A backup repository on a Storage: the one layer every stored object passes through. It knows the
 * format (its config and codec: plain or sealed, repo-codec.ts), the object names and kinds, the index of
 * which blob lives in which pack, snapshots and locks; its clients — backups (agent/backup/) and the log
 * archive (agent/log-archive/) — store and read objects only through it, so what turns plaintext into
 * stored bytes (and back) is decided here, once. Holds no data blobs in memory: only the index (about
 * 100 bytes a blob).
 */
export class Repository {
  /** blob id -> where it is. Filled by loadIndex(), extended by addPack(). */
  readonly blobs = new Map<string, BlobLocation>();
  /** pack id -> size and the index file that lists it. */
  readonly packs = new Map<string, { size: number; index: string }>();

  readonly config: RepoConfig;
  readonly codec: RepoCodec;
  /** The key that opened the repository (null: it is not encrypted). */
  readonly keyId: string | null;
  /** Names local caches of this repository and key: a cache tagged otherwise is never trusted. */
  readonly cacheTag: string;

  private readonly storage: Storage;

  private constructor(
    storage: Storage,
    private readonly format: OpenedFormat,
  ) {
    // The one place plaintext is kept out of an encrypted repository: whatever is stored passes here.
    const codec = format.codec;
    this.storage = codec.encrypted ? new SealedOnlyStorage(storage, (id, pack) => codec.readPackTail(id, pack)) : storage;
    this.config = format.config;
    this.codec = format.codec;
    this.keyId = format.keyId;
    this.cacheTag = format.cacheTag;
  }

  /** Format 3 or 2 (the config's version 1). */
  get formatVersion(): 2 | 3 {
    return this.config.version === FORMAT_V3 ? 3 : 2;
  }

  /** The storage, for messages: `file:///srv/backups`, `s3://bucket/prefix`. */
  get description(): string {
    return this.storage.description;
  }

  /** The same repository (config, codec) through another handle of its storage: a fresh index. */
  on(storage: Storage): Repository {
    return new Repository(storage, this.format);
  }

  /**
   * Opens the repository at `storage` (its format, and keys where it is encrypted: open-format.ts),
   * creating it when there is none and `create` is set.
   */
  static async open(storage: Storage, options: OpenOptions = {}): Promise<Repository> {
    return new Repository(storage, await openFormat(storage, options));
  }

  /**
   * Makes a repository at `storage` (where there is none) with the keys and chunk parameters of `source`
   * (createWithKeys: the same master key and key objects, a config of its own), so that a copy between
   * them moves packs as they are. `source` must be encrypted (a plain one has no keys to share).
   */
  static async createWithKeysOf(storage: Storage, source: Repository, options: Omit<OpenOptions, 'create' | 'password'> = {}): Promise<Repository> {
    const { storage: keys, master } = source.keyAccess();
    return new Repository(storage, await createWithKeys(storage, { config: source.config, master, keyId: source.keyId!, keys }, options));
  }

  /**
   * The repository at `storage` as a second copy of `source` (a copy's destination, a replica): opened
   * where there is one, with `source`'s master key where it holds `source`'s key (OpenOptions.knownKey:
   * no password asked, no key derivation), else with `options.password`; where there is none and
   * `create`, made with `source`'s keys (createWithKeysOf) when that is encrypted, or as Repository.open
   * makes one otherwise. `created`: it was made now. REPOSITORY_NOT_FOUND where there is none and not
   * `create`.
   */
  static async openBeside(storage: Storage, source: Repository, options: OpenOptions): Promise<{ repo: Repository; created: boolean }> {
    const knownKey = source.codec.encrypted && source.keyId !== null ? { master: source.keyAccess().master, keyId: source.keyId } : undefined;
    try {
      return { repo: await Repository.open(storage, { ...options, create: false, ...(knownKey ? { knownKey } : {}) }), created: false };
    } catch (err) {
      if (!(err instanceof AdminError && err.code === ErrorCodes.REPOSITORY_NOT_FOUND) || options.create !== true) throw err;
    }
    const { password: _unused, create: _create, ...rest } = options;
    const repo = source.codec.encrypted ? await Repository.createWithKeysOf(storage, source, rest) : await Repository.open(storage, { ...options, create: true });
    return { repo, created: true };
  }

  /**
   * Whether blobs are named and stored alike here and in `other`, so that a pack of one is a valid pack
   * of the other: both encrypted under the same master key (their key fingerprints, which reveal nothing,
   * are equal), or both plain (SHA-256 ids, plain packs: format 2 and format 3 without encryption).
   */
  sealsLike(other: Repository): boolean {
    if (this.codec.encrypted !== other.codec.encrypted) return false;
    return this.format.keyFingerprint === other.format.keyFingerprint && this.config.chunkSize === other.config.chunkSize;
  }

  /**
   * Before new data goes in (a backup, the log archive): throws PLAINTEXT_REFUSED where the repository
   * is not encrypted and the options that opened it did not say that is meant. The writers call it; a
   * reader (restore, list, verify) and prune never do.
   */
  assertWritable(): void {
    if (this.format.plaintextRefusal) throw this.format.plaintextRefusal;
  }

  /** Key management needs the master key and the storage's key objects (repository-keys.ts). */
  keyAccess(): { storage: Storage; master: Buffer } {
    if (!this.format.master) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${this.storage.description} is not encrypted: it has no keys`);
    return { storage: this.storage, master: this.format.master };
  }

  // Objects other than packs: each stored as the codec seals it under its name.

  /** Stores `plaintext` under `name`, atomically (Storage.put), sealed as the format says. */
  async putObject(name: string, plaintext: Buffer): Promise<void> {
    await this.storage.put(name, await this.codec.sealObject(name, plaintext));
  }

  /** The plaintext of the object `name`, opened and checked (CORRUPT naming it). `not-found` (StorageError) when absent. */
  async getObject(name: string): Promise<Buffer> {
    const stored = await this.storage.get(name);
    return this.codec.openObject(name, stored).catch((err: unknown) => {
      throw new AdminError(ErrorCodes.CORRUPT, `object ${name} in ${this.storage.description} is damaged: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /** An object's JSON (CORRUPT naming it when it is not JSON). */
  async getJson<T>(name: string): Promise<T> {
    const bytes = await this.getObject(name);
    try {
      return JSON.parse(bytes.toString('utf8')) as T;
    } catch {
      throw new AdminError(ErrorCodes.CORRUPT, `object ${name} in ${this.storage.description} is not JSON`);
    }
  }

  putJson(name: string, value: unknown): Promise<void> {
    return this.putObject(name, Buffer.from(canonicalJson(value)));
  }

  /** Removes an object (a pack, too). Deleting a name that does not exist succeeds. */
  deleteObject(name: string): Promise<void> {
    return this.storage.delete(name);
  }

  /** Every object whose name starts with `prefix`, in name order (Storage.list): names and stored sizes. */
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.storage.list(prefix);
  }

  // Packs: blobs sealed one by one (sealBlob), then a tail (packTail); read back by ranges.

  /**
   * A pack written straight into the storage, blob by blob, where the storage can (Storage.openWriter);
   * null where a pack must be built in memory and stored with uploadPack.
   */
  openPack(): PackSink | null {
    const writer = this.storage.openWriter?.();
    return writer ? new StreamedPack(writer, (blobs) => this.codec.packTail(blobs)) : null;
  }

  /**
   * `length` stored bytes of pack `id` from `offset` (Storage.getRange). A pack shorter than the range
   * (the index says more than the store holds: truncated, or replaced) is CORRUPT naming it. With `into`,
   * where the storage streams ranges (S3), the bytes go into it as they arrive: no buffer of the range's
   * size is made for the read only to be copied into `into` (the SDK's body collector, its copy and their
   * garbage took more of the main thread than anything else in a copy from S3: 6 of 13 s, measured on 1 GiB).
   */
  async readPackRange(id: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    try {
      if (into !== undefined && length > 0 && into.length >= length && this.storage.streamRange) {
        let at = 0;
        // Pieces come consecutive from the range's start, a failed read resumed where it stopped (Storage.streamRange).
        await this.storage.streamRange(packName(id), offset, length, (piece) => {
          at += piece.copy(into, at);
        });
        return into.subarray(0, length);
      }
      return await this.storage.getRange(packName(id), offset, length, into);
    } catch (err) {
      throw await this.shortPack(id, offset + length, err);
    }
  }

  /** What a failed range read of a pack means: CORRUPT where the pack ends before `end`, else the error itself. */
  private async shortPack(id: string, end: number, err: unknown): Promise<unknown> {
    if (!isStorageError(err, 'permanent')) return err;
    const info = await this.storage.stat(packName(id)).catch(() => null);
    if (info === null || info.size >= end) return err;
    return new AdminError(ErrorCodes.CORRUPT, `object ${packName(id)} in ${this.storage.description} is damaged: ${info.size} bytes, shorter than its index says (at least ${end})`);
  }

  /** Whether ranges of packs can be streamed (Storage.streamRange: S3). */
  get streamsRanges(): boolean {
    return this.storage.streamRange !== undefined;
  }

  /** Streams `length` stored bytes of pack `id` from `offset` (Storage.streamRange; only where streamsRanges). */
  streamPackRange(id: string, offset: number, length: number, onPiece: (piece: Buffer) => Promise<void> | void): Promise<void> {
    if (!this.storage.streamRange) throw new Error(`${this.storage.description} does not stream ranges`);
    return this.storage.streamRange(packName(id), offset, length, onPiece);
  }

  /** A whole pack's stored bytes. */
  getPack(id: string): Promise<Buffer> {
    return this.storage.get(packName(id));
  }

  /** Reads every index file. Packs written by an interrupted backup and never indexed are not known here. */
  async loadIndex(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.blobs.clear();
      this.packs.clear();
      try {
        const { names, files } = await this.readIndexFiles(await this.listIndexFiles());
        files.forEach((file, i) => this.addToIndex(file, names[i]!));
        return;
      } catch (err) {
        // An index file listed a moment ago is gone: compactIndex() replaced it by one it wrote first,
        // so listing again finds everything.
        if (!isStorageError(err, 'not-found') || attempt >= 5) throw err;
      }
    }
  }

  private async listIndexFiles(): Promise<string[]> {
    const names: string[] = [];
    for await (const obj of this.storage.list('index/')) names.push(obj.name);
    return names;
  }

  /**
   * Index files read many at once (a cold disk or a far bucket takes ms for each), in `listed` order so
   * that the result does not depend on which read finished first. `skipVanished`: a file deleted since
   * it was listed is left out (instead of failing not-found).
   */
  private async readIndexFiles(listed: string[], skipVanished = false): Promise<{ names: string[]; files: IndexFile[] }> {
    const read = await mapLimit(listed, INDEX_READS_AT_ONCE, async (name) => {
      try {
        return await this.getJson<IndexFile>(name);
      } catch (err) {
        if (skipVanished && isStorageError(err, 'not-found')) return null;
        throw err;
      }
    });
    const names = listed.filter((_, i) => read[i] !== null);
    return { names, files: read.filter((f): f is IndexFile => f !== null) };
  }

  /**
   * Replaces the index files by one listing every pack they list, once there are more than
   * `threshold` of them (a backup writes one per pack: loading thousands costs every later run). The
   * new file is written, durably, before any old one is deleted, so the listed files always cover every
   * pack; a reader whose file vanished lists again (loadIndex). Safe beside backups, which only add
   * files, and beside another compaction; prune, which rewrites the index, runs alone. Returns how many
   * files it replaced.
   */
  async compactIndex(threshold: number): Promise<number> {
    // A file gone since the listing was merged by another compactor, into a file written first: leaving
    // it out loses nothing, and this run deletes only what it read.
    const listed = await this.listIndexFiles();
    if (listed.length <= threshold) return 0; // counted without reading a file
    const { names, files } = await this.readIndexFiles(listed, true);
    const packs = new Map<string, IndexFile['packs'][number]>();
    for (const file of files) for (const pack of file.packs) if (!packs.has(pack.id)) packs.set(pack.id, pack);
    const written = await this.writeIndex([...packs.values()]);
    const old = new Set(names.filter((n) => n !== written));
    await mapLimit([...old], INDEX_READS_AT_ONCE, (name) => this.storage.delete(name));
    for (const info of this.packs.values()) if (old.has(info.index)) info.index = written;
    return old.size;
  }

  /** The running backup's pending marker (pendingName), once written: see finishPending. */
  private pending: Promise<string> | null = null;

  /**
   * Before the first pack this backup stores (called before each, written once): a marker that stays
   * until every pack stored has an index object (finishPending). `lockId` is the backup's lock.
   */
  async markPending(lockId: string): Promise<void> {
    this.pending ??= (async () => {
      const marker: PendingMarker = { version: 1, lock: lockId, hostname: os.hostname(), pid: process.pid, createdAt: new Date().toISOString() };
      await this.putJson(pendingName(lockId), marker);
      return pendingName(lockId);
    })();
    const written = this.pending;
    try {
      await written;
    } catch (err) {
      if (this.pending === written) this.pending = null; // the next pack tries again
      throw err;
    }
  }

  /**
   * At the end of a backup: its marker is deleted if every pack it stored has an index object (a failed
   * delete only costs the next backup a listing), else left for the next backup. Either way the next
   * backup through this Repository writes a marker of its own.
   */
  async finishPending(everyPackIndexed: boolean): Promise<void> {
    const written = this.pending;
    this.pending = null;
    const name = await written?.catch(() => null);
    if (name && everyPackIndexed) await this.storage.delete(name).catch(() => {});
  }

  /**
   * Indexes packs that were stored without an index object (a backup killed, or failed, between storing a
   * pack and indexing it), so that this backup reuses them instead of storing their blobs again. Paid only
   * when needed: one listing of `pending/` (empty in a repository whose backups all ended well); only a
   * marker whose backup is over (its lock gone, expired, or held by a dead process of this host) makes it
   * list the packs, read the header of each one no index names (a ranged read of its tail, checked against
   * the pack's name), write one index object for them, and then delete the marker. Objects under `data/`
   * that are not whole packs are left alone (verify reports them, prune deletes them). Call after
   * loadIndex, under a lock. Returns how many packs it indexed.
   */
  async indexStrayPacks(): Promise<number> {
    const markers: string[] = [];
    for await (const obj of this.storage.list('pending/')) markers.push(obj.name);
    if (markers.length === 0) return 0;
    const live = await this.liveLocks();
    const over: string[] = [];
    for (const name of markers) {
      let marker: PendingMarker;
      try {
        marker = await this.getJson<PendingMarker>(name);
      } catch (err) {
        if (isStorageError(err, 'not-found')) continue; // another backup dealt with it
        if (err instanceof AdminError && err.code === ErrorCodes.CORRUPT) {
          over.push(name); // unreadable: treat its backup as over (indexing is harmless either way)
          continue;
        }
        throw err;
      }
      if (!live.has(marker.lock)) over.push(name);
    }
    if (over.length === 0) return 0;
    const stray: { name: string; size: number }[] = [];
    for await (const obj of this.storage.list('data/')) {
      const id = obj.name.slice(obj.name.lastIndexOf('/') + 1);
      if (isBlobId(id) && obj.name === packName(id) && !this.packs.has(id)) stray.push(obj);
    }
    const found = await mapLimit(stray, INDEX_READS_AT_ONCE, (obj) => this.readStrayHeader(obj.name, obj.size));
    const packs = found.filter((p): p is IndexFile['packs'][number] => p !== null);
    if (packs.length > 0) await this.writeIndex(packs);
    await mapLimit(over, INDEX_READS_AT_ONCE, (name) => this.storage.delete(name));
    return packs.length;
  }

  /** A stored pack's index entry from its own header, or null if the object is not a whole pack of its name. */
  private async readStrayHeader(name: string, size: number): Promise<IndexFile['packs'][number] | null> {
    const id = name.slice(name.lastIndexOf('/') + 1);
    try {
      // The tail holds the header of a pack of a few hundred blobs; a longer one takes a second read.
      let tailLength = Math.min(size, STRAY_TAIL_READ);
      let tail = await this.storage.getRange(name, size - tailLength, tailLength);
      const wanted = this.codec.tailLength(tail);
      if (wanted > tailLength && wanted <= size) {
        tailLength = wanted;
        tail = await this.storage.getRange(name, size - tailLength, tailLength);
      }
      const blobs = this.codec.readPackTail(id, tail);
      const dataEnd = size - wanted;
      for (const [, offset, length] of blobs) if (offset + length > dataEnd) return null;
      return { id, size, blobs };
    } catch (err) {
      if (isStorageError(err, 'not-found') || isStorageError(err, 'permanent')) return null; // deleted, or shorter than listed
      if (err instanceof AdminError && err.code === ErrorCodes.CORRUPT) return null; // not a whole pack of its name
      throw err;
    }
  }

  /** Locks that may belong to a running backup: not expired, and not held by a process of this host that is gone. */
  private async liveLocks(): Promise<Set<string>> {
    const live = new Set<string>();
    for await (const obj of this.storage.list('locks/')) {
      let lock: Lock;
      try {
        lock = await this.getJson<Lock>(obj.name);
      } catch (err) {
        if (isStorageError(err, 'not-found') || (err instanceof AdminError && err.code === ErrorCodes.CORRUPT)) continue;
        throw err;
      }
      if (Date.parse(lock.expiresAt) < Date.now()) continue;
      if (lock.hostname === os.hostname() && !processExists(lock.pid)) continue;
      live.add(lock.id);
    }
    return live;
  }

  hasBlob(id: string): boolean {
    return this.blobs.has(id);
  }

  /** Uploads a pack built in memory (named by its tail: a retry or a duplicate is harmless). Not yet indexed. */
  async uploadPack(id: string, data: Buffer): Promise<void> {
    await this.storage.put(packName(id), data);
  }

  /**
   * Writes an index file for packs already uploaded, making their blobs known to every later reader
   * (an index never names a pack that is not stored). Returns the index file's name.
   */
  async writeIndex(packs: IndexFile['packs']): Promise<string> {
    const file: IndexFile = { version: 1, packs: [...packs].sort((a, b) => (a.id < b.id ? -1 : 1)) };
    // A random name: an index is found by listing, never by its content (a content hash would tell the
    // store which indexes are alike).
    const name = indexName(randomBytes(32).toString('hex'));
    await this.putJson(name, file);
    this.addToIndex(file, name);
    return name;
  }

  /** Learns the packs an index file lists. A blob already known keeps its first place (either is whole). */
  private addToIndex(file: IndexFile, name: string): void {
    for (const pack of file.packs) {
      this.packs.set(pack.id, { size: pack.size, index: name });
      for (const [id, offset, length] of pack.blobs) if (!this.blobs.has(id)) this.blobs.set(id, { pack: pack.id, offset, length });
    }
  }

  /** A blob's plaintext, opened and checked against its type and id. A failure names the pack. */
  async readBlob(id: string, type: BlobType, maxLength = MAX_TREE_BYTES): Promise<Buffer> {
    return (await this.fetchBlob(id, type, maxLength)).plaintext;
  }

  /** A blob's stored bytes (to move them into another pack as they are), once they open as `type` and `id`. */
  async readStoredBlob(id: string, type: BlobType): Promise<Buffer> {
    return (await this.fetchBlob(id, type, MAX_TREE_BYTES)).stored;
  }

  private async fetchBlob(id: string, type: BlobType, maxLength: number): Promise<{ stored: Buffer; plaintext: Buffer }> {
    const loc = this.blobs.get(id);
    if (!loc) throw new AdminError(ErrorCodes.CORRUPT, `blob ${id} is not in the repository index`);
    const stored = await this.readPackRange(loc.pack, loc.offset, loc.length);
    const plaintext = await this.codec.openBlob(type, id, stored, maxLength).catch((err: unknown) => {
      throw blobDamaged(loc.pack, id, loc.offset, err);
    });
    return { stored, plaintext };
  }

  async listSnapshots(): Promise<Snapshot[]> {
    const ids: string[] = [];
    for await (const obj of this.storage.list('snapshots/')) {
      const id = obj.name.slice('snapshots/'.length);
      if (isSnapshotId(id)) ids.push(id);
    }
    // Read several at once: one after the other, a hundred backups on S3 were a hundred round trips.
    const read = await mapLimit(ids, INDEX_READS_AT_ONCE, async (id) => {
      try {
        return await this.readSnapshot(id);
      } catch (err) {
        if (err instanceof AdminError && err.code === ErrorCodes.NOT_FOUND) return null; // pruned meanwhile
        throw err;
      }
    });
    return read.filter((s): s is Snapshot => s !== null).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async readSnapshot(id: string): Promise<Snapshot> {
    parseBackupId(id);
    let bytes: Buffer;
    try {
      bytes = await this.getObject(snapshotName(id));
    } catch (err) {
      if (isStorageError(err, 'not-found')) throw new AdminError(ErrorCodes.NOT_FOUND, `no backup ${id} in ${this.storage.description}`);
      throw err;
    }
    let s: Snapshot;
    try {
      s = JSON.parse(bytes.toString('utf8')) as Snapshot;
    } catch {
      throw new AdminError(ErrorCodes.CORRUPT, `snapshot ${id} is unreadable`);
    }
    if (s?.version !== 1 || s.id !== id || !isBlobId(s.tree)) throw new AdminError(ErrorCodes.CORRUPT, `snapshot ${id} is unreadable`);
    return s;
  }

  /** The commit point of a backup: after this put the backup exists for every reader. */
  async writeSnapshot(s: Snapshot): Promise<void> {
    await this.putJson(snapshotName(s.id), s);
  }

  async deleteSnapshot(id: string): Promise<void> {
    await this.storage.delete(snapshotName(id));
  }

  /**
   * Takes a lock: shared for backups (any number at once), exclusive for prune (alone). Conditional
   * writes cannot be relied on (Swift and others ignore If-None-Match), so: write ours, then list; if
   * a live lock conflicts, remove ours and fail. Two racing takers may both back off; neither proceeds
   * wrongly. Stale locks (past expiresAt) are removed. The returned handle refreshes itself.
   */
  async lock(operation: string, exclusive: boolean): Promise<RepositoryLock> {
    const id = randomBytes(16).toString('hex');
    const now = Date.now();
    const lock: Lock = {
      version: 1,
      id,
      exclusive,
      hostname: os.hostname(),
      pid: process.pid,
      operation,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + LOCK_TTL_MS).toISOString(),
    };
    await this.putJson(lockName(id), lock);
    try {
      for await (const obj of this.storage.list('locks/')) {
        if (obj.name === lockName(id)) continue;
        let other: Lock;
        try {
          other = await this.getJson<Lock>(obj.name);
        } catch (err) {
          if (isStorageError(err, 'not-found')) continue;
          throw err;
        }
        if (Date.parse(other.expiresAt) < Date.now()) {
          await this.storage.delete(obj.name);
          continue;
        }
        if (exclusive || other.exclusive) {
          throw new AdminError(
            ErrorCodes.REPOSITORY_LOCKED,
            `repository is locked by ${other.operation} (pid ${other.pid} on ${other.hostname}, since ${other.createdAt}); try again later`,
          );
        }
      }
    } catch (err) {
      await this.storage.delete(lockName(id)).catch(() => {});
      throw err;
    }
    return new RepositoryLock(this, lock);
  }
}

/** The largest tree a reader takes (a backup of a million files lists about 100 MB). */
export const MAX_TREE_BYTES = 256 * 1024 * 1024;

/** A blob that would not open, named by its pack (the codec's message says why). */
export function blobDamaged(pack: string, id: string, offset: number, err: unknown): AdminError {
  const why = err instanceof Error ? err.message : String(err);
  return new AdminError(ErrorCodes.CORRUPT, `object ${packName(pack)} is damaged: blob ${id} at offset ${offset}: ${why}`);
}

/** Whether a process of this host with this pid exists (EPERM: it does, someone else's). */
function processExists(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A held lock. Refreshed every third of its lifetime until released. */
export class RepositoryLock {
  private readonly timer: NodeJS.Timeout;
  private released = false;

  constructor(
    private readonly repo: Repository,
    private lock: Lock,
  ) {
    this.timer = setInterval(() => void this.refresh(), LOCK_TTL_MS / 3);
    this.timer.unref();
  }

  /** The lock's id (a pending marker names it: pendingName). */
  get id(): string {
    return this.lock.id;
  }

  private async refresh(): Promise<void> {
    if (this.released) return;
    this.lock = { ...this.lock, expiresAt: new Date(Date.now() + LOCK_TTL_MS).toISOString() };
    await this.repo.putJson(lockName(this.lock.id), this.lock).catch(() => {});
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    await this.repo.deleteObject(lockName(this.lock.id)).catch(() => {});
  }
}
