import fs from 'node:fs';
import path from 'node:path';
import type { CheckpointRecord } from '../../shared/api.js';
import { isCheckpointId } from '../../shared/input-rules.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { fsyncDir, isErrno, writeFileAtomicSync } from '../fs/durable-fs.js';
import { checkpointDbPath, readMetaSync, type BuiltCheckpoint, type CheckpointMeta } from './checkpoint-dir.js';

/**
 * What the agent knows about the checkpoints it keeps, so that list, status and the retention pass after
 * a create cost the same with 1 checkpoint or 200 (describeCheckpointSync lstat's every file of every
 * checkpoint; this lstat's only what may have changed).
 *
 * A checkpoint's exclusiveBytes is, as a full scan computes it, the bytes of its files whose link count
 * is 1. Checkpoints are immutable once made, so every link of a file is accounted for as
 *   nlink = owners (checkpoints linking it) + live (the live database links it) + extra (anything else)
 * and a file is exclusive when that sum is 1: one owner, not live, no extra. `owners` changes only
 * through this index (creates, deletes); `live` changes behind our back when LevelDB drops a table, and
 * is followed by listing the live directory: a table name that vanished is unlinked for good, because
 * LevelDB never gives a table number to another file while the directory lives (a restore replaces the
 * directory: see checkIncarnation). A name is trusted only once tied to an inode: seen to be ours by
 * lstat of the live file, or linked from it by our own build in this incarnation; never by name alone.
 * `extra` is whatever else links a file (an operator's `ln`, a verify clone): measured by lstat, and
 * measured again at every read while it is not 0 (and the live database does not link the file).
 *
 * Not seen until a rescan (a restart of the agent, or of its fs worker): a new hard link, made by someone
 * else, to a file already known as exclusive (looking for that would be a full scan at every read), and
 * a checkpoint.json rewritten by someone else. A verify's clone links a checkpoint's tables for the
 * time it runs: a full scan then counts them shared, the index keeps them exclusive (they are again
 * once the clone is gone).
 *
 * lstat happens only for: a checkpoint that appeared behind the agent's back (or all of them on first
 * use: the index lives in the fs worker and is rebuilt if the worker is), tables new since the last
 * checkpoint, and files whose last other link just went (one owner left, not live) until one lstat
 * shows that nothing else links them. Each read also stats and lists the live database directory and
 * lists the checkpoint directory (a checkpoint made or removed by someone else is picked up then).
 *
 * Synchronous: runs in the fs worker, like checkpoint-dir.ts.
 */

interface Inode {
  /** `<dev>:<ino>`; `copy:<id>/<name>` for a file a build of ours copied (a new inode, linked nowhere else). */
  key: string;
  name: string;
  size: number;
  owners: Set<string>;
  /** The live database links this very inode under `name` (checked by inode when it became true). */
  live: boolean;
  /** Links neither a checkpoint nor the live database account for, as last measured. */
  extra: number;
}

interface Entry {
  meta: CheckpointMeta;
  dbDir: string;
  files: number;
  bytes: number;
  exclusiveBytes: number;
  keys: string[];
}

export interface IndexSummary {
  count: number;
  pinned: number;
  bytes: number;
  exclusiveBytes: number;
  /** createdAt of the newest checkpoint, null when there is none (the metrics' last checkpoint time). */
  newestCreatedAt: string | null;
}

/** Removes what CheckpointIndex.retire renamed aside, once the renames are durable. */
export function removeRetiredSync(checkpointDir: string, doomed: readonly string[]): void {
  if (doomed.length === 0) return;
  fsyncDir(checkpointDir);
  for (const p of doomed) fs.rmSync(p, { recursive: true, force: true });
}

export class CheckpointIndex {
  private readonly checkpoints = new Map<string, Entry>();
  private sortedIds: string[] | null = null;
  private readonly inodes = new Map<string, Inode>();
  /** Table names of the live database whose inode we know (and hold in `inodes` while a checkpoint links it). */
  private readonly liveNames = new Map<string, { key: string; size: number }>();
  /** Identity of the live database directory when liveNames was filled. */
  private liveDirId: string | null = null;
  /** Files to lstat at the next read: one owner left, and maybe nothing else linking them. */
  private readonly suspects = new Set<string>();
  private inconsistent = false;
  /** Whether the checkpoint directory was read once (until then every answer starts with a full scan). */
  private scanned = false;
  /** Full rebuilds after finding the index disagreeing with the disk (tests read it). */
  rebuilds = 0;

  constructor(
    readonly checkpointDir: string,
    readonly dbPath: string,
  ) {}

  list(): CheckpointRecord[] {
    this.refresh();
    return this.ids().map((id) => this.record(id));
  }

