/**
 * Copying the log archive to a second repository (archive-copy.ts): a real agent archives a database
 * under writes (with merging), then the archive is copied into a repository holding the same backups and
 * keys; every moment restores there exactly as the model of acknowledged writes says; a second copy
 * stores nothing; a copy cut short claims no moment it cannot restore and, run again, stores only what
 * was missing; a damaged source segment fails the copy naming it, and a record whose body disagrees
 * with its name is refused; `backup copy --log-archive` killed -9 mid-archive and run again stores nothing twice.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent } from '../dist/agent/index.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { copyLogArchive } from '../dist/agent/log-archive/archive-copy.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { parseWalName, segmentName } from '../dist/agent/log-archive/segment.js';
import { listSegments, runMerges } from '../dist/agent/log-archive/segment-merger.js';
import type { CopySummary } from '../dist/shared/api.js';
import { CLI, ROOT, runCli, tempDir } from './support/processes.js';
import { Writers, levelApply, readState, until } from './support/pitr-writers.js';
import { emptyAndClose, s3ProcessEnv, s3Server, s3TestStorage } from './support/s3-server.js';
import { TEST_PASSWORD_FILE, TEST_REPO } from './support/test-password.js';

const WRITERS = 3;
let dir: string;
let sourceDir: string;
let writers: Writers;
let source: Repository;

/** A repository holding what `sourceDir` holds but its log archive: the same config, keys and backups. */
function withoutArchive(name: string): string {
  const to = path.join(dir, name);
  fs.cpSync(sourceDir, to, { recursive: true, filter: (p) => path.relative(sourceDir, p) !== 'wal' });
  return to;
}

/** A DirStorage that counts what is stored under `wal/`. */
function countingStorage(root: string): { storage: DirStorage; stored: string[] } {
  const stored: string[] = [];
  const inner = new DirStorage(root);
  const storage = Object.assign(Object.create(inner) as DirStorage, {
    put: async (name: string, data: Buffer) => {
      if (name.startsWith('wal/')) stored.push(name);
      return inner.put(name, data);
    },
  });
  return { storage, stored };
}

/** Restores `at` from `repo` and checks it against the model. */
async function restoresExactly(repo: Repository, at: number, label: string): Promise<void> {
  const to = path.join(dir, `restored-${label}-${at}`);
  const r = await restoreToMoment({ repo, at, to });
  expect(r.reached.time).toBeLessThanOrEqual(at);
  expect(writers.mismatch(await readState(to, WRITERS), writers.bounds(at), true), `${label}: restore to ${new Date(at).toISOString()}`).toBeNull();
  fs.rmSync(to, { recursive: true });
}

