import fs from 'node:fs';
import path from 'node:path';
import { alignedBuffers } from '../fs/direct-io.js';
import { logFileName, parseDbFileName } from '../leveldb/file-names.js';
import type { ArchiveWorker } from './archive-worker-client.js';
import { batchHeader, WriteBatchError } from './write-batch.js';

/** One write batch as the follower read it from a log. */
export interface ReadBatch {
  /** First sequence number; the batch covers seq … seq+count-1. */
  seq: number;
  count: number;
  /** The WriteBatch bytes exactly as LevelDB wrote them (the log record's payload). */
  payload: Buffer;
  /** When the pass that read it ended (ms since the epoch): the archive's time axis. */
  readAt: number;
}

/** What one pass over the logs found. */
export interface FollowerPass {
  batches: ReadBatch[];
  /**
   * The time the pass ended: every byte in the logs before the pass began has been read by then, unless
   * `more` (the pass stopped at its byte limit).
   */
  readAt: number;
  bytesRead: number;
  /** The pass stopped at its byte limit with bytes left to read: the next pass should follow at once. */
  more: boolean;
  /**
   * Why continuity cannot be proven past this pass (a damaged log, a torn record at the end of a
   * finished log), or null. The batches before the damage are in `batches`; nothing after it.
   */
  problem: string | null;
  /** What kind of problem: the log's bytes are damaged, or the directory now holds another history. */
  problemKind: 'damaged' | 'replaced' | null;
}

interface OpenLog {
  number: number;
  fh: fs.promises.FileHandle;
  /** The worker's id for this log's record assembly. */
  tail: number;
  /** File offset just past the last byte read. */
  offset: number;
  /** Bytes read that belong to no complete record yet (a torn tail, if the log is finished). */
  incompleteBytes: number;
}

/** Ids of logs' record assemblies in the worker, unique in the process (followers may share a worker). */
let nextTail = 1;

/** Read this much at a time: a log grows by a write buffer (4 MiB by default) before it is switched. */
const READ_SIZE = 1024 * 1024;

/**
 * Faster than LevelDB fills its logs, in bytes per ms (400 MiB/s): on the bench machine it filled 4 MiB
 * logs at about 280 MB/s (four writers of 100 KB values). A log filled faster still is found by the
 * listing at the switch (`onWatch`).
 */
const FASTEST_LOG_APPEND = 400 * 1024;
/** The longest the directory watch is muted after an event. */
const MAX_MUTE_MS = 10;
/** How many finished logs' sizes the mute is judged by (the smallest: one batch can overfill a log). */
const FINISHED_SIZES = 3;

/**
 * How long the directory watch may be muted after an event: less than the fastest a log can be filled,
 * judged by the smallest of the last finished logs; 0 (never muted) before one was seen, or when logs
 * are small (a write buffer of a few hundred KiB or less, where a log can live 2 ms).
 */
export function muteMs(finishedLogBytes: readonly number[]): number {
  if (finishedLogBytes.length === 0) return 0;
  return Math.min(MAX_MUTE_MS, Math.floor(Math.min(...finishedLogBytes) / FASTEST_LOG_APPEND));
}

/**
 * Follows the write-ahead logs (`NNNNNN.log`) of a live LevelDB directory as they grow.
 *
 * Contract: each `pass()` lists the directory, opens every log it has not seen (keeping its descriptor,
 * so the bytes stay readable after LevelDB unlinks the file), reads every open log from where the last
 * pass stopped to its end, in ascending log order, and returns the complete batches it found, in the
 * order LevelDB wrote them. A record not yet whole is left for a later pass. A log is closed once a newer
 * log exists and it has been read to its end after that was seen. Reads are one at a time (libuv's pool:
 * one thread at most); the records' checksums and framing are worked out in the archive worker's thread,
 * off the host's event loop. Passes must not overlap (the caller awaits each).
 *
 * The follower does not check sequence continuity (a log deleted before it could be opened shows up as a
 * jump in sequence numbers): the archiver does.
 */
export class LogFollower {
  /** Open logs, ascending by number. */
  private readonly logs: OpenLog[] = [];
  /** Every log number opened or tried (a log is opened once: a closed one is finished). */
  private readonly attempted = new Set<number>();
  /** The inode of every log opened, while its name is still listed: a different file under a known name means the directory was replaced. */
  private readonly inodes = new Map<number, number>();
  /** Opens in flight (from the directory watch), awaited by each pass. */
  private readonly opening = new Set<Promise<void>>();
  private watcher: fs.FSWatcher | null = null;
  /** Re-arms the watch at the end of a mute. */
  private rearm: NodeJS.Timeout | null = null;
  /** The highest log number opened or tried. */
  private newest = -1;
  /** The watch was muted since the newest log was first seen. */
  private mutedSince = false;
  /** The sizes of the last logs read to their end after a newer one appeared, newest last. */
  private readonly finishedSizes: number[] = [];
  /**
   * The reads' buffer, made at the first read and kept: shared memory, which the worker reads where it
   * is and copies what it keeps from (a fresh 1 MiB buffer a read, moved to the worker, was garbage
   * there until its next collection: tens of MiB at 800 writes/s). Where shared memory cannot be had,
   * an ordinary one, moved, and a fresh one after each read.
   */
  private buffer: Buffer | null = null;
  private closed = false;