  get(id: string): CheckpointRecord {
    this.refresh();
    return this.record(id);
  }

  /** The records as of the last read, without looking at the disk again (right after `added`). */
  snapshot(): CheckpointRecord[] {
    return this.ids().map((id) => this.record(id));
  }

  summary(): IndexSummary {
    this.refresh();
    const s: IndexSummary = { count: 0, pinned: 0, bytes: 0, exclusiveBytes: 0, newestCreatedAt: null };
    for (const e of this.checkpoints.values()) {
      s.count++;
      if (s.newestCreatedAt === null || e.meta.createdAt > s.newestCreatedAt) s.newestCreatedAt = e.meta.createdAt;
      if (e.meta.pinned) s.pinned++;
      s.bytes += e.bytes;
      s.exclusiveBytes += e.exclusiveBytes;
    }
    return s;
  }

  /** Takes in a checkpoint a build of ours just renamed into place, without listing it. */
  added(built: BuiltCheckpoint): CheckpointRecord {
    const id = built.meta.id;
    if (this.scanned) {
      try {
        this.checkIncarnation();
        if (!this.checkpoints.has(id)) this.addBuilt(built);
      } catch (err) {
        this.reset(); // half taken in: the next read starts over from the disk
        throw err;
      }
    }
    // A fresh index (first use, or a restarted worker) scans everything, this checkpoint included.
    this.refresh();
    return this.record(id);
  }

  setPinned(id: string, pinned: boolean): CheckpointRecord {
    this.refresh();
    const e = this.entry(id);
    if (e.meta.pinned !== pinned) {
      const meta = { ...e.meta, pinned };
      writeFileAtomicSync(path.join(this.checkpointDir, id, 'checkpoint.json'), JSON.stringify(meta, null, 2) + '\n');
      e.meta = meta;
    }
    return this.record(id);
  }

  /**
   * Removes checkpoints from the listing: each is renamed aside to `.deleting-<id>` (atomic; it is no
   * checkpoint from then on, and start-up cleaning removes it if we die). The trees are the caller's to
   * remove with removeRetiredSync, now or after answering: it fsyncs the directory before the first
   * unlink, so a power loss can bring a retired checkpoint back whole, never half-removed.
   * freedBytes of each counts what the ones before it in `ids` freed, as deleting them in turn would.
   */
  retire(ids: readonly string[], options: { refreshed?: boolean } = {}): { id: string; freedBytes: number; doomed: string }[] {
    if (options.refreshed !== true) this.refresh();
    const out: { id: string; freedBytes: number; doomed: string }[] = [];
    for (const id of ids) {
      const e = this.checkpoints.get(id);
      if (!e) continue; // already gone: nothing to free
      const doomed = path.join(this.checkpointDir, `.deleting-${id}`);
      fs.renameSync(path.join(this.checkpointDir, id), doomed);
      out.push({ id, freedBytes: e.exclusiveBytes, doomed });
      this.drop(id);
    }
    return out;
  }

  /** Forgets everything: the next read scans the checkpoint directory again. */
  reset(): void {
    this.checkpoints.clear();
    this.sortedIds = null;
    this.inodes.clear();
    this.liveNames.clear();
    this.liveDirId = null;
    this.suspects.clear();
    this.inconsistent = false;
    this.scanned = false;
  }

  // ---- keeping up with the disk ----

  /** Brings the index up to date with the disk: the live database, the checkpoint directory, suspects. */
  protected refresh(): void {
    for (let attempt = 0; ; attempt++) {
      try {
        this.checkIncarnation();
        this.refreshLive();
        this.syncDirectory();
        this.checkSuspects();
      } catch (err) {
        // An error half-way (an unreadable checkpoint.json, EIO) must not leave half a scan behind.
        this.reset();
        throw err;
      }
      this.scanned = true;
      if (!this.inconsistent) return;
      // Something changed that only a full scan explains (a file inside a checkpoint removed or replaced
      // behind our back): start over, once.
      if (attempt > 0) throw new AdminError(ErrorCodes.INTERNAL, `checkpoint directory ${this.checkpointDir} keeps changing under the agent`);
      this.reset();
      this.rebuilds++;
    }
  }

  /**
   * The live directory's identity: a restore renames another directory into its place, whose table
   * names may mean other files. Then nothing we knew by name holds; live links are measured again.
   */
  private checkIncarnation(): void {
    const st = fs.statSync(this.dbPath, { bigint: true, throwIfNoEntry: false });
    const id = st ? `${st.dev}:${st.ino}:${st.birthtimeNs}` : null;
    if (id === this.liveDirId) return;
    for (const l of this.liveNames.values()) {
      const n = this.inodes.get(l.key);
      if (!n) continue;
      this.change(n, () => (n.live = false));
      this.suspects.add(n.key);
    }
    this.liveNames.clear();
    this.liveDirId = id;
  }

