import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { createOfflineCheckpoint, verifyCheckpointOffline } from '../dist/agent/index.js';
import { replayManifest } from '../dist/agent/leveldb/db-state.js';
import { parseDbFileName } from '../dist/agent/leveldb/file-names.js';
import { tempDir } from './support/processes.js';

/**
 * What a checkpoint's db/ holds, file by file (docs/checkpoint-design.md, "Hazards"): exactly the tables
 * its MANIFEST references, hard-linked; the WAL and MANIFEST as copies of their own. A table file the
 * MANIFEST does not reference (an orphan of an aborted compaction, numbered at or past the next file
 * number) must be neither linked nor copied: an opened copy creates that number with fopen("w") and,
 * through a shared inode, would truncate the live table.
 */

describe('the files of a checkpoint', () => {
  const dir = tempDir('cp-files');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('links exactly the referenced tables (never an orphan), and copies the WAL and MANIFEST', async () => {
    const dbPath = path.join(dir, 'db');
    const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 64 * 1024, maxFileSize: 64 * 1024 });
    await db.open();
    const value = randomBytes(500);
    for (let b = 0; b < 20; b++) await db.batch(Array.from({ length: 100 }, (_, i) => ({ type: 'put' as const, key: `k/${b}/${i}`, value })));
    await db.put('in-the-wal', value); // after the last flush: only in the WAL
    await db.close();

    const live = replayManifest(fs.readFileSync(path.join(dbPath, fs.readFileSync(path.join(dbPath, 'CURRENT'), 'utf8').trim())));
    const someTable = [...live.tables.keys()][0]!;
    // An orphan past the next file number, as an aborted compaction leaves one.
    const orphan = `${String(live.nextFileNumber + 10).padStart(6, '0')}.ldb`;
    fs.copyFileSync(path.join(dbPath, `${String(someTable).padStart(6, '0')}.ldb`), path.join(dbPath, orphan));

    const record = await createOfflineCheckpoint({ dbPath, checkpointDir: path.join(dir, 'checkpoints') });
    const names = fs.readdirSync(record.path);
    const manifest = names.find((n) => n.startsWith('MANIFEST-'))!;
    const state = replayManifest(fs.readFileSync(path.join(record.path, manifest)));
    const tables = names.filter((n) => parseDbFileName(n)?.kind === 'table');
    expect(tables).not.toContain(orphan);
    expect(tables.map((n) => parseDbFileName(n)!.number!).sort((a, b) => a - b)).toEqual([...state.tables.keys()].sort((a, b) => a - b));
    expect(state.tables.size).toBeGreaterThan(1);
    for (const n of state.tables.keys()) expect(n).toBeLessThan(state.nextFileNumber);

    const ino = (p: string) => fs.statSync(p).ino;
    for (const t of tables) expect(ino(path.join(record.path, t)), `${t} is a hard link to the live table`).toBe(ino(path.join(dbPath, t)));
    const logs = names.filter((n) => parseDbFileName(n)?.kind === 'log');
    expect(logs.length).toBeGreaterThan(0);
    for (const f of [manifest, ...logs]) {
      expect(ino(path.join(record.path, f)), `${f} is a copy`).not.toBe(ino(path.join(dbPath, f)));
      expect(fs.readFileSync(path.join(record.path, f)).equals(fs.readFileSync(path.join(dbPath, f)))).toBe(true);
    }
    expect(fs.readFileSync(path.join(record.path, 'CURRENT'), 'utf8')).toBe(`${manifest}\n`);

    // And it opens (from a clone) with every entry, the one only in the WAL included.
    expect(await verifyCheckpointOffline(path.join(dir, 'checkpoints'), record.id)).toMatchObject({ ok: true, entries: 2001 });
  });
});
