import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirStorage } from '../dist/agent/storage/dir-storage.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { collect, expectKind, failure, names, runStorageConformance } from './support/storage-conformance.js';

function tempRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'node-admin-dir-storage-'));
}

runStorageConformance('dir (file://)', async () => {
  const root = tempRoot();
  return {
    storage: new DirStorage(path.join(root, 'repo')),
    cleanup: async () => fs.rmSync(root, { recursive: true, force: true }),
  };
}, { writer: true });

describe('dir storage on disk', () => {
  let root: string;
  beforeEach(() => {
    root = tempRoot();
  });
  afterEach(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('keeps each object as a file at its name, creates the root on the first put, leaves no temp files', async () => {
    const repo = path.join(root, 'not', 'yet');
    const s = new DirStorage(repo);
    expect(await names(s, '')).toEqual([]); // a missing root is an empty storage
    expect(await s.stat('a')).toBeNull();
    await s.put('data/ab/cdef', Buffer.from('hello'));
    await s.putStream('data/ab/big', () => fs.createReadStream(path.join(repo, 'data', 'ab', 'cdef')), 5);
    expect(fs.readFileSync(path.join(repo, 'data', 'ab', 'cdef'), 'utf8')).toBe('hello');
    expect(fs.readdirSync(path.join(repo, 'data', 'ab')).sort()).toEqual(['big', 'cdef']);
    expect((fs.statSync(path.join(repo, 'data', 'ab', 'cdef')).mode & 0o777).toString(8)).toBe('640');
  });

  it('get refuses an object larger than it reads whole (CORRUPT, before reading it); up to the limit it reads', async () => {
    const s = new DirStorage(root, 10);
    await s.put('snapshots/at-limit', Buffer.alloc(10, 1));
    await s.put('snapshots/over', Buffer.alloc(11, 1));
    expect((await s.get('snapshots/at-limit')).length).toBe(10);
    const err = await failure(s.get('snapshots/over'));
    expectKind(err, 'permanent');
    expect(err.code).toBe('CORRUPT');
    expect(err.message).toMatch(/11 bytes, more than the 10/);
    // The default limit (1 GiB), against a sparse file just over it: refused without allocating a byte of it.
    const big = path.join(root, 'index', 'huge');
    fs.mkdirSync(path.dirname(big), { recursive: true });
    fs.closeSync(fs.openSync(big, 'w'));
    fs.truncateSync(big, 1024 ** 3 + 1);
    const rssBefore = process.memoryUsage().rss;
    expectKind(await failure(new DirStorage(root).get('index/huge')), 'permanent');
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 1024 * 1024);
  });

  it('does not list temp files left by a crash, nor foreign files with names it would refuse', async () => {
    const s = new DirStorage(root);
    await s.put('index/one', Buffer.from('1'));
    fs.writeFileSync(path.join(root, 'index', 'two~0123456789ab.tmp'), 'partial');
    fs.writeFileSync(path.join(root, 'index', 'README.TXT'), 'foreign');
    fs.mkdirSync(path.join(root, 'Upper'));
    fs.writeFileSync(path.join(root, 'Upper', 'x'), 'foreign');
    expect(await collect(s.list(''))).toEqual([{ name: 'index/one', size: 1 }]);
  });

  it('fails permanent when a name collides with another one\'s directory (a vs a/b)', async () => {
    const s = new DirStorage(root);
    await s.put('a', Buffer.from('file'));
    expectKind(await failure(s.put('a/b', Buffer.from('x'))), 'permanent');
    await s.put('c/d', Buffer.from('x'));
    expectKind(await failure(s.put('c', Buffer.from('x'))), 'permanent');
    expect(await names(s, '')).toEqual(['a', 'c/d']);
  });

  it('fails permanent (not not-found) when the directory is not writable', async () => {
    if (process.getuid?.() === 0) {
      // root ignores permissions: use a path under a file instead
      fs.writeFileSync(path.join(root, 'file'), '');
      const s = new DirStorage(path.join(root, 'file', 'repo'));
      expectKind(await failure(s.put('x', Buffer.from('x'))), 'permanent');
      return;
    }
    fs.chmodSync(root, 0o500);
    try {
      const s = new DirStorage(root);
      expectKind(await failure(s.put('x', Buffer.from('x'))), 'permanent');
    } finally {
      fs.chmodSync(root, 0o700);
    }
  });

  it('is unreachable (STORAGE_UNAVAILABLE), not empty, while its root is not a directory, so no new repository is made there', async () => {
    const repo = path.join(root, 'repo');
    const s = new DirStorage(repo);
    await s.put('config', Buffer.from('c'));
    await s.put('data/ab/cd', Buffer.from('d'));
    // Swapped away for a file (a mount gone wrong): every read fails, none says "no such object".
    fs.renameSync(repo, `${repo}.away`);
    fs.writeFileSync(repo, 'away');
    for (const attempt of [() => s.get('config'), () => s.getRange('data/ab/cd', 0, 1), () => s.stat('config'), () => collect(s.list('')), () => collect(s.list('data/'))]) {
      const err = await failure(attempt());
      expect(err.code, err.message).toBe('STORAGE_UNAVAILABLE');
      expect(err.message).toContain('is not a directory');
    }
    // Back: the same objects. Negative control: under a root that is a directory, a missing name is
    // not found, and a root never written is an empty location.
    fs.rmSync(repo);
    fs.renameSync(`${repo}.away`, repo);
    expect((await s.get('config')).toString()).toBe('c');
    expectKind(await failure(s.get('nope')), 'not-found');
    expect(await s.stat('nope')).toBeNull();
    expect(await names(new DirStorage(path.join(root, 'never')), '')).toEqual([]);
    expectKind(await failure(new DirStorage(path.join(root, 'never')).get('config')), 'not-found');
  });

  it('stores nothing into another directory at its root\'s path (mounted over, swapped in): STORAGE_UNAVAILABLE until a new instance opens it', async () => {
    const repo = path.join(root, 'repo');
    const s = new DirStorage(repo);
    await s.put('config', Buffer.from('mine'));
    // What a mount over the path does: another directory there (here, one renamed in).
    fs.renameSync(repo, `${repo}.mine`);
    fs.mkdirSync(repo);
    fs.writeFileSync(path.join(repo, 'config'), 'theirs');
    const refusals = [
      await failure(s.put('data/ab/one', Buffer.from('x'))),
      await failure(s.putStream('data/ab/two', () => Readable.from([Buffer.from('x')]), 1)),
      await failure(s.delete('config')),
    ];
    const w = s.openWriter();
    await w.write(Buffer.from('x'), 0);
    refusals.push(await failure(w.commit('data/ab/three', 1)));
    for (const err of refusals) {
      expect(err.code, err.message).toBe('STORAGE_UNAVAILABLE');
      expect(err.message).toContain('is not the directory this process opened');
    }
    // Nothing reached the other directory, and its config is untouched.
    expect(fs.readdirSync(repo)).toEqual(['config']);
    expect(fs.readFileSync(path.join(repo, 'config'), 'utf8')).toBe('theirs');
    // A new instance (a restart) opens what is there now.
    const fresh = new DirStorage(repo);
    expect((await fresh.get('config')).toString()).toBe('theirs');
    await fresh.put('data/ab/one', Buffer.from('x'));
    // Negative control: its own directory back at the path, the first instance stores again.
    fs.renameSync(repo, `${repo}.theirs`);
    fs.renameSync(`${repo}.mine`, repo);
    await s.put('data/ab/one', Buffer.from('x'));
    expect((await s.get('config')).toString()).toBe('mine');
  });

  it('opens from a file:/// URL through openStorage, with the wrappers', async () => {
    const s = await openStorage(`file://${root}/repo`, { logger: pino({ level: 'silent' }) });
    expect(s.description).toBe(`file://${root}/repo`);
    await s.put('k', Buffer.from('v'));
    expect(fs.readFileSync(path.join(root, 'repo', 'k'), 'utf8')).toBe('v');
    await s.close();
  });

  it('writes in pieces through a temp file it never lists, and leaves none after a commit, a failed commit or an abort', async () => {
    const s = new DirStorage(path.join(root, 'repo'));
    const w = s.openWriter();
    await w.write(Buffer.from('partial'), 0);
    const temps = () => fs.readdirSync(path.join(root, 'repo')).filter((n) => n.endsWith('.tmp'));
    expect(temps()).toHaveLength(1); // the crash case: what a kill -9 here would leave
    expect(await names(s, '')).toEqual([]);
    await w.commit('data/ab/pack', 7);
    expect(fs.readFileSync(path.join(root, 'repo', 'data', 'ab', 'pack'), 'utf8')).toBe('partial');
    expect((fs.statSync(path.join(root, 'repo', 'data', 'ab', 'pack')).mode & 0o777).toString(8)).toBe('640');
    const bad = s.openWriter();
    await bad.write(Buffer.from('xy'), 0);
    expectKind(await failure(bad.commit('data/ab/other', 3)), 'permanent');
    const gone = s.openWriter();
    await gone.write(Buffer.from('xy'), 4096);
    await gone.abort();
    expect(temps()).toEqual([]);
    expect(await names(s, '')).toEqual(['data/ab/pack']);
  });

  it('leaves no temp file when aborted while writes are on their way', async () => {
    const s = new DirStorage(path.join(root, 'repo'));
    fs.mkdirSync(path.join(root, 'repo'));
    for (let i = 0; i < 20; i++) {
      const w = s.openWriter();
      // Settled as they go (a write the abort overtakes is refused: that is fine, a leftover is not).
      // The first write's partial page goes the ordinary way after its direct part, possibly after the
      // abort: the writer must not create its temp file again then (a property of the contract; this
      // loop does not force that interleaving, it only gives it 20 chances).
      const writes = Promise.allSettled([w.write(Buffer.alloc(8192 + 100, 1), 0), w.write(Buffer.alloc(100, 2), 8192 * (2 + (i % 3)))]);
      await w.abort();
      await writes;
      await w.abort(); // what a caller does once its writes have settled
    }
    expect(fs.readdirSync(path.join(root, 'repo'))).toEqual([]);
  });

  it('deletes writers\' temp files a crash left a day ago, and no others, when it next writes in pieces', async () => {
    const repo = path.join(root, 'repo');
    fs.mkdirSync(repo);
    const old = path.join(repo, '~0123456789abcdef.tmp');
    const fresh = path.join(repo, '~fedcba9876543210.tmp');
    const foreign = path.join(repo, '~keep-me.tmp');
    for (const f of [old, fresh, foreign]) fs.writeFileSync(f, 'x');
    const dayAndMinute = new Date(Date.now() - 24 * 3600_000 - 60_000);
    fs.utimesSync(old, dayAndMinute, dayAndMinute);
    fs.utimesSync(foreign, dayAndMinute, dayAndMinute);
    const s = new DirStorage(repo);
    const w = s.openWriter();
    await w.write(Buffer.from('x'), 0);
    await w.commit('k', 1);
    await expect.poll(() => fs.existsSync(old)).toBe(false);
    expect(fs.existsSync(fresh)).toBe(true);
    expect(fs.existsSync(foreign)).toBe(true);
  });

  it('keeps openWriter through the wrappers openStorage stacks (else backups would buffer whole packs)', async () => {
    const logged = await openStorage(`file://${root}/repo`, { logger: pino({ level: 'silent' }) });
    const bare = await openStorage(`file://${root}/repo`, { retry: false });
    for (const s of [logged, bare]) {
      const w = s.openWriter!();
      await w.write(Buffer.from('v'), 0);
      await w.commit('k', 1);
      expect((await s.get('k')).toString()).toBe('v');
      await s.close();
    }
  });

  it('refuses a relative root', () => {
    expect(() => new DirStorage('relative/path')).toThrow(/absolute/);
  });
});
