import fs from 'node:fs';
import path from 'node:path';
import { replayManifest } from './db-state.js';
import { tableFileNames } from './file-names.js';
import { TableReader, type TableEntry } from './table-reader.js';

interface LiveTable {
  number: number;
  /** The user keys of its smallest and largest entries. */
  smallest: Buffer;
  largest: Buffer;
  reader: Promise<TableReader> | null;
}

/** A table the MANIFEST read names was deleted before it could be opened (a compaction meanwhile): read the MANIFEST again. */
export class TablesChanged extends Error {
  constructor(file: string) {
    super(`table ${file} was removed while being read (a compaction): the database's tables changed`);
    this.name = 'TablesChanged';
  }
}

/**
 * Point reads of the tables of a LevelDB directory, live or not, as its MANIFEST lists them when open()
 * reads it: the entries of a user key at given sequence numbers. Not the memtable or the logs (what a
 * table does not hold yet), and only the bytewise comparator (classic-level's).
 *
 * Contract: entries LevelDB has flushed to a table keep their sequence number through every compaction
 * (LevelDB 1.20 never rewrites one), and an entry is only dropped once a newer entry of its key exists
 * (or, a deletion, where no older entry of its key is left below it). So `newest(key, s)` answers
 * with what the database held at sequence `s`, for any `s` up to its last flushed sequence. A table
 * deleted between the MANIFEST read and its open is TablesChanged (open again); other read failures
 * throw (TableCorruptionError names the file). close() releases every descriptor.
 */
export class DbTables {
  private constructor(
    readonly dir: string,
    private readonly tables: LiveTable[],
  ) {}

  static async open(dir: string): Promise<DbTables> {
    const current = (await fs.promises.readFile(path.join(dir, 'CURRENT'), 'utf8')).trim();
    const state = replayManifest(await fs.promises.readFile(path.join(dir, current)), { keys: true });
    if (state.comparator !== null && state.comparator !== 'leveldb.BytewiseComparator') {
      throw new Error(`the database uses the comparator ${JSON.stringify(state.comparator)}, not LevelDB's bytewise one`);
    }
    const tables: LiveTable[] = [];
    for (const [number, t] of state.tables) {
      if (!t.smallest || !t.largest || t.smallest.length < 8 || t.largest.length < 8) throw new Error(`the MANIFEST's entry of table ${number} has no key range`);
      tables.push({ number, smallest: t.smallest.subarray(0, t.smallest.length - 8), largest: t.largest.subarray(0, t.largest.length - 8), reader: null });
    }
    return new DbTables(dir, tables);
  }

  /** The newest entry of `key` with a sequence number at or below `sequence` in the tables, or null. */
  async newest(key: Buffer, sequence: number): Promise<TableEntry | null> {
    let best: TableEntry | null = null;
    for (const t of this.tables) {
      if (Buffer.compare(key, t.smallest) < 0 || Buffer.compare(key, t.largest) > 0) continue;
      const found = await (await this.reader(t)).seek(key, sequence);
      if (found && found.key.equals(key) && (best === null || found.sequence > best.sequence)) best = found;
    }
    return best;
  }

  async close(): Promise<void> {
    for (const t of this.tables) {
      const r = t.reader;
      t.reader = null;
      if (r) await r.then((x) => x.close(), () => {});
    }
  }

  private reader(t: LiveTable): Promise<TableReader> {
    t.reader ??= (async () => {
      for (const name of tableFileNames(t.number)) {
        try {
          return await TableReader.open(path.join(this.dir, name));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      throw new TablesChanged(path.join(this.dir, tableFileNames(t.number)[0]));
    })();
    return t.reader;
  }
}