beforeAll(async () => {
  dir = tempDir('archive-copy');
  const dbPath = path.join(dir, 'db');
  sourceDir = path.join(dir, 'source');
  const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024 });
  await db.open();
  writers = new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: 200, batches: true, pauseMs: 5 });
  writers.start();
  const agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    backup: { repository: pathToFileURL(sourceDir).href, logArchive: { intervalMs: 100, merge: { windowMs: 1000, largeWindowMs: 5000 } } },
    logger: pino({ level: 'silent' }),
  });
  await agent.start();
  const storage = new DirStorage(sourceDir);
  await until('the first base', async () => (await readWindows(storage)).timelines.some((t) => t.from !== null));
  const started = Date.now();
  await until('6 s of writes', () => Date.now() >= started + 6000, 20_000);
  await writers.stop();
  await agent.stop();
  await db.close();
  source = await Repository.open(storage, TEST_REPO);
}, 60_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('copyLogArchive', () => {
  it('the copy restores every moment exactly; a second copy stores nothing', async () => {
    const sourceWindows = await readWindows(source);
    const t = sourceWindows.timelines[0]!;
    expect(t.from).not.toBeNull();
    const { storage, stored } = countingStorage(withoutArchive('copy'));
    const dest = (await Repository.open(storage, TEST_REPO));
    const first = await copyLogArchive(source, dest);
    expect(first.segments).toBe(t.segments.length);
    expect(first.records).toBe(t.bases.length + t.marks.length);
    expect(stored.length).toBe(first.segments + first.records);

    const copied = (await readWindows(dest)).timelines;
    expect(copied.map((c) => [c.id, c.from, c.to, c.lastSequence, c.brokenAfter])).toEqual(sourceWindows.timelines.map((c) => [c.id, c.from, c.to, c.lastSequence, c.brokenAfter]));
    const moments = [t.from!, ...Array.from({ length: 4 }, () => t.from! + Math.floor(Math.random() * (t.to! - t.from!))), t.to!].sort((a, b) => a - b);
    for (const at of moments) await restoresExactly(dest, at, 'copy');

    stored.length = 0;
    const again = await copyLogArchive(source, dest);
    expect(again).toMatchObject({ segments: 0, records: 0, present: first.segments + first.records });
    expect(stored).toEqual([]);
  });

  it('a copy cut short claims only what it holds; run again, it stores only what was missing', async () => {
    const t = (await readWindows(source)).timelines[0]!;
    expect(t.segments.length).toBeGreaterThanOrEqual(4);
    const { storage, stored } = countingStorage(withoutArchive('resumed'));
    const dest = await Repository.open(storage, TEST_REPO);
    const cut = new AbortController();
    const half = Math.floor(t.segments.length / 2);
    await expect(copyLogArchive(source, dest, { signal: cut.signal, onObject: () => stored.length >= half && cut.abort(new Error('killed')) })).rejects.toThrow('killed');
    const firstRun = [...stored];
    expect(firstRun.length).toBe(half);

    // Half the chain and no record yet: no base is usable, so nothing is claimed.
    const partial = (await readWindows(dest)).timelines[0]!;
    expect(partial.segments.length).toBe(half);
    expect(partial.from).toBeNull();

    stored.length = 0;
    const rest = await copyLogArchive(source, dest);
    expect(rest.segments).toBe(t.segments.length - half);
    // Nothing stored twice (the negative control: the two runs together are the whole chain and the records).
    expect(stored.filter((n) => firstRun.includes(n))).toEqual([]);
    expect(new Set([...firstRun, ...stored]).size).toBe(t.segments.length + t.bases.length + t.marks.length);
    await restoresExactly(dest, t.to!, 'resumed');
  });

  it('a merge at the source while the copy reads it (a live agent merges under no lock): the copy lists again and goes on, exact', async () => {
    const live = path.join(dir, 'live');
    fs.cpSync(sourceDir, live, { recursive: true });
    const liveRepo = await Repository.open(new DirStorage(live), TEST_REPO);
    const t = (await readWindows(liveRepo)).timelines[0]!;
    const last3 = t.segments.slice(-3);
    expect(last3.length).toBe(3);
    const inputs = (await listSegments(liveRepo, t.id)).filter((s) => last3.some((c) => c.first === s.first && c.last === s.last));
    const inner = new DirStorage(live);
    let merged = false;
    const storage = Object.assign(Object.create(inner) as DirStorage, {
      // The merge lands just before the copy reads its first input.
      get: async (name: string) => {
        if (!merged && name === inputs[0]!.name) {
          merged = true;
          await runMerges(liveRepo, { merges: [inputs], leftovers: [] });
        }
        return inner.get(name);
      },
    });
    const dest = await Repository.open(new DirStorage(withoutArchive('during-merge')), TEST_REPO);
    const r = await copyLogArchive(liveRepo.on(storage), dest);
    // The condition the test is about did happen: the input was gone when the copy read it.
    expect(merged).toBe(true);
    await expect(liveRepo.getObject(inputs[0]!.name)).rejects.toThrow();
    expect(r.segments).toBe(t.segments.length - 3 + 1);
    const after = (await readWindows(dest)).timelines[0]!;
    expect([after.from, after.to, after.lastSequence, after.brokenAfter]).toEqual([t.from, t.to, t.lastSequence, null]);
    await restoresExactly(dest, t.to!, 'during-merge');
  });

  it('a damaged source segment fails the copy naming it; what was copied before it stays restorable', async () => {
    const t = (await readWindows(source)).timelines[0]!;
    const victim = t.segments[t.segments.length - 2]!;
    const file = path.join(sourceDir, segmentName(victim));
    const original = fs.readFileSync(file);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x10;
    fs.writeFileSync(file, flipped);
    try {
      const dest = await Repository.open(new DirStorage(withoutArchive('damaged')), TEST_REPO);
      await expect(copyLogArchive(source, dest)).rejects.toThrow(segmentName(victim));
      const w = (await readWindows(dest)).timelines[0];
      // No record copied yet: nothing claimed at the destination, nothing past the damage stored.
      expect(w?.from ?? null).toBeNull();
      expect(w?.segments.at(-1)?.last ?? 0).toBeLessThan(victim.first);
    } finally {
      fs.writeFileSync(file, original);
    }
  });

  it('a timeline record whose body is not what its name says is refused', async () => {
    const t = (await readWindows(source)).timelines[0]!;
    const base = t.bases[0]!;
    const parsed = parseWalName(base.name);
    expect(parsed?.kind).toBe('base');
    // The store renames a base record to claim a longer window (a later `to`).
    const forged = base.name.replace(/-(\d{13})$/, (_, to: string) => `-${String(Number(to) + 60_000).padStart(13, '0')}`);
    fs.renameSync(path.join(sourceDir, base.name), path.join(sourceDir, forged));
    try {
      const dest = await Repository.open(new DirStorage(withoutArchive('forged')), TEST_REPO);
      await expect(copyLogArchive(source, dest)).rejects.toThrow(forged);
    } finally {
      fs.renameSync(path.join(sourceDir, forged), path.join(sourceDir, base.name));
    }
  });
});