  /**
   * @param mute how long the watch is muted after an event, from the last finished logs' sizes (called
   *   once per event handled); `muteMs` unless a test needs another.
   */
  constructor(
    readonly dbPath: string,
    private readonly worker: ArchiveWorker,
    private readonly mute: (finishedLogBytes: readonly number[]) => number = muteMs,
  ) {}

  /**
   * Opens the logs that exist now (the start of following), and watches the directory so that a new
   * log is opened the moment it appears rather than at the next pass: under heavy writes with a small
   * write buffer, a log can be created, filled, flushed and unlinked between two passes. Call before
   * taking a base checkpoint.
   */
  async open(): Promise<void> {
    this.arm();
    await this.openNewLogs(await this.listLogs());
  }

  /**
   * The watch reports every write to the live log as well (an event per write: a thousand a second at
   * 1,000 writes/s, most of the archive's CPU on the bench machine). So a write to the newest log mutes
   * it for less time than a log takes to fill (`muteMs`): at most a hundred events a second. Why no log
   * goes unseen: docs/log-archive-design.md, "The follower".
   */
  private arm(): void {
    this.rearm = null;
    if (this.closed || this.watcher !== null) return;
    try {
      this.watcher = fs.watch(this.dbPath, { persistent: false }, (event, name) => this.onWatch(event, name));
      this.watcher.on('error', () => {
        // Watching is an optimisation: each pass lists the directory anyway.
        this.watcher?.close();
        this.watcher = null;
      });
    } catch {
      this.watcher = null;
    }
  }

  private onWatch(event: fs.WatchEventType, name: string | Buffer | null): void {
    if (this.closed) return;
    const f = typeof name === 'string' ? parseDbFileName(name) : null;
    if (f?.kind !== 'log') return;
    const number = f.number!;
    if (number > this.newest && this.mutedSince) {
      // A switch while the watch was muted: a log made and filled in that time (LevelDB at its fastest)
      // is still on disk until its memtable is flushed. One listing per switch finds it.
      void this.listLogs().then((numbers) => this.openNewLogs(numbers)).catch(() => {});
    }
    this.openLog(number);
    // Muted only by a write to the newest log known: no newer log existed when it was made. One made
    // since is named by the first write to it once re-armed; events coming before that (a table's, the
    // MANIFEST's, an older log being unlinked) do not mute the watch again.
    if (event !== 'change' || number < this.newest) return;
    const mute = this.mute(this.finishedSizes);
    if (mute === 0 || this.watcher === null) return;
    this.watcher.close();
    this.watcher = null;
    this.mutedSince = true;
    this.rearm = setTimeout(() => this.arm(), mute).unref();
  }

  /**
   * Reads every open log, in order, from where it stopped, to its end — or until about `maxBytes` are
   * read (`more`): a burst of writes is then handed over in pieces, so that shipping can start on the
   * first while the rest is read.
   */
  async pass(maxBytes = Infinity): Promise<FollowerPass> {
    const listed = await this.listLogs();
    if (await this.replaced(listed)) {
      // Another history (a restore in place, a directory swapped): nothing read so far continues into it.
      for (const log of [...this.logs]) await this.closeLog(log);
      this.attempted.clear();
      this.inodes.clear();
      this.newest = -1;
      this.finishedSizes.length = 0;
      await this.openNewLogs(listed);
      return { batches: [], readAt: Date.now(), bytesRead: 0, more: false, problem: 'the database directory was replaced (a log name now holds another file)', problemKind: 'replaced' };
    }
    const newest = await this.openNewLogs(listed);
    if (this.openError) {
      const err = this.openError;
      this.openError = null;
      throw err;
    }
    const found: Omit<ReadBatch, 'readAt'>[] = [];
    let bytesRead = 0;
    let problem: string | null = null;
    let more = false;
    for (const log of [...this.logs]) {
      if (problem !== null || more) break;
      try {
        for (;;) {
          if (bytesRead >= maxBytes) {
            more = true;
            break;
          }
          const buffer = (this.buffer ??= alignedBuffers(1, READ_SIZE)[0]!);
          const { bytesRead: n } = await log.fh.read(buffer, 0, READ_SIZE, log.offset);
          if (n === 0) break;
          bytesRead += n;
          if (!(buffer.buffer instanceof SharedArrayBuffer)) this.buffer = null; // moved to the worker
          const pushed = await this.worker.pushLog(log.tail, log.offset, buffer.subarray(0, n));
          log.offset += n;
          log.incompleteBytes = pushed.incompleteBytes;
          for (const payload of pushed.records) {
            const { seq, count } = batchHeader(payload);
            found.push({ seq, count, payload });
          }
          if (pushed.damage !== null) throw new DamagedLog(pushed.damage);
        }
        if (!more && log.number < newest) {
          // A newer log exists, so LevelDB writes no more to this one: what is left is a torn record.
          if (log.incompleteBytes > 0) problem = `log ${log.number} ends with ${log.incompleteBytes} bytes of an incomplete record`;
          else if (this.finishedSizes.push(log.offset) > FINISHED_SIZES) this.finishedSizes.shift();
          await this.closeLog(log);
        }
      } catch (err) {
        if (!(err instanceof DamagedLog || err instanceof WriteBatchError)) throw err;
        problem = `log ${log.number}: ${err.message}`;
        await this.closeLog(log);
      }
    }
    const readAt = Date.now();
    return { batches: found.map((b) => ({ ...b, readAt })), readAt, bytesRead, more, problem, problemKind: problem === null ? null : 'damaged' };
  }

