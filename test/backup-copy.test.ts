import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CopyProgress, CopySummary } from '../dist/shared/api.js';
import { createOfflineCheckpoint } from '../dist/agent/index.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { verifyRepository } from '../dist/agent/backup/verify-repository.js';
import { selectSnapshots } from '../dist/agent/backup/copy-snapshots.js';
import { copyRepository } from '../dist/agent/backup/copy-repository.js';
import { openCopyDestination } from '../dist/agent/backup/copy-session.js';
import type { Snapshot } from '../dist/agent/repository/format.js';
import { canonicalJson, packName } from '../dist/agent/repository/format.js';
import { CLI, ROOT, runCli, tempDir, type CliResult } from './support/processes.js';
import { emptyAndClose, s3ProcessEnv, s3Server, s3TestStorage } from './support/s3-server.js';
import { TEST_PASSWORD, TEST_PASSWORD_FILE, TEST_REPO } from './support/test-password.js';

/**
 * `backup copy` through the built CLI, on real repositories (a real classic-level database backed up
 * twice, the second after 5 % of its keys changed), file:// and the Swift s3api server on either side.
 * What is counted is what reached the destination: the copy's own summary, checked against the
 * destination's listing and the inodes of its pack files (a pack put again gets a new one).
 */

const dir = tempDir('backup-copy');
const db = path.join(dir, 'db');
const source = path.join(dir, 'A');
const OTHER_PASSWORD = 'another password, another repository';
const OTHER_PASSWORD_FILE = path.join(dir, 'other-password');
const KEYS = 3000;
let first: string;
let second: string;
/** What the second backup stored at the source: a copy of it into a copy of the first sends no more. */
let secondUploaded = 0;
let firstUploaded = 0;
/** The reference: each backup restored from the source. */
const reference = new Map<string, string>();

interface CopyRun extends CliResult {
  summary: CopySummary | null;
  progress: CopyProgress[];
}

function ndjson(r: CliResult): CopyRun {
  const lines = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { progress?: CopyProgress; summary?: CopySummary });
  return { ...r, summary: lines.find((l) => l.summary)?.summary ?? null, progress: lines.flatMap((l) => (l.progress ? [l.progress] : [])) };
}