  /** Follows the tables the live database dropped since the last read: one readdir, no stat. */
  protected refreshLive(): void {
    if (this.liveDirId === null) return;
    let names: Set<string>;
    try {
      names = new Set(fs.readdirSync(this.dbPath));
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
      names = new Set();
    }
    for (const [name, l] of this.liveNames) {
      if (names.has(name)) continue;
      this.liveNames.delete(name);
      const n = this.inodes.get(l.key);
      if (!n) continue;
      this.change(n, () => (n.live = false));
      // Its last live link went: one lstat tells whether anything else still links it.
      if (n.owners.size === 1) this.suspects.add(n.key);
    }
  }

  /** Checkpoints made or removed by someone else: the directory's names against ours. */
  private syncDirectory(): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.checkpointDir);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      names = [];
    }
    const onDisk = new Set(names.filter(isCheckpointId));
    for (const id of [...this.checkpoints.keys()]) if (!onDisk.has(id)) this.drop(id);
    const added = [...onDisk].filter((id) => !this.checkpoints.has(id)).sort();
    if (added.length > 0) this.scan(added);
  }

  /** Reads checkpoints from disk (lstat of every file), as describeCheckpointSync does. */
  private scan(ids: string[]): void {
    const seen = new Map<string, { n: Inode; nlink: number; path: string }>();
    for (const id of ids) {
      let meta: CheckpointMeta;
      let names: string[];
      const dbDir = checkpointDbPath(this.checkpointDir, id);
      try {
        meta = readMetaSync(this.checkpointDir, id);
        names = fs.readdirSync(dbDir);
      } catch (err) {
        // Removed between the listing and the read: not a checkpoint any more.
        if (err instanceof AdminError && err.code === ErrorCodes.NOT_FOUND) continue;
        if (isErrno(err, 'ENOENT')) continue;
        throw err;
      }
      const files: { key: string; name: string; size: number; nlink: number; path: string }[] = [];
      for (const name of names) {
        const p = path.join(dbDir, name);
        const st = fs.lstatSync(p, { bigint: true, throwIfNoEntry: false });
        if (!st) continue;
        if (!st.isFile()) continue;
        files.push({ key: `${st.dev}:${st.ino}`, name, size: Number(st.size), nlink: Number(st.nlink), path: p });
      }
      const e: Entry = { meta, dbDir: path.resolve(dbDir), files: 0, bytes: 0, exclusiveBytes: 0, keys: [] };
      this.checkpoints.set(id, e);
      this.sortedIds = null;
      for (const f of files) {
        const n = this.own(f.key, f.name, f.size, id, e);
        seen.set(f.key, { n, nlink: f.nlink, path: f.path });
      }
    }
    // Only now are all owners known: what the link counts leave unexplained is live or extra.
    for (const { n, nlink } of seen.values()) this.observe(n, nlink);
  }

  /** A checkpoint of ours, from what its build reports: lstat only for tables not seen before. */
  private addBuilt(built: BuiltCheckpoint): void {
    const id = built.meta.id;
    const dbDir = path.resolve(checkpointDbPath(this.checkpointDir, id));
    const e: Entry = { meta: built.meta, dbDir, files: 0, bytes: 0, exclusiveBytes: 0, keys: [] };
    this.checkpoints.set(id, e);
    this.sortedIds = null;
    const fresh: { n: Inode; nlink: number }[] = [];
    for (const name of built.linkedTables) {
      const known = this.liveNames.get(name);
      if (known) {
        // Linked from the live file of that name, whose inode we know: the same one.
        const n = this.own(known.key, name, known.size, id, e);
        if (!n.live) this.change(n, () => (n.live = true));
        continue;
      }
      const st = fs.lstatSync(path.join(dbDir, name), { bigint: true });
      const n = this.own(`${st.dev}:${st.ino}`, name, Number(st.size), id, e);
      fresh.push({ n, nlink: Number(st.nlink) });
    }
    for (const c of built.copies) this.own(`copy:${id}/${c.name}`, c.name, c.size, id, e);
    for (const { n, nlink } of fresh) {
      // Linked from the live file of that name moments ago, in this incarnation of the live directory:
      // one of its links is the live one (no second lstat to check; refreshLive, which follows, drops
      // it if the live database has dropped the file since).
      if (!n.live && nlink > n.owners.size) {
        this.change(n, () => (n.live = true));
        this.liveNames.set(n.name, { key: n.key, size: n.size });
      }
      this.observe(n, nlink);
    }
  }

  /** Adds `id` as an owner of the file (creating its record), and the file to the checkpoint's. */
  private own(key: string, name: string, size: number, id: string, e: Entry): Inode {
    let n = this.inodes.get(key);
    if (!n) {
      n = { key, name, size, owners: new Set(), live: false, extra: 0 };
      this.inodes.set(key, n);
    }
    const node = n;
    this.change(node, () => node.owners.add(id));
    e.files++;
    e.bytes += size;
    e.keys.push(key);
    return node;
  }

  /** Explains a measured link count: owners, then the live database (checked by inode), then extra. */
  private observe(n: Inode, nlink: number): void {
    let live = n.live;
    let extra = nlink - n.owners.size - (live ? 1 : 0);
    if (extra < 0 && live) {
      // The live database dropped it after liveNames was filled.
      live = false;
      extra++;
      const l = this.liveNames.get(n.name);
      if (l?.key === n.key) this.liveNames.delete(n.name);
    }
    if (extra > 0 && !live && this.liveDirId !== null) {
      const st = fs.lstatSync(path.join(this.dbPath, n.name), { bigint: true, throwIfNoEntry: false });
      if (st && `${st.dev}:${st.ino}` === n.key) {
        live = true;
        extra--;
        this.liveNames.set(n.name, { key: n.key, size: n.size });
      }
    }
    if (extra < 0) {
      // Fewer links than checkpoints holding it: a file of a checkpoint went behind our back.
      this.inconsistent = true;
      extra = 0;
    }
    this.change(n, () => {
      n.live = live;
      n.extra = extra;
    });
    if (extra > 0) this.suspects.add(n.key);
    else this.suspects.delete(n.key);
  }

  private checkSuspects(): void {
    for (const key of [...this.suspects]) {
      const n = this.inodes.get(key);
      if (!n) {
        this.suspects.delete(key);
        continue;
      }
      // With two owners, or linked by the live database, it is nobody's alone whatever else links it:
      // measured once it has one owner and the live database dropped it (refreshLive, drop).
      if (n.owners.size !== 1 || n.live) continue;
      const owner = this.checkpoints.get(n.owners.values().next().value!)!;
      const st = fs.lstatSync(path.join(owner.dbDir, n.name), { bigint: true, throwIfNoEntry: false });
      if (!st || `${st.dev}:${st.ino}` !== key) {
        this.inconsistent = true;
        this.suspects.delete(key);
        continue;
      }
      this.observe(n, Number(st.nlink));
    }
  }

  /** Forgets a checkpoint (gone from disk, or renamed aside by retire). */
  private drop(id: string): void {
    const e = this.checkpoints.get(id);
    if (!e) return;
    for (const key of e.keys) {
      const n = this.inodes.get(key);
      if (!n) continue;
      this.change(n, () => n.owners.delete(id));
      if (n.owners.size === 0) {
        this.inodes.delete(key);
        this.suspects.delete(key);
      } else if (n.owners.size === 1 && !n.live) {
        // Its other owner went; whether anything else still links it is measured at the next read.
        this.suspects.add(key);
      }
    }
    this.checkpoints.delete(id);
    this.sortedIds = null;
  }

  /** Runs a change to a file's links, keeping its owner's exclusiveBytes in step. */
  private change(n: Inode, fn: () => void): void {
    const before = this.exclusiveOwner(n);
    fn();
    const after = this.exclusiveOwner(n);
    if (before === after) return;
    if (before !== null) {
      const e = this.checkpoints.get(before);
      if (e) e.exclusiveBytes -= n.size;
    }
    if (after !== null) {
      const e = this.checkpoints.get(after);
      if (e) e.exclusiveBytes += n.size;
    }
  }

  private exclusiveOwner(n: Inode): string | null {
    if (n.owners.size !== 1 || n.live || n.extra !== 0) return null;
    return n.owners.values().next().value!;
  }

  // ---- answers ----

  private ids(): string[] {
    this.sortedIds ??= [...this.checkpoints.keys()].sort();
    return this.sortedIds;
  }

  private entry(id: string): Entry {
    if (!isCheckpointId(id)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a checkpoint id: ${JSON.stringify(id)}`);
    const e = this.checkpoints.get(id);
    if (!e) throw new AdminError(ErrorCodes.NOT_FOUND, `no checkpoint ${id}`);
    return e;
  }

  private record(id: string): CheckpointRecord {
    const e = this.entry(id);
    return {
      id,
      createdAt: e.meta.createdAt,
      label: e.meta.label,
      pinned: e.meta.pinned,
      trigger: e.meta.trigger,
      path: e.dbDir,
      files: e.files,
      bytes: e.bytes,
      exclusiveBytes: e.exclusiveBytes,
    };
  }
}