describe('backup copy --log-archive (the built CLI)', () => {
  /** A copy through the CLI that must succeed: its summary. */
  async function copied(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CopySummary> {
    const r = await runCli(['backup', 'copy', '--json', '--log-archive', ...args], { env });
    expect(r.code, r.stderr).toBe(0);
    const summary = r.stdout
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { summary?: CopySummary })
      .find((l) => l.summary)?.summary;
    expect(summary?.logArchive).toBeDefined();
    return summary!;
  }

  it('kill -9 in the archive phase, then again: no object stored twice, the result restores exactly', async () => {
    const t = (await readWindows(source)).timelines[0]!;
    // The backups first, at full speed, so that the paced run below is all archive.
    const dest = path.join(dir, 'killed');
    const backups = await runCli(['backup', 'copy', '--from', sourceDir, '--to', dest, '--all']);
    expect(backups.code, backups.stderr).toBe(0);
    const walDir = path.join(sourceDir, 'wal');
    const walBytes = fs.readdirSync(walDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).reduce((sum, e) => sum + fs.statSync(path.join(e.parentPath, e.name)).size, 0);
    // Paced so that the archive phase lasts seconds: the kill lands in its middle, not after it.
    const limit = Math.max(0.01, walBytes / 4 / 1e6).toFixed(3);

    const child = spawn(process.execPath, [CLI, 'backup', 'copy', '--json', '--log-archive', '--from', sourceDir, '--to', dest, '--limit-upload', limit], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const archived = () => out.split('\n').filter((l) => l.includes('"phase":"log-archive"')).length;
    await until('two archive objects stored by the copy', () => archived() >= 2 || child.exitCode !== null, 60_000);
    child.kill('SIGKILL');
    await exited;
    expect(out, err).not.toContain('"summary"');
    expect(err).toBe('');
    // The objects only: a put the kill cut short leaves its temp file (`<name>~<hex>.tmp`), which is never an object.
    const inodes = () => new Map(fs.readdirSync(path.join(dest, 'wal'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && !e.name.includes('~')).map((e) => [path.join(e.parentPath, e.name), fs.statSync(path.join(e.parentPath, e.name)).ino]));
    const before = inodes();
    expect(before.size).toBeGreaterThanOrEqual(2);
    expect(before.size).toBeLessThan(t.segments.length + t.bases.length + t.marks.length);
    // A window claimed by what the killed copy left is one it can restore.
    const partial = (await readWindows(new DirStorage(dest))).timelines[0];
    if (partial?.to != null) await restoresExactly(await Repository.open(new DirStorage(dest), TEST_REPO), partial.to, 'killed-partial');

    const rest = await copied(['--from', sourceDir, '--to', dest]);
    expect(rest.logArchive!.present).toBe(before.size);
    expect(rest.logArchive!.segments + rest.logArchive!.records + before.size).toBe(t.segments.length + t.bases.length + t.marks.length);
    // Nothing the killed copy stored was stored again (a put replaces the file: a new inode; the control below shows it).
    const after = inodes();
    for (const [file, ino] of before) expect(after.get(file), file).toBe(ino);
    const [someFile] = [...before.keys()];
    fs.copyFileSync(someFile!, `${someFile}.tmp`);
    fs.renameSync(`${someFile}.tmp`, someFile!);
    expect(inodes().get(someFile!)).not.toBe(before.get(someFile!));
    const done = await Repository.open(new DirStorage(dest), TEST_REPO);
    expect((await readWindows(done)).timelines.map((w) => [w.id, w.from, w.to, w.lastSequence])).toEqual([[t.id, t.from, t.to, t.lastSequence]]);
    await restoresExactly(done, t.to!, 'killed-rerun');
  });

  it('file -> Swift (same keys), then Swift -> file (other keys): the bases come along, and every moment restores exactly from each; again sends nothing', async () => {
    const sourceWindows = await readWindows(source);
    const t = sourceWindows.timelines[0]!;
    const bases = [...new Set(t.bases.map((b) => b.backup))].sort();
    const moments = [t.from!, t.from! + Math.floor(Math.random() * (t.to! - t.from!)), t.to!];
    const server = s3Server();
    const env = s3ProcessEnv(server);
    const prefix = `archive-copy-${Date.now().toString(36)}`;
    const s3 = s3TestStorage({ prefix });
    try {
      const url = `s3://${server.bucket}/${prefix}`;
      // Only --log-archive: no backup selected, the bases' backups come along.
      const up = await copied(['--from', sourceDir, '--to', url], env);
      expect(up).toMatchObject({ mode: 'packs', created: true, copied: bases });
      expect(up.logArchive).toMatchObject({ segments: t.segments.length, records: t.bases.length + t.marks.length, present: 0 });
      expect(up.logArchive!.windows.timelines.map((w) => [w.id, w.from, w.to])).toEqual([[t.id, new Date(t.from!).toISOString(), new Date(t.to!).toISOString()]]);
      const onSwift = await Repository.open(s3, TEST_REPO);
      for (const at of moments) await restoresExactly(onSwift, at, 'swift');

      // Another repository, other keys: every segment and record opened and sealed again.
      const other = path.join(dir, 'other-keys');
      const otherPassword = path.join(dir, 'other-password');
      const password = 'the second copy has a password of its own';
      fs.writeFileSync(otherPassword, `${password}\n`, { mode: 0o600 });
      const init = await runCli(['backup', 'init', '--repo', other, '--password-file', otherPassword]);
      expect(init.code, init.stderr).toBe(0);
      const keys = ['--from-password-file', TEST_PASSWORD_FILE, '--password-file', otherPassword];
      const down = await copied(['--from', url, '--to', other, ...keys], env);
      expect(down).toMatchObject({ mode: 'blobs', created: false, copied: bases });
      expect(down.logArchive).toMatchObject({ segments: t.segments.length, present: 0 });
      const otherRepo = await Repository.open(new DirStorage(other), { password: async () => Buffer.from(password) });
      for (const at of moments) await restoresExactly(otherRepo, at, 'other-keys');
      // The restore path an operator takes: the built CLI's restore --at, from the copy.
      const cliTo = path.join(dir, 'cli-restored');
      const cli = await runCli(['backup', 'restore', '--repo', other, '--password-file', otherPassword, '--at', new Date(t.to!).toISOString(), '--to', cliTo]);
      expect(cli.code, cli.stderr).toBe(0);
      expect(writers.mismatch(await readState(cliTo, WRITERS), writers.bounds(t.to!), true)).toBeNull();

      const again = await copied(['--from', url, '--to', other, ...keys], env);
      expect(again).toMatchObject({ copied: [], alreadyThere: bases, packsSent: 0, blobsSent: 0 });
      expect(again.logArchive).toMatchObject({ segments: 0, records: 0, present: t.segments.length + t.bases.length + t.marks.length });
    } finally {
      await emptyAndClose(s3);
    }
  });
});