async function copy(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CopyRun> {
  return ndjson(await runCli(['backup', 'copy', '--json', ...args], { env }));
}

/** A copy that must succeed: its summary. */
async function copied(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CopySummary> {
  const r = await copy(args, env);
  expect(r.code, r.stderr).toBe(0);
  expect(r.summary).not.toBeNull();
  return r.summary!;
}

function errorCode(r: CliResult): string {
  return (JSON.parse(r.stderr.trim()) as { error: { code: string; message: string } }).error.code;
}

function errorMessage(r: CliResult): string {
  return (JSON.parse(r.stderr.trim()) as { error: { code: string; message: string } }).error.message;
}

/** A copy run as a process, watched through its NDJSON progress. */
function spawnCopy(args: string[]) {
  const child = spawn(process.execPath, [CLI, 'backup', 'copy', '--json', ...args], {
    cwd: ROOT,
    env: { ...process.env, NODE_ADMIN_SOCKET: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let done = false;
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  void exited.then(() => (done = true));
  const progress = () => ndjson({ code: null, stdout: out.slice(0, out.lastIndexOf('\n') + 1), stderr: '' }).progress;
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return {
    output: () => out,
    ended: () => done,
    /** Resolves once a progress line satisfies `condition`; rejects if the copy ends first. */
    until: (condition: (p: CopyProgress) => boolean) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (progress().some(condition)) {
            child.stdout.off('data', check);
            resolve();
          }
        };
        child.stdout.on('data', check);
        check();
        void exited.then(() => (progress().some(condition) ? resolve() : reject(new Error(`the copy ended first:\n${out}`))));
      }),
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

async function open(storage: Storage, password = TEST_PASSWORD): Promise<Repository> {
  return Repository.open(storage, { password: async () => Buffer.from(password), cryptoThreads: 0 });
}

/** Restores backup `id` from `storage` into a fresh directory; returns it. */
async function restoreFrom(storage: Storage, id: string, password = TEST_PASSWORD): Promise<string> {
  const repo = await open(storage, password);
  const to = path.join(dir, `restored-${randomBytes(4).toString('hex')}`);
  await restoreBackup({ repo, id, to });
  return to;
}

function expectSameFiles(expected: string, actual: string): void {
  const names = fs.readdirSync(expected).sort();
  expect(fs.readdirSync(actual).sort()).toEqual(names);
  for (const n of names) expect(fs.readFileSync(path.join(actual, n)).equals(fs.readFileSync(path.join(expected, n))), n).toBe(true);
}

/** Both backups restore from `storage` exactly as from the source. */
async function expectRestoresExact(storage: Storage, password = TEST_PASSWORD, ids = [first, second]): Promise<void> {
  for (const id of ids) expectSameFiles(reference.get(id)!, await restoreFrom(storage, id, password));
}

/** A directory repository's pack files: name -> inode (a pack put again, even with the same bytes, gets a new inode). */
function packFiles(repoDir: string): Map<string, number> {
  const out = new Map<string, number>();
  const data = path.join(repoDir, 'data');
  if (!fs.existsSync(data)) return out;
  for (const sub of fs.readdirSync(data)) {
    for (const f of fs.readdirSync(path.join(data, sub))) {
      if (/^[0-9a-f]{64}$/.test(f)) out.set(f, fs.statSync(path.join(data, sub, f)).ino);
    }
  }
  return out;
}

function snapshotsAt(repoDir: string): string[] {
  const d = path.join(repoDir, 'snapshots');
  return fs.existsSync(d) ? fs.readdirSync(d).sort() : [];
}

async function putRandom(keys: number, from = 0): Promise<void> {
  const level = new ClassicLevel<string, Buffer>(db, { valueEncoding: 'buffer' });
  await level.open();
  for (let i = from; i < from + keys; i++) await level.put(`key-${String(i).padStart(6, '0')}`, randomBytes(8000));
  await level.close();
}

async function backUp(repo: Repository): Promise<{ id: string; uploaded: number }> {
  const checkpoint = await createOfflineCheckpoint({ dbPath: db, checkpointDir: path.join(dir, 'checkpoints') });
  const record = await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(null) });
  return { id: record.id, uploaded: record.bytesUploaded ?? 0 };
}

beforeAll(async () => {
  fs.writeFileSync(OTHER_PASSWORD_FILE, `${OTHER_PASSWORD}\n`, { mode: 0o600 });
  // ~24 MB of incompressible values: three packs. Then 5 % of the keys written again, and a second backup.
  await putRandom(KEYS);
  // Settled: the log flushed into tables, compacted, so that the change below is all the second backup adds.
  const level = new ClassicLevel(db);
  await level.open();
  await level.compactRange('', '\uffff');
  await level.close();
  const repo = await Repository.open(new DirStorage(source), { create: true, ...TEST_REPO, cryptoThreads: 0 });
  ({ id: first, uploaded: firstUploaded } = await backUp(repo));
  await putRandom(KEYS / 20, 1000);
  ({ id: second, uploaded: secondUploaded } = await backUp(repo));
  for (const id of [first, second]) reference.set(id, await restoreFrom(new DirStorage(source), id));
}, 120_000);

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('backup copy', () => {
  it('file -> file with the same keys: the destination is made with the source keys, packs move byte for byte, restores exact; again sends nothing', async () => {
    const to = path.join(dir, 'B');
    const run = await copy(['--from', source, '--to', to, '--all']);
    expect(run.code, run.stderr).toBe(0);
    const once = run.summary!;
    expect(once).toMatchObject({ mode: 'packs', created: true, copied: [first, second], alreadyThere: [] });
    // The NDJSON progress counts what the summary says, as it goes.
    const last = run.progress.at(-1)!;
    expect([last.phase, last.snapshotsDone, last.packsSent, last.blobsSent, last.bytesSent]).toEqual(['finishing', 2, once.packsSent, once.blobsSent, once.bytesSent]);
    expect(once.blobsSent).toBeGreaterThan(once.packsSent);
    const sourcePacks = packFiles(source);
    expect(once.packsSent).toBe(sourcePacks.size);
    expect(once.bytesSent).toBeGreaterThan(20 * 1024 * 1024);
    // Same key objects, same pack names and bytes; a config of its own.
    expect(fs.readdirSync(path.join(to, 'keys'))).toEqual(fs.readdirSync(path.join(source, 'keys')));
    expect([...packFiles(to).keys()].sort()).toEqual([...sourcePacks.keys()].sort());
    for (const pack of sourcePacks.keys()) expect(fs.readFileSync(path.join(to, packName(pack))).equals(fs.readFileSync(path.join(source, packName(pack)))), pack).toBe(true);
    expect((await open(new DirStorage(to))).config.id).not.toBe((await open(new DirStorage(source))).config.id);
    await expectRestoresExact(new DirStorage(to));

    // Again: nothing sent, and nothing put at the destination (every pack file keeps its inode).
    const before = packFiles(to);
    const again = await copied(['--from', source, '--to', to, '--all']);
    expect(again).toMatchObject({ created: false, copied: [], alreadyThere: [first, second], packsSent: 0, blobsSent: 0, bytesSent: 0 });
    expect(packFiles(to)).toEqual(before);
    expect(snapshotsAt(to)).toEqual([first, second]);
    const verify = await runCli(['backup', 'verify', '--repo', to, '--read-data']);
    expect(verify.code, verify.stderr).toBe(0);
  });

  it('after a 5 % change, a copy sends about 5 %: exactly what the new backup added (the newest backup only, into a copy of the first)', async () => {
    expect(secondUploaded / firstUploaded).toBeLessThan(0.1); // the fixture: the second backup added about 5 %
    const to = path.join(dir, 'C');
    const base = await copied(['--from', source, '--to', to, first]);
    expect(base.copied).toEqual([first]);
    const delta = await copied(['--from', source, '--to', to, '--latest', '1']);
    expect(delta.copied).toEqual([second]);
    expect(delta.bytesSent).toBe(secondUploaded); // its packs, as they are
    expect(delta.bytesSent / base.bytesSent).toBeLessThan(0.1);
    await expectRestoresExact(new DirStorage(to), TEST_PASSWORD, [second]);
  });

  it('file -> Swift and Swift -> file: restores exact from each', async () => {
    const server = s3Server();
    const env = s3ProcessEnv(server);
    const prefix = `copy-${randomBytes(4).toString('hex')}`;
    const s3 = s3TestStorage({ prefix });
    try {
      const url = `s3://${server.bucket}/${prefix}`;
      const up = await copied(['--from', source, '--to', url, '--all'], env);
      expect(up).toMatchObject({ mode: 'packs', created: true, copied: [first, second] });
      await expectRestoresExact(s3, TEST_PASSWORD, [second]);
      const back = path.join(dir, 'from-swift');
      const down = await copied(['--from', url, '--to', back, '--all'], env);
      expect(down).toMatchObject({ mode: 'packs', created: true, copied: [first, second], packsSent: up.packsSent });
      await expectRestoresExact(new DirStorage(back), TEST_PASSWORD, [second]);
    } finally {
      await emptyAndClose(s3);
    }
  });

  it('different keys: blobs are opened and sealed again, trees rewritten; restores exact, dedup holds, again sends nothing', async () => {
    const to = path.join(dir, 'G');
    const init = await runCli(['backup', 'init', '--repo', to, '--password-file', OTHER_PASSWORD_FILE]);
    expect(init.code, init.stderr).toBe(0);
    const keys = ['--from-password-file', TEST_PASSWORD_FILE, '--password-file', OTHER_PASSWORD_FILE];
    const base = await copied(['--from', source, '--to', to, first, ...keys]);
    expect(base).toMatchObject({ mode: 'blobs', created: false, copied: [first] });
    const delta = await copied(['--from', source, '--to', to, '--all', ...keys]);
    expect(delta).toMatchObject({ mode: 'blobs', copied: [second], alreadyThere: [first] });
    // Sealed again, blob by blob: sizes differ from the source's by the seals and packing, not by data sent again.
    expect(delta.bytesSent).toBeGreaterThan(0);
    expect(delta.bytesSent).toBeLessThan(secondUploaded * 1.05);
    expect(delta.bytesSent / base.bytesSent).toBeLessThan(0.1);
    // The snapshot keeps its id and metadata; its tree is another blob (the destination's ids).
    const [a, g] = [await open(new DirStorage(source)), await open(new DirStorage(to), OTHER_PASSWORD)];
    const [sa, sg] = [await a.readSnapshot(second), await g.readSnapshot(second)];
    expect(sg.tree).not.toBe(sa.tree);
    expect({ ...sg, tree: '' }).toEqual({ ...sa, tree: '' });
    // No pack of the source is stored as it is at the destination.
    const shared = [...packFiles(to).keys()].filter((p) => packFiles(source).has(p));
    expect(shared).toEqual([]);
    await expectRestoresExact(new DirStorage(to), OTHER_PASSWORD);
  });

  it('format 2 -> format 3: the copy makes an encrypted repository; restores exact', async () => {
    const old = path.join(dir, 'format2');
    const plain = await Repository.open(new DirStorage(old), { create: true, insecureNoEncryption: true });
    const { id } = await backUp(plain);
    const storage = new DirStorage(old);
    const config = JSON.parse((await storage.get('config')).toString('utf8')) as Record<string, unknown>;
    delete config.encryption;
    delete config.compression;
    await storage.put('config', Buffer.from(canonicalJson({ ...config, version: 1 })));
    expect((await Repository.open(new DirStorage(old))).formatVersion).toBe(2);

    const to = path.join(dir, 'format3');
    const moved = await copied(['--from', old, '--to', to, '--all']);
    expect(moved).toMatchObject({ mode: 'blobs', created: true, copied: [id] });
    const repo = await open(new DirStorage(to));
    expect([repo.formatVersion, repo.codec.encrypted]).toEqual([3, true]);
    const want = await restoreFrom(new DirStorage(old), id);
    expectSameFiles(want, await restoreFrom(new DirStorage(to), id));
    // Back into format 2 only with the flag that allows it (the same rule as backups).
    const fresh = path.join(dir, 'format2-b');
    fs.cpSync(old, fresh, { recursive: true });
    fs.rmSync(path.join(fresh, 'snapshots'), { recursive: true });
    const denied = await copy(['--from', to, '--to', fresh, '--all']);
    expect([denied.code, errorCode(denied)]).toEqual([4, 'PLAINTEXT_REFUSED']);
    const allowed = await copied(['--from', to, '--to', fresh, '--all', '--allow-format-2']);
    expect(allowed.copied).toEqual([id]);
    expectSameFiles(want, await restoreFrom(new DirStorage(fresh), id));
  });

  it('kill -9 while packs are being sent (a prune of the source refused meanwhile), then again: the packs already stored are not sent again; the result is exact', async () => {
    const to = path.join(dir, 'K');
    // Paced (5 MB/s: a pack every 1.6 s) so that a kill after the first pack lands before the last: the
    // conditions, read from its progress, decide when, not a sleep.
    const run = spawnCopy(['--from', source, '--to', to, '--all', '--limit-upload', '5']);
    await run.until((p) => p.phase === 'copying');
    const prune = await runCli(['backup', 'prune', '--repo', source, '--keep-last', '5', '--dry-run', '--json']);
    expect(run.ended()).toBe(false); // the prune ran while the copy held its lock
    expect([prune.code, errorCode(prune)]).toEqual([4, 'REPOSITORY_LOCKED']);
    await run.until((p) => p.packsSent > 0);
    await run.kill();
    // The kill landed inside the copy: some packs stored, not all, no snapshot, no summary.
    const stored = packFiles(to);
    const total = packFiles(source).size;
    expect(run.output()).not.toContain('"summary"');
    expect(stored.size).toBeGreaterThan(0);
    expect(stored.size).toBeLessThan(total);
    expect(snapshotsAt(to)).toEqual([]);

    const rerun = await copied(['--from', source, '--to', to, '--all']);
    expect(rerun.copied).toEqual([first, second]);
    // Nothing sent twice: the rerun sent exactly the packs the first run had not, and those stored keep their inodes.
    expect(rerun.packsSent).toBe(total - stored.size);
    const after = packFiles(to);
    expect(after.size).toBe(total);
    for (const [pack, inode] of stored) expect(after.get(pack), pack).toBe(inode);
    await expectRestoresExact(new DirStorage(to));

    // Negative control: a pack put again with the very same bytes does change its inode (the check above can fail).
    const [pack] = [...stored.keys()];
    await new DirStorage(to).put(packName(pack!), fs.readFileSync(path.join(to, packName(pack!))));
    expect(packFiles(to).get(pack!)).not.toBe(stored.get(pack!));
    // The killed copy's lock (its process is gone, the lock not yet expired) is removed as an operator
    // would; then the same prune goes through (the refusal above was the copy's lock).
    fs.rmSync(path.join(source, 'locks'), { recursive: true, force: true });
    const later = await runCli(['backup', 'prune', '--repo', source, '--keep-last', '5', '--dry-run']);
    expect(later.code, later.stderr).toBe(0);
  });

  it('a cancelled copy indexes the packs it stored as they are: the next run finds them in the index and sends none again', async () => {
    const to = path.join(dir, 'cancelled');
    const from = await open(new DirStorage(source));
    const cut = new AbortController();
    let sentAtCut = 0;
    try {
      // Paced (5 MB/s) so that the cut lands between the first pack and the last of the first backup.
      const copying = copyRepository({
        from,
        openTo: () => openCopyDestination(new DirStorage(to), from, { password: async () => Buffer.from(TEST_PASSWORD) }),
        select: { all: true },
        logArchive: false,
        bandwidthLimit: 5_000_000,
        signal: cut.signal,
        onProgress: (p) => {
          if ('packsSent' in p && p.packsSent > 0 && !cut.signal.aborted) {
            sentAtCut = p.packsSent;
            cut.abort();
          }
        },
      });
      await expect(copying).rejects.toMatchObject({ code: 'CANCELLED' });
    } finally {
      await from.codec.close();
    }
    const stored = packFiles(to);
    expect(sentAtCut).toBeGreaterThan(0);
    expect(stored.size).toBeGreaterThan(0);
    expect(stored.size).toBeLessThan(packFiles(source).size);
    const dest = await open(new DirStorage(to));
    await dest.loadIndex();
    expect([...stored.keys()].filter((p) => !dest.packs.has(p))).toEqual([]);
    await dest.codec.close();

    const rerun = await copied(['--from', source, '--to', to, '--all']);
    // Found in the index, not recovered from headers; none sent again.
    expect(rerun.packsRecovered).toBe(0);
    expect(rerun.packsSent).toBe(packFiles(source).size - stored.size);
    for (const [pack, inode] of stored) expect(packFiles(to).get(pack), pack).toBe(inode);
    await expectRestoresExact(new DirStorage(to));
  });

  it('kill -9 of a copy that seals blobs again, then again: no blob is stored twice; the result is exact', async () => {
    const to = path.join(dir, 'K2');
    expect((await runCli(['backup', 'init', '--repo', to, '--password-file', OTHER_PASSWORD_FILE])).code).toBe(0);
    const keys = ['--from-password-file', TEST_PASSWORD_FILE, '--password-file', OTHER_PASSWORD_FILE];
    const run = spawnCopy(['--from', source, '--to', to, first, '--limit-upload', '5', ...keys]);
    await run.until((p) => p.packsSent > 0);
    await run.kill();
    const stored = packFiles(to);
    expect(run.output()).not.toContain('"summary"');
    expect(stored.size).toBeGreaterThan(0);
    expect(snapshotsAt(to)).toEqual([]);

    const rerun = await copied(['--from', source, '--to', to, first, ...keys]);
    expect(rerun).toMatchObject({ mode: 'blobs', copied: [first] });
    for (const [pack, inode] of stored) expect(packFiles(to).get(pack), pack).toBe(inode);
    // Every blob in one pack only, by the packs' own headers: a blob sent again would be in two.
    const repo = await open(new DirStorage(to), OTHER_PASSWORD);
    const listed: string[] = [];
    for (const pack of packFiles(to).keys()) listed.push(...repo.codec.readPackTail(pack, fs.readFileSync(path.join(to, packName(pack)))).map(([id]) => id));
    expect(listed.length).toBeGreaterThan(stored.size);
    expect(new Set(listed).size).toBe(listed.length);
    await expectRestoresExact(new DirStorage(to), OTHER_PASSWORD, [first]);
    fs.rmSync(path.join(source, 'locks'), { recursive: true, force: true }); // the killed copy's (see above)
  });

  it('a flipped byte in a source pack fails the copy naming the pack; the destination verifies clean', async () => {
    const damaged = path.join(dir, 'damaged');
    fs.cpSync(source, damaged, { recursive: true });
    const repo = await open(new DirStorage(damaged));
    await repo.loadIndex();
    const tree = (await repo.readSnapshot(second)).tree;
    const [victim, at] = [...repo.blobs].find(([id, loc]) => id !== tree && loc.length > 4096)!;
    const file = path.join(damaged, packName(at.pack));
    const bytes = fs.readFileSync(file);
    bytes.writeUInt8(bytes.readUInt8(at.offset + 100) ^ 0x01, at.offset + 100);
    fs.writeFileSync(file, bytes);
    // Negative control: the damage is where a reader looks (verify of the source copy fails on it).
    expect((await verifyRepository(await open(new DirStorage(damaged)), { readData: true })).ok).toBe(false);

    for (const to of [path.join(dir, 'D-packs'), path.join(dir, 'D-blobs')]) {
      const blobs = to.endsWith('blobs');
      if (blobs) expect((await runCli(['backup', 'init', '--repo', to, '--password-file', OTHER_PASSWORD_FILE])).code).toBe(0);
      const r = await copy(['--from', damaged, '--to', to, '--all', ...(blobs ? ['--from-password-file', TEST_PASSWORD_FILE, '--password-file', OTHER_PASSWORD_FILE] : [])]);
      expect(r.code, r.stderr).toBe(7);
      expect(errorCode(r)).toBe('CORRUPT');
      expect(errorMessage(r)).toContain(packName(at.pack));
      expect(r.summary).toBeNull();
      expect(packFiles(to).has(at.pack)).toBe(false);
      const report = await verifyRepository(await open(new DirStorage(to), blobs ? OTHER_PASSWORD : TEST_PASSWORD), { readData: true });
      expect(report.errors).toEqual([]);
    }
    expect(victim).toBeDefined();

    // Cut short instead (shorter than the index says): refused the same way, naming it.
    fs.writeFileSync(file, bytes.subarray(0, at.offset + 100));
    const to = path.join(dir, 'D-short');
    const r = await copy(['--from', damaged, '--to', to, '--all']);
    expect(r.code, r.stderr).toBe(7);
    expect(errorCode(r)).toBe('CORRUPT');
    expect(errorMessage(r)).toContain(packName(at.pack));
    expect(packFiles(to).has(at.pack)).toBe(false);
  });

  it('a copy from or into a repository a prune holds (its exclusive lock) is refused, and stores nothing', async () => {
    const to = path.join(dir, 'P');
    await copied(['--from', source, '--to', to, first]);
    for (const [locked, into] of [
      [source, to],
      [to, to],
    ] as const) {
      const repo = await open(new DirStorage(locked));
      const lock = await repo.lock('prune', true);
      try {
        const r = await copy(['--from', source, '--to', into, '--all']);
        expect([r.code, errorCode(r)]).toEqual([4, 'REPOSITORY_LOCKED']);
        expect(snapshotsAt(into)).toEqual([first]);
      } finally {
        await lock.release();
      }
    }
    // A destination yet to be made is not made while the source is locked.
    const fresh = path.join(dir, 'P-new');
    const lock = await (await open(new DirStorage(source))).lock('prune', true);
    try {
      const r = await copy(['--from', source, '--to', fresh, '--all']);
      expect([r.code, errorCode(r)]).toEqual([4, 'REPOSITORY_LOCKED']);
      expect(fs.existsSync(fresh) ? fs.readdirSync(fresh) : []).toEqual([]);
    } finally {
      await lock.release();
    }
    // Negative control: with the lock released, the same copies go through.
    expect((await copied(['--from', source, '--to', to, '--all'])).copied).toEqual([second]);
    expect((await copied(['--from', source, '--to', fresh, first])).created).toBe(true);
  });

  it('a wrong --from-password-file: WRONG_PASSWORD, nothing written; a selection must be exactly one way', async () => {
    const to = path.join(dir, 'W');
    const r = await copy(['--from', source, '--to', to, '--all', '--from-password-file', OTHER_PASSWORD_FILE]);
    expect([r.code, errorCode(r)]).toEqual([8, 'WRONG_PASSWORD']);
    expect(errorMessage(r)).toContain(source);
    expect(fs.existsSync(to) ? fs.readdirSync(to) : []).toEqual([]);
    for (const args of [[], [first, '--all'], ['--latest', '0'], ['--since', 'seq:12']]) {
      const bad = await copy(['--from', source, '--to', to, ...args]);
      expect([bad.code, errorCode(bad)], args.join(' ')).toEqual([2, 'INVALID_ARGUMENT']);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(fs.existsSync(to) ? fs.readdirSync(to) : []).toEqual([]);
    const unknown = await copy(['--from', source, '--to', to, '20200101t000000000z-abcd']);
    expect([unknown.code, errorCode(unknown)]).toEqual([3, 'NOT_FOUND']);
  });

  it('several backups named: each is copied, oldest first (yargs once kept only the last); an option given twice is refused', async () => {
    const to = path.join(dir, 'N');
    const twice = await copy(['--from', source, '--to', to, '--to', path.join(dir, 'N2'), first]);
    expect([twice.code, errorCode(twice)]).toEqual([2, 'INVALID_ARGUMENT']);
    expect(errorMessage(twice)).toBe('--to is given more than once; give it once');
    expect(fs.existsSync(to) || fs.existsSync(path.join(dir, 'N2'))).toBe(false);
    const r = await copied(['--from', source, '--to', to, second, first]);
    expect(r).toMatchObject({ created: true, copied: [first, second], alreadyThere: [] });
    expect(snapshotsAt(to)).toEqual([first, second]);
    await expectRestoresExact(new DirStorage(to));
  });

  it('backup init --copy-keys-from makes a repository the source copies into byte for byte; --since selects by time', async () => {
    const to = path.join(dir, 'L');
    const init = await runCli(['backup', 'init', '--repo', to, '--copy-keys-from', source, '--from-password-file', TEST_PASSWORD_FILE, '--json']);
    expect(init.code, init.stderr).toBe(0);
    expect(fs.readdirSync(path.join(to, 'keys'))).toEqual(fs.readdirSync(path.join(source, 'keys')));
    const a = await open(new DirStorage(source));
    const since = (await a.readSnapshot(second)).createdAt;
    const r = await copied(['--from', source, '--to', to, '--since', since]);
    expect(r).toMatchObject({ mode: 'packs', created: false, copied: [second] });
    await expectRestoresExact(new DirStorage(to), TEST_PASSWORD, [second]);
  });
});

describe('selectSnapshots', () => {
  const at = (id: string, createdAt: string) => ({ id, createdAt }) as unknown as Snapshot;
  const all = [at('20261203t000000000z-cccc', '2026-12-03T00:00:00.000Z'), at('20261201t000000000z-aaaa', '2026-12-01T00:00:00.000Z'), at('20261202t000000000z-bbbb', '2026-12-02T00:00:00.000Z')];
  const ids = (s: Snapshot[]) => s.map((x) => x.id.slice(-4));
  it.each([
    [{ all: true as const }, ['aaaa', 'bbbb', 'cccc']],
    [{ latest: 2 }, ['bbbb', 'cccc']],
    [{ latest: 5 }, ['aaaa', 'bbbb', 'cccc']],
    [{ since: '2026-12-02T00:00:00.000Z' }, ['bbbb', 'cccc']],
    [{ since: '2026-12-04T00:00:00.000Z' }, []],
    [{ ids: ['20261203t000000000z-cccc', '20261201t000000000z-aaaa', '20261203t000000000z-cccc'] }, ['aaaa', 'cccc']],
  ])('%j -> %j, oldest first', (select, want) => {
    expect(ids(selectSnapshots(all, select))).toEqual(want);
  });
  it('a given id the source lacks is NOT_FOUND', () => {
    expect(() => selectSnapshots(all, { ids: ['20200101t000000000z-abcd'] })).toThrow(/no backup 20200101t000000000z-abcd/);
  });
});
