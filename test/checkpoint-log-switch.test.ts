/**
 * A log switch right after the build pinned the live log: the checkpoint must still be a prefix of the
 * write history. The interleaving is forced, not hoped for: the build's first fstat of a pinned log (its
 * pin) is where a writer process, asked through a file, writes g1 into that log, fills the memtable so
 * LevelDB switches to a new log, and writes g2 into the new one. A build that then pinned the new log as
 * well would keep g2 but lose g1 (the old log cut at its pin): a hole, which this test catches (it did,
 * against the build that listed the directory twice; docs/checkpoint-design.md).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCheckpointSync } from '../dist/agent/checkpoint/build-checkpoint.js';
import { cloneDbSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { ROOT, tempDir } from './support/processes.js';

const WRITER = path.join(ROOT, 'test', 'support', 'log-switch-writer.mjs');
const cell = new Int32Array(new SharedArrayBuffer(4));

/** Waits, blocking (the build is synchronous), until `file` exists. */
function waitForFile(file: string, child: ChildProcess): void {
  const deadline = Date.now() + 120_000;
  while (!fs.existsSync(file)) {
    if (child.exitCode !== null) throw new Error(`the writer exited (${child.exitCode}) before ${path.basename(file)}`);
    if (Date.now() > deadline) throw new Error(`no ${path.basename(file)} within 120 s`);
    Atomics.wait(cell, 0, 0, 2);
  }
}

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('a log switch right after the live log is pinned', () => {
  it('leaves a prefix: g2 (written after the switch) only with g1 (written before it)', async () => {
    const dir = tempDir('log-switch');
    dirs.push(dir);
    const dbPath = path.join(dir, 'db');
    const ctl = path.join(dir, 'ctl');
    const child = spawn(process.execPath, [WRITER, dbPath, ctl], { stdio: ['ignore', 'inherit', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (fs.existsSync(`${ctl}.ready`)) resolve(clearInterval(t));
        else if (child.exitCode !== null) reject(new Error(`the writer exited (${child.exitCode})`));
      }, 5);
    });
    const logsBefore = fs.readdirSync(dbPath).filter((n) => n.endsWith('.log'));

    const realFstat = fs.fstatSync;
    let pins = 0;
    let logsAfterSwitch: string[] = [];
    // The first fstat of the build is the pin of a log (pinLogs: open, then fstat for its size).
    (fs as { fstatSync: typeof fs.fstatSync }).fstatSync = ((fd: number, options?: fs.StatOptions) => {
      const st = realFstat(fd, options as fs.StatOptions & { bigint?: false });
      if (++pins === 1) {
        fs.writeFileSync(`${ctl}.go`, '');
        waitForFile(`${ctl}.done`, child);
        logsAfterSwitch = fs.readdirSync(dbPath).filter((n) => n.endsWith('.log'));
      }
      return st;
    }) as typeof fs.fstatSync;
    const target = path.join(dir, 'checkpoint');
    try {
      buildCheckpointSync(dbPath, target);
    } finally {
      (fs as { fstatSync: typeof fs.fstatSync }).fstatSync = realFstat;
    }
    child.kill('SIGKILL');

    // The case under test happened: the hook ran at a pin, and LevelDB switched logs inside it.
    expect(pins).toBeGreaterThan(0);
    expect(logsBefore).toHaveLength(1);
    expect(logsAfterSwitch.some((n) => !logsBefore.includes(n))).toBe(true);

    const clone = path.join(dir, 'clone');
    cloneDbSync(target, clone);
    const db = new ClassicLevel(clone, { createIfMissing: false, valueEncoding: 'utf8' });
    await db.open();
    try {
      const g1 = await db.get('g1');
      const g2 = await db.get('g2');
      const seeds = (await db.keys({ gte: 'seed', lt: 'seee' }).all()).length;
      // Everything acknowledged before the build started is there.
      expect(seeds).toBe(100);
      // A prefix: whatever holds g2 (after the switch) holds g1 (before it).
      if (g2 !== undefined) expect(g1).toBe('g1');
    } finally {
      await db.close();
    }
  });
});