  /**
   * Bytes of the open logs not read yet (for status and metrics). A log closed meanwhile counts 0: it
   * was read to its end. One fstat per open log, made here rather than in libuv's pool: on an open
   * descriptor it cannot block, and a status polled often (the bench's, a hundred times a second) would
   * otherwise wake a pool thread and the event loop twice per log per call.
   */
  unreadBytes(): number {
    let n = 0;
    for (const log of this.logs) {
      let size: number;
      try {
        size = fs.fstatSync(log.fh.fd).size;
      } catch {
        size = log.offset;
      }
      n += Math.max(0, size - log.offset);
    }
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.rearm) clearTimeout(this.rearm);
    await Promise.all(this.opening);
    for (const log of [...this.logs]) await this.closeLog(log);
  }

  /** The numbers of the logs in the directory, ascending. One listing: a large database's directory holds thousands of tables. */
  private async listLogs(): Promise<number[]> {
    if (this.closed) throw new Error('the log follower is closed');
    return (await fs.promises.readdir(this.dbPath))
      .map(parseDbFileName)
      .filter((f) => f !== null && f.kind === 'log')
      .map((f) => f!.number!)
      .sort((a, b) => a - b);
  }

  /** Opens the listed logs not opened before; returns the newest log number seen. */
  private async openNewLogs(numbers: readonly number[]): Promise<number> {
    for (const number of numbers) this.openLog(number);
    await Promise.all(this.opening);
    return Math.max(numbers.at(-1) ?? -1, ...this.logs.map((l) => l.number));
  }

  /** True if a log name the follower opened now holds another file. One stat per listed log already opened. */
  private async replaced(numbers: readonly number[]): Promise<boolean> {
    const listed = new Set(numbers);
    for (const [number, ino] of this.inodes) {
      if (!listed.has(number)) {
        this.inodes.delete(number); // unlinked: LevelDB never reuses a number within one history
        continue;
      }
      try {
        if ((await fs.promises.stat(path.join(this.dbPath, logFileName(number)))).ino !== ino) return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return false;
  }

  /** Opens a log once (whoever sees it first: the watch or a listing), keeping the list sorted. */
  private openLog(number: number): void {
    if (this.attempted.has(number)) return;
    this.attempted.add(number);
    if (number > this.newest) {
      this.newest = number;
      this.mutedSince = false;
    }
    const p = fs.promises
      .open(path.join(this.dbPath, `${String(number).padStart(6, '0')}.log`), 'r')
      .then(
        async (fh) => {
          if (this.closed) {
            await fh.close();
            return;
          }
          this.inodes.set(number, (await fh.stat()).ino);
          const at = this.logs.findIndex((l) => l.number > number);
          this.logs.splice(at < 0 ? this.logs.length : at, 0, { number, fh, tail: nextTail++, offset: 0, incompleteBytes: 0 });
        },
        (err: NodeJS.ErrnoException) => {
          // Flushed and deleted before it could be opened: its batches, if any, are lost to the
          // follower, which the archiver sees as a jump in sequence numbers.
          if (err.code !== 'ENOENT') this.openError ??= err;
        },
      )
      .finally(() => this.opening.delete(p));
    this.opening.add(p);
  }

  /** An open that failed for another reason than the file being gone: reported by the next pass. */
  private openError: Error | null = null;

  private async closeLog(log: OpenLog): Promise<void> {
    const i = this.logs.indexOf(log);
    if (i >= 0) this.logs.splice(i, 1);
    if (log.offset > 0) this.worker.dropLog(log.tail);
    await log.fh.close().catch(() => {});
  }
}

/** A log's bytes that cannot be read on (the worker's verdict): the batches before it stand, none after. */
class DamagedLog extends Error {}
