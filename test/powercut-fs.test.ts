import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { tempDir } from './support/processes.js';
import { mountPowercut, type PowercutMount } from './support/powercut-fs.js';
import { powercutRequired, powercutSkip } from './support/powercut-suite.js';

/**
 * The power-cut filesystem's own rules, each with its negative control: the same steps with the sync that
 * makes the difference, and without it. Every check reads the backing tree after the cut and unmount,
 * which is what the next mount shows.
 */

const skip = powercutSkip();

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}

function writeFile(p: string, data: string, options: { sync?: 'fsync' | 'fdatasync' | 'none'; flags?: number } = {}): void {
  const fd = fs.openSync(p, options.flags ?? fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o644);
  fs.writeSync(fd, data);
  if (options.sync === 'fsync') fs.fsyncSync(fd);
  if (options.sync === 'fdatasync') fs.fdatasyncSync(fd);
  fs.closeSync(fd);
}

function read(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

let mounted: PowercutMount | null = null;
afterEach(async () => {
  await mounted?.unmount().catch(() => {});
  mounted = null;
});
const bases: string[] = [];
afterAll(() => {
  for (const b of bases.splice(0)) fs.rmSync(b, { recursive: true, force: true });
});
function freshBase(): string {
  const base = tempDir('powercut-fs');
  bases.push(base);
  return base;
}

/**
 * A fresh base with `before` laid out in the backing tree (durable: it is there at mount), then `act` on
 * the mount, then the power cut; returns the backing tree as the next mount would show it.
 */
async function afterPowerCut(before: (data: string) => void, act: (mnt: string) => void): Promise<string> {
  const base = freshBase();
  fs.mkdirSync(path.join(base, 'data'));
  before(path.join(base, 'data'));
  mounted = await mountPowercut(base);
  act(mounted.mnt);
  await mounted.cut();
  const exit = await mounted.unmount();
  mounted = null;
  expect(exit.cut).toBe(true);
  return path.join(base, 'data');
}

const nothing = () => {};

// Where CI requires the suite (.ci/run, on a machine with /dev/fuse), a skip fails the run.
it.runIf(skip !== null && powercutRequired())('the power-cut suite runs where /dev/fuse exists', () => {
  throw new Error(`the power-cut suite was skipped on a machine with /dev/fuse: ${skip}`);
});

describe.skipIf(skip !== null)(`power-cut filesystem${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('keeps what was there at mount, hard links included', async () => {
    const data = await afterPowerCut(
      (d) => {
        fs.mkdirSync(path.join(d, 'sub'));
        fs.writeFileSync(path.join(d, 'sub', 'a'), 'alpha');
        fs.linkSync(path.join(d, 'sub', 'a'), path.join(d, 'b'));
      },
      nothing,
    );
    expect(read(path.join(data, 'sub', 'a'))).toBe('alpha');
    expect(fs.statSync(path.join(data, 'b')).ino).toBe(fs.statSync(path.join(data, 'sub', 'a')).ino);
  });

  it('loses a write that was not synced, keeps one that was (fsync, fdatasync, O_SYNC, O_DSYNC)', async () => {
    const names = ['none', 'fsync', 'fdatasync', 'osync', 'odsync'] as const;
    const data = await afterPowerCut(
      (d) => names.forEach((n) => fs.writeFileSync(path.join(d, n), 'old')),
      (m) => {
        writeFile(path.join(m, 'none'), 'new', { sync: 'none' });
        writeFile(path.join(m, 'fsync'), 'new', { sync: 'fsync' });
        writeFile(path.join(m, 'fdatasync'), 'new', { sync: 'fdatasync' });
        writeFile(path.join(m, 'osync'), 'new', { flags: fs.constants.O_WRONLY | fs.constants.O_TRUNC | fs.constants.O_SYNC });
        writeFile(path.join(m, 'odsync'), 'new', { flags: fs.constants.O_WRONLY | fs.constants.O_TRUNC | fs.constants.O_DSYNC });
      },
    );
    expect(read(path.join(data, 'none'))).toBe('old');
    for (const n of names.slice(1)) expect(read(path.join(data, n)), n).toBe('new');
  });

  it('loses a new file whose directory was not fsynced, even with its data synced; keeps it once the directory is', async () => {
    const data = await afterPowerCut(nothing, (m) => {
      writeFile(path.join(m, 'lost'), 'x', { sync: 'fsync' });
      writeFile(path.join(m, 'kept'), 'y', { sync: 'fsync' });
      writeFile(path.join(m, 'empty'), 'z', { sync: 'none' });
      fs.renameSync(path.join(m, 'lost'), path.join(m, 'kept2'));
      fs.renameSync(path.join(m, 'kept2'), path.join(m, 'lost'));
      fsyncPath(m);
      fs.unlinkSync(path.join(m, 'lost')); // after the fsync: not durable, so the file is back
      writeFile(path.join(m, 'late'), 'w', { sync: 'fsync' }); // after the fsync: lost
    });
    expect(read(path.join(data, 'kept'))).toBe('y');
    expect(read(path.join(data, 'lost'))).toBe('x');
    // Its entry is durable, its contents never synced: the worst case is an empty file.
    expect(read(path.join(data, 'empty'))).toBe('');
    expect(read(path.join(data, 'late'))).toBeNull();
  });

  it('a rename without a directory fsync is lost (the old name back), with one it holds', async () => {
    const atomicReplace = (m: string, name: string) => {
      writeFile(path.join(m, `${name}.tmp`), 'new', { sync: 'fsync' });
      fs.renameSync(path.join(m, `${name}.tmp`), path.join(m, name));
    };
    const data = await afterPowerCut(
      (d) => {
        fs.mkdirSync(path.join(d, 'synced'));
        fs.mkdirSync(path.join(d, 'unsynced'));
        for (const dir of ['synced', 'unsynced']) {
          fs.writeFileSync(path.join(d, dir, 'target'), 'old');
          fs.writeFileSync(path.join(d, dir, 'moved'), 'm');
        }
      },
      (m) => {
        for (const dir of ['synced', 'unsynced']) {
          atomicReplace(path.join(m, dir), 'target');
          fs.renameSync(path.join(m, dir, 'moved'), path.join(m, dir, 'moved-to'));
        }
        fsyncPath(path.join(m, 'synced'));
      },
    );
    expect(read(path.join(data, 'unsynced', 'target'))).toBe('old');
    expect(read(path.join(data, 'unsynced', 'moved'))).toBe('m');
    expect(read(path.join(data, 'unsynced', 'moved-to'))).toBeNull();
    expect(fs.readdirSync(path.join(data, 'unsynced')).sort()).toEqual(['moved', 'target']);
    expect(read(path.join(data, 'synced', 'target'))).toBe('new');
    expect(fs.readdirSync(path.join(data, 'synced')).sort()).toEqual(['moved-to', 'target']);
  });

  it('a hard link without a directory fsync is lost; with one it is the same inode', async () => {
    const data = await afterPowerCut(
      (d) => {
        fs.mkdirSync(path.join(d, 'a'));
        fs.mkdirSync(path.join(d, 'b'));
        fs.writeFileSync(path.join(d, 'a', 'f'), 'f');
      },
      (m) => {
        fs.linkSync(path.join(m, 'a', 'f'), path.join(m, 'b', 'lost'));
        fs.linkSync(path.join(m, 'a', 'f'), path.join(m, 'a', 'kept'));
        fsyncPath(path.join(m, 'a'));
      },
    );
    expect(read(path.join(data, 'b', 'lost'))).toBeNull();
    expect(fs.statSync(path.join(data, 'a', 'kept')).ino).toBe(fs.statSync(path.join(data, 'a', 'f')).ino);
    expect(fs.statSync(path.join(data, 'a', 'f')).nlink).toBe(2);
  });

  it('a directory made without its parent fsynced is lost with everything in it; with it, kept', async () => {
    const data = await afterPowerCut(nothing, (m) => {
      for (const top of ['moved-back', 'kept']) {
        fs.mkdirSync(path.join(m, top, 'inner'), { recursive: true });
        writeFile(path.join(m, top, 'inner', 'f'), 'data', { sync: 'fsync' });
        fsyncPath(path.join(m, top, 'inner'));
        fsyncPath(path.join(m, top));
      }
      fsyncPath(m); // makes both durable...
      fs.renameSync(path.join(m, 'moved-back'), path.join(m, 'moved')); // ...and this move is not
      fs.mkdirSync(path.join(m, 'kept2'));
    });
    expect(fs.readdirSync(data).sort()).toEqual(['kept', 'moved-back']);
    expect(read(path.join(data, 'kept', 'inner', 'f'))).toBe('data');
    expect(read(path.join(data, 'moved-back', 'inner', 'f'))).toBe('data');
    const data2 = await afterPowerCut(nothing, (m) => {
      fs.mkdirSync(path.join(m, 'top', 'inner'), { recursive: true });
      writeFile(path.join(m, 'top', 'inner', 'f'), 'data', { sync: 'fsync' });
      fsyncPath(path.join(m, 'top', 'inner'));
      fsyncPath(path.join(m, 'top')); // the root never fsynced: `top` and all of it are lost
    });
    expect(fs.readdirSync(data2)).toEqual([]);
  });

  it('an unlink or rmdir without a directory fsync is undone, with the durable contents', async () => {
    const data = await afterPowerCut(
      (d) => {
        fs.writeFileSync(path.join(d, 'f'), 'durable');
        fs.mkdirSync(path.join(d, 'dir'));
        fs.writeFileSync(path.join(d, 'dir', 'g'), 'g');
        fs.writeFileSync(path.join(d, 'gone'), 'x');
      },
      (m) => {
        writeFile(path.join(m, 'f'), 'changed', { flags: fs.constants.O_WRONLY | fs.constants.O_TRUNC }); // unsynced
        fs.unlinkSync(path.join(m, 'f'));
        fs.unlinkSync(path.join(m, 'dir', 'g'));
        fs.rmdirSync(path.join(m, 'dir'));
        fs.unlinkSync(path.join(m, 'gone'));
        writeFile(path.join(m, 'gone'), 'y', { sync: 'fsync' }); // a new inode under an old name
      },
    );
    expect(read(path.join(data, 'f'))).toBe('durable');
    expect(read(path.join(data, 'dir', 'g'))).toBe('g');
    expect(read(path.join(data, 'gone'))).toBe('x');
  });

  it('fails every operation with EIO once the power is cut', async () => {
    const base = freshBase();
    mounted = await mountPowercut(base);
    fs.writeFileSync(path.join(mounted.mnt, 'f'), 'x');
    await mounted.cut();
    expect(() => fs.writeFileSync(path.join(mounted!.mnt, 'g'), 'x')).toThrow(/EIO/);
    expect(() => fs.readdirSync(mounted!.mnt)).toThrow(/EIO/);
  });

  it('cuts itself right after the N-th counted operation, and keeps the live tree on a clean unmount', async () => {
    // create, write, fsync, fsyncdir: cut after 3 the entry is lost, after 4 it is kept.
    const run = async (cutAfter?: number) => {
      const base = freshBase();
      mounted = await mountPowercut(base, cutAfter === undefined ? {} : { cutAfter });
      let failed: string | null = null;
      try {
        writeFile(path.join(mounted.mnt, 'f'), 'x', { sync: 'fsync' });
        fsyncPath(mounted.mnt);
      } catch (err) {
        failed = (err as NodeJS.ErrnoException).code ?? 'error';
      }
      const exit = await mounted.unmount();
      mounted = null;
      return { exit, failed, file: read(path.join(base, 'data', 'f')) };
    };
    const three = await run(3);
    expect(three.exit).toMatchObject({ ops: 3, cut: true });
    expect(three.failed).toBe('EIO');
    expect(three.file).toBeNull();
    const four = await run(4);
    expect(four.exit).toMatchObject({ ops: 4, cut: true });
    expect(four.failed).toBeNull();
    expect(four.file).toBe('x');
    const clean = await run();
    expect(clean.exit).toMatchObject({ ops: 4, cut: false, counts: expect.objectContaining({ create: 1, write: 1, fsync: 1, fsyncdir: 1 }) });
    expect(clean.file).toBe('x');
  });
});
