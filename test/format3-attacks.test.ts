/**
 * Format 3 against a store that changes what it holds: one flipped bit in every kind of object, blobs
 * swapped or re-pointed, a snapshot under another's name, a log segment cut short, a config rewritten as
 * plaintext, a pack header moved. Each time the operation that reads the object (open, list, restore,
 * restore --at, verify --read-data) fails with a named error and leaves nothing at the restore target;
 * the unmodified repository restores byte-exactly before and after, so every refusal is the damage's.
 *
 * The repository is real: a file:// repository, a real classic-level database backed up by an embedded
 * agent whose log archive ran (so it holds a timeline record and segments, one of several 64 KiB chunks).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import type { BackupRecord } from '../dist/shared/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { CHUNK_SIZE, canonicalJson, packName, type IndexFile, type Tree } from '../dist/agent/repository/format.js';
import { deriveKeys } from '../dist/agent/repository/crypto/index.js';
import { sealBlob } from '../dist/agent/repository/sealed-ops.js';
import { restoreBackup } from '../dist/agent/backup/restore-backup.js';
import { verifyRepository } from '../dist/agent/backup/verify-repository.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import { chooseBase } from '../dist/agent/log-archive/timeline-windows.js';
import { markName } from '../dist/agent/log-archive/segment.js';
import { runCli, tempDir, type CliResult } from './support/processes.js';
import { TEST_KDF, TEST_REPO } from './support/test-password.js';
import { until } from './support/pitr-writers.js';

const silent = pino({ level: 'silent' });
/** The envelope's header: "NASEAL03", the chunk shift, a 32-byte salt. */
const SEAL_HEADER = 41;
const TAG = 16;
/** Objects (log segments among them) are sealed in chunks of 64 KiB of plaintext, each with its tag. */
const SEALED_CHUNK = 64 * 1024 + TAG;

let dir: string;
let repoDir: string;
let repoUrl: string;
/** Restore targets are made in here: after a refusal it must be empty (no target, no temp sibling). */
let targets: string;
let storage: Storage;
let db: ClassicLevel<string, Buffer>;
let agent: Agent | null = null;
/** The backup the blob attacks restore, the base backup of the timeline, and their checkpoints. */
let mine: BackupRecord;
let base: BackupRecord;
let mineCheckpoint: string;
/** The database's content when the agent stopped, every write archived: what restore --at latest gives. */
let finalState: Map<string, string>;
/** The sequence number of each key written after the base backup (the keys before it are in every restore). */
const sequenceOf = new Map<string, number>();

// Object names, found once the repository is made.
const configName = 'config';
let keyName: string;
let indexNames: string[];
let segmentNames: string[];
let baseRecordNames: string[];

/** The path of object `name` in the directory repository. */
const file = (name: string) => path.join(repoDir, ...name.split('/'));

/** Every object of the repository, name -> SHA-256 of its bytes. */
function repositoryState(): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(repoDir, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(name);
      else out.set(name, createHash('sha256').update(fs.readFileSync(path.join(repoDir, name))).digest('hex'));
    }
  };
  walk('');
  return out;
}

/** Runs `fn` while object `name` holds `change(its bytes)`; puts the original bytes back after. */
async function damaged<T>(name: string, change: (bytes: Buffer) => Buffer, fn: () => Promise<T>): Promise<T> {
  const original = fs.readFileSync(file(name));
  const changed = change(Buffer.from(original));
  expect(changed.equals(original)).toBe(false);
  fs.writeFileSync(file(name), changed);
  try {
    return await fn();
  } finally {
    fs.writeFileSync(file(name), original);
  }
}

const flip =
  (at: number, bit = 0) =>
  (b: Buffer): Buffer => {
    const i = at < 0 ? b.length + at : at;
    b[i] = b[i]! ^ (1 << bit);
    return b;
  };

/** Places to flip in an envelope of `length` bytes at `start`: its salt (header), its middle, its last tag. */
function envelopePlaces(start: number, length: number): { where: string; at: number }[] {
  return [
    { where: 'header (salt)', at: start + 20 },
    { where: 'middle', at: start + Math.floor(length / 2) },
    { where: 'tag', at: start + length - 3 },
  ];
}

/** Opened once, as a long-running reader keeps it (every operation reads its objects afresh). */
let shared: Repository;

/**
 * `fn` on the shared repository, or on one opened now (`fresh`): where the attack is on what opening
 * reads (the config, the keys), or to check that nothing was cached.
 */
async function withRepo<T>(fn: (repo: Repository) => Promise<T>, how: 'shared' | 'fresh' = 'shared'): Promise<T> {
  if (how === 'shared') return fn(shared.on(storage));
  const repo = await Repository.open(storage, TEST_REPO);
  try {
    return await fn(repo);
  } finally {
    await repo.codec.close();
  }
}

let targetCount = 0;
const newTarget = () => path.join(targets, `restored-${++targetCount}`);

/** Nothing at the target and nothing beside it (no `.restored-N.restoring-*`, no `.pitr-*`). */
function nothingRestored(): void {
  expect(fs.readdirSync(targets)).toEqual([]);
}

interface Expected {
  code: string;
  /** Text the message must hold (the object's name, mostly); of a list, any one (reads made at once: the first to fail is named). */
  names: string | readonly string[];
}

async function refused(p: Promise<unknown>, e: Expected): Promise<string> {
  let err: unknown = null;
  try {
    await p;
  } catch (caught) {
    err = caught;
  }
  const names = typeof e.names === 'string' ? [e.names] : e.names;
  expect(err, `expected ${e.code} naming ${names.join(' or ')}`).not.toBeNull();
  const { code, message } = err as { code?: string; message: string };
  expect({ code, names: names.some((n) => message.includes(n)) }, message).toEqual({ code: e.code, names: true });
  expect(message).not.toContain('\n');
  return message;
}

type How = 'shared' | 'fresh';
const restore = (id: string, e: Expected, how: How = 'shared') => refused(withRepo((repo) => restoreBackup({ repo, id, to: newTarget() }), how), e).finally(nothingRestored);
const restoreAt = (e: Expected, at: number | 'latest' = 'latest', how: How = 'shared') =>
  refused(withRepo((repo) => restoreToMoment({ repo, at, to: newTarget() }), how), e).finally(nothingRestored);
const list = (e: Expected) => refused(withRepo((repo) => repo.listSnapshots()), e);
const open = (e: Expected) => refused(withRepo(async () => null, 'fresh'), e);
/** The moment a segment's name says it reaches: a restore to it reads the segment. */
const segmentEnd = (name: string) => Number(name.split('-').at(-1));

/** verify --read-data's report: not ok, and an error naming `names`. */
async function verifyFinds(names: string): Promise<string[]> {
  const report = await withRepo((repo) => verifyRepository(repo, { readData: true }));
  expect(report.ok).toBe(false);
  expect(report.errors.some((e) => e.includes(names)), report.errors.join('\n')).toBe(true);
  return report.errors;
}

/** Every file of a directory, name -> bytes. */
function filesOf(d: string): Map<string, Buffer> {
  return new Map(fs.readdirSync(d).sort().map((n) => [n, fs.readFileSync(path.join(d, n))]));
}

async function readAll(dbDir: string): Promise<Map<string, string>> {
  const r = new ClassicLevel<string, Buffer>(dbDir, { createIfMissing: false, valueEncoding: 'buffer' });
  await r.open();
  const out = new Map<string, string>();
  for await (const [k, v] of r.iterator()) out.set(k, v.toString('hex'));
  await r.close();
  return out;
}

/** The negative control: the repository as it is restores byte-exactly, to a backup and to the latest moment. */
async function restoresExactly(how: How): Promise<void> {
  await withRepo(async (repo) => {
    expect((await repo.listSnapshots()).map((s) => s.id).sort()).toEqual([base.id, mine.id].sort());
    const report = await verifyRepository(repo, { readData: true });
    expect(report.errors).toEqual([]);
    const to = newTarget();
    await restoreBackup({ repo, id: mine.id, to });
    const got = filesOf(to);
    const want = filesOf(mineCheckpoint);
    expect([...got.keys()]).toEqual([...want.keys()]);
    for (const [n, bytes] of want) expect(got.get(n)!.equals(bytes), n).toBe(true);
    const at = newTarget();
    await restoreToMoment({ repo, at: 'latest', to: at });
    expect(await readAll(at)).toEqual(finalState);
    // The moment the first segment ends (attacks restore to it): from the first base, up to its last batch.
    const first = segmentNames[0]!;
    const last = Number(first.split('/').at(-1)!.split('-')[1]);
    const earlier = newTarget();
    const result = await restoreToMoment({ repo, at: segmentEnd(first), to: earlier });
    expect(result.backup).toBe(base.id);
    expect(result.reached.sequence).toBe(last);
    expect(await readAll(earlier)).toEqual(new Map([...finalState].filter(([k]) => (sequenceOf.get(k) ?? 0) <= last)));
  }, how);
}

/** Where blobs live: [id, pack, offset, length] of the chunks of backup `mine`'s files, and its tree. */
interface Placed {
  id: string;
  pack: string;
  offset: number;
  length: number;
}
let chunks: Placed[];
let tree: Placed;
/** The chunks of the base backup (the timeline's), by id. */
let baseChunks: Set<string>;

/** One error line on stderr naming `names`, exit code `exit`; stdout empty (verify prints its report there first). */
function oneErrorLine(r: CliResult, code: string, exit: number, names: string, stdout: 'empty' | 'report' = 'empty'): void {
  if (stdout === 'empty') expect(r.stdout).toBe('');
  else expect(r.stdout).toMatch(/FAILED/);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^node-admin: .*\\(${code}\\)$`));
  expect(lines[0]).toContain(names);
  expect(r.code).toBe(exit);
}

beforeAll(async () => {
  dir = tempDir('f3-attacks');
  repoDir = path.join(dir, 'repo');
  repoUrl = pathToFileURL(repoDir).href;
  targets = path.join(dir, 'targets');
  fs.mkdirSync(targets);
  const dbPath = path.join(dir, 'db');
  storage = await openStorage(repoUrl, { logger: silent });
  // Made here, with the tests' cheap key (the agent would make a key that takes half a second to open).
  await (await Repository.open(storage, { create: true, cryptoThreads: 0, ...TEST_REPO })).codec.close();

  db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
  await db.open();
  let sequence = 0;
  // ~2.5 MB of settled, incompressible tables: a table of 2 MiB makes two full 1 MiB chunks (blobs of one size).
  for (let b = 0; b < 5; b++) {
    await db.batch(Array.from({ length: 500 }, (_, i) => ({ type: 'put' as const, key: `base/${b}/${String(i).padStart(4, '0')}`, value: randomBytes(1000) })));
    sequence += 500;
  }
  await db.compactRange('base/', 'base/~');

  agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    backup: { repository: repoUrl, logArchive: { intervalMs: 200 }, kdfCost: TEST_KDF },
    logger: silent,
  });
  await agent.start();
  const shipped = async (seq: number) => ((await readWindows(storage)).timelines[0]?.lastSequence ?? -1) >= seq;
  await until('the log archive to start its timeline', () => shipped(sequence));
  // Writes the archive ships: small ones, and one batch of incompressible values (a segment of several chunks).
  for (let i = 0; i < 50; i++) {
    await db.put(`small/${i}`, Buffer.from(`value ${i}`));
    sequenceOf.set(`small/${i}`, ++sequence);
  }
  await db.batch(Array.from({ length: 50 }, (_, i) => ({ type: 'put' as const, key: `big/${i}`, value: randomBytes(4000) })));
  for (let i = 0; i < 50; i++) sequenceOf.set(`big/${i}`, ++sequence);
  await until('the writes archived', () => shipped(sequence));
  mine = await agent.createBackup({ checkpointId: (await agent.createCheckpoint({ label: 'mine' })).id });
  mineCheckpoint = (await agent.getCheckpoint(mine.checkpoint.id)).path;
  base = (await agent.listBackups()).find((b) => b.id !== mine.id)!;
  for (let i = 0; i < 20; i++) {
    await db.put(`after/${i}`, Buffer.from(`later ${i}`));
    sequenceOf.set(`after/${i}`, ++sequence);
  }
  // ...and `mine` registered as a second base of the timeline (its record follows the segment that covers it).
  await until('the last writes archived', async () => (await shipped(sequence)) && (await readWindows(storage)).timelines[0]!.bases.length === 2);
  await agent.stop();
  agent = null;
  finalState = new Map();
  for await (const [k, v] of db.iterator()) finalState.set(k, v.toString('hex'));

  const names = [...repositoryState().keys()];
  keyName = names.find((n) => n.startsWith('keys/'))!;
  indexNames = names.filter((n) => n.startsWith('index/'));
  segmentNames = names.filter((n) => /^wal\/[^/]+\/seg\//.test(n));
  baseRecordNames = names.filter((n) => /^wal\/[^/]+\/base\//.test(n));
  expect(names.filter((n) => n.startsWith('keys/'))).toHaveLength(1);
  expect(indexNames.length).toBeGreaterThan(0);
  expect(segmentNames.length).toBeGreaterThan(0);
  // One timeline, based on both backups.
  expect(baseRecordNames).toHaveLength(2);

  shared = await Repository.open(storage, TEST_REPO);
  await withRepo(async (repo) => {
    await repo.loadIndex();
    const snapshot = await repo.readSnapshot(mine.id);
    const place = (id: string): Placed => ({ id, ...repo.blobs.get(id)! });
    tree = place(snapshot.tree);
    const t = JSON.parse((await repo.readBlob(snapshot.tree, 'tree')).toString('utf8')) as Tree;
    chunks = t.files.flatMap((f) => f.chunks).map(place);
    const b = JSON.parse((await repo.readBlob((await repo.readSnapshot(base.id)).tree, 'tree')).toString('utf8')) as Tree;
    baseChunks = new Set(b.files.flatMap((f) => f.chunks));
  });
}, 180_000);

beforeEach(() => {
  // Each test starts with no target: a test that failed to refuse leaves its restore to itself.
  fs.rmSync(targets, { recursive: true, force: true });
  fs.mkdirSync(targets);
});

afterAll(async () => {
  await agent?.stop();
  await shared?.codec.close();
  await db?.close();
  await storage?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('format 3 under attack: one flipped bit in every kind of object', () => {
  it('negative control: the repository as made restores byte-exactly, to the backup and to the latest moment', async () => {
    await restoresExactly('shared');
  });

  it('pack, a data blob: restore, restore --at and verify --read-data name the pack; nothing is restored', async () => {
    // A chunk of a table both backups hold: restore --at (from the base backup) reads it too.
    const victim = chunks.find((c) => c.length > 64 * 1024 && baseChunks.has(c.id))!;
    expect(victim, 'a table chunk in both backups').toBeDefined();
    const pack = packName(victim.pack);
    for (const { at } of envelopePlaces(victim.offset, victim.length)) {
      await damaged(pack, flip(at), async () => {
        await restore(mine.id, { code: 'CORRUPT', names: pack });
        await verifyFinds(`object ${pack} is damaged: blob ${victim.id}`);
      });
    }
    await damaged(pack, flip(victim.offset + 100), async () => {
      await restoreAt({ code: 'CORRUPT', names: pack }, segmentEnd(segmentNames[0]!));
      oneErrorLine(await runCli(['backup', 'restore', mine.id, '--repo', repoUrl, '--to', newTarget()]), 'CORRUPT', 7, pack);
      nothingRestored();
      oneErrorLine(await runCli(['backup', 'verify', '--read-data', '--repo', repoUrl]), 'CORRUPT', 7, pack, 'report');
    });
  });

  it('pack, the tree blob: restore names the pack', async () => {
    const pack = packName(tree.pack);
    for (const { at } of envelopePlaces(tree.offset, tree.length)) {
      await damaged(pack, flip(at), () => restore(mine.id, { code: 'CORRUPT', names: pack }));
    }
  });

  it('pack, its sealed header and trailer: verify --read-data names the pack (the reader of headers, with the indexing of packs no index lists)', async () => {
    const pack = packName(chunks[0]!.pack);
    const size = fs.statSync(file(pack)).size;
    const bytes = fs.readFileSync(file(pack));
    const headerLength = bytes.readUInt32LE(size - 12);
    const headerStart = size - 12 - headerLength;
    const places = [...envelopePlaces(headerStart, headerLength).map((p) => p.at), size - 12 /* its length */, size - 1 /* the magic */];
    for (const at of places) {
      await damaged(pack, flip(at), () => verifyFinds(`object ${pack} is damaged`));
    }
  });

  it('index: every operation that loads the index fails naming it', async () => {
    const name = indexNames[0]!;
    const size = fs.statSync(file(name)).size;
    for (const { at } of envelopePlaces(0, size)) {
      await damaged(name, flip(at), async () => {
        await restore(mine.id, { code: 'CORRUPT', names: name });
        await restoreAt({ code: 'CORRUPT', names: name });
        await refused(withRepo((repo) => verifyRepository(repo, { readData: true })), { code: 'CORRUPT', names: name });
      });
    }
  });

  it('snapshot: list and restore fail naming it', async () => {
    const name = `snapshots/${mine.id}`;
    const size = fs.statSync(file(name)).size;
    for (const { at } of envelopePlaces(0, size)) {
      await damaged(name, flip(at), async () => {
        await list({ code: 'CORRUPT', names: name });
        await restore(mine.id, { code: 'CORRUPT', names: name });
      });
    }
    // Through the CLI: one line, exit 7.
    await damaged(name, flip(Math.floor(size / 2)), async () => {
      oneErrorLine(await runCli(['backup', 'list', '--repo', repoUrl]), 'CORRUPT', 7, name);
      const to = newTarget();
      oneErrorLine(await runCli(['backup', 'restore', mine.id, '--repo', repoUrl, '--to', to]), 'CORRUPT', 7, name);
      nothingRestored();
    });
  });

  it('key: the password no longer opens it: WRONG_PASSWORD (exit 8), nothing restored', async () => {
    const text = fs.readFileSync(file(keyName), 'utf8');
    const keyField = text.indexOf('"key":"') + 7;
    const saltField = text.indexOf('"salt":"') + 8;
    const nField = text.indexOf('"N":') + 4;
    // The wrapped master key's envelope, bit by bit (re-encoded, so the file still parses): header, middle, tag.
    const wrapped = (at: number) => (bytes: Buffer) => {
      const kf = JSON.parse(bytes.toString('utf8')) as { key: string };
      const envelope = Buffer.from(kf.key, 'base64');
      envelope[at] = envelope[at]! ^ 1;
      return Buffer.from(text.replace(kf.key, envelope.toString('base64')));
    };
    const changes: [string, (b: Buffer) => Buffer][] = [
      ['wrapped key, header', wrapped(20)],
      ['wrapped key, middle', wrapped(SEAL_HEADER + 10)],
      ['wrapped key, tag', wrapped(SEAL_HEADER + 32 + TAG - 1)],
      ['a byte of the key text', flip(keyField + 5, 1)],
      ['the kdf salt', flip(saltField + 3, 1)],
      ['the kdf cost N', flip(nField, 0)],
      ['the JSON itself', flip(0, 0)],
    ];
    for (const [where, change] of changes) {
      await damaged(keyName, change, async () => {
        const message = await open({ code: 'WRONG_PASSWORD', names: repoUrl });
        expect(message, where).toMatch(/1 key tried; or its keys or config are damaged/);
        await restore(mine.id, { code: 'WRONG_PASSWORD', names: repoUrl }, 'fresh');
      });
    }
    await damaged(keyName, wrapped(SEAL_HEADER + 10), async () => {
      oneErrorLine(await runCli(['backup', 'restore', mine.id, '--repo', repoUrl, '--to', newTarget()]), 'WRONG_PASSWORD', 8, repoUrl);
      nothingRestored();
    });
  });

  it('config: it no longer authenticates under the key: refused at open (WRONG_PASSWORD, exit 8; CORRUPT once not even sealed)', async () => {
    const size = fs.statSync(file(configName)).size;
    for (const { at } of envelopePlaces(0, size)) {
      await damaged(configName, flip(at), async () => {
        await open({ code: 'WRONG_PASSWORD', names: repoUrl });
        await restoreAt({ code: 'WRONG_PASSWORD', names: repoUrl }, 'latest', 'fresh');
      });
    }
    // Its magic: then it is not an envelope at all, and not a plaintext config either.
    await damaged(configName, flip(0), () => open({ code: 'CORRUPT', names: repoUrl }));
    await damaged(configName, flip(size - 1), async () => {
      oneErrorLine(await runCli(['backup', 'verify', '--read-data', '--repo', repoUrl]), 'WRONG_PASSWORD', 8, repoUrl);
    });
  });

  it('timeline record: restore --at fails naming it; a record forged under a new name too', async () => {
    for (const name of baseRecordNames) {
      const size = fs.statSync(file(name)).size;
      for (const { at } of envelopePlaces(0, size)) {
        await damaged(name, flip(at), () => restoreAt({ code: 'CORRUPT', names: name }));
      }
    }
    // A record the store made up: backup `mine` said to be restorable from just after the first base.
    // Trusted, a restore to that moment would give `mine`'s later state; it is refused instead.
    const [first, second] = [...baseRecordNames].sort((a, b) => Number(a.split('-').at(-2)) - Number(b.split('-').at(-2))) as [string, string];
    const firstFrom = Number(first.split('-').at(-2));
    const parts = second.split('-');
    parts[parts.length - 2] = String(firstFrom + 1).padStart(13, '0');
    const forged = parts.join('-');
    fs.copyFileSync(file(second), file(forged));
    try {
      // The forged name does steer the choice: the windows, read from names, pick `mine` for that moment.
      expect(chooseBase(await readWindows(storage), firstFrom + 1)?.base.backup).toBe(mine.id);
      await restoreAt({ code: 'CORRUPT', names: forged }, firstFrom + 1);
    } finally {
      fs.rmSync(file(forged));
    }
  });

  it('a stop mark forged under a later time: the windows reach it by name, restore --at refuses it naming it', async () => {
    // A mark (a clean stop, a restart gone through) extends its timeline's window by its name alone. A
    // store that adds one (here: a sealed record of the same timeline under a new mark name) would make
    // moments after the real end look restorable; the restore opens the timeline's marks first.
    const w = await readWindows(storage);
    const t = w.timelines.filter((x) => x.to !== null && x.lastSequence !== null).sort((a, b) => b.to! - a.to!)[0]!;
    // After the real end, not in the future (a moment to come is refused before any record is read).
    const forgedAt = Date.now() - 1;
    expect(forgedAt).toBeGreaterThan(t.to!);
    const forged = markName({ timeline: t.id, kind: 'stop', last: t.lastSequence!, at: forgedAt });
    const source = baseRecordNames.find((n) => n.startsWith(`wal/${t.id}/`))!;
    fs.mkdirSync(path.dirname(file(forged)), { recursive: true });
    fs.copyFileSync(file(source), file(forged));
    try {
      expect((await readWindows(storage)).timelines.find((x) => x.id === t.id)?.to, 'the forged name steers the windows').toBe(forgedAt);
      await restoreAt({ code: 'CORRUPT', names: forged }, forgedAt);
    } finally {
      fs.rmSync(file(forged));
    }
  });

  it('log segment: restore --at fails naming it; nothing is restored', async () => {
    // Each restored to the moment it ends: the restore reads it. Every place in the largest (several
    // chunks: its last tag is the last chunk's), the middle of the others.
    const largest = segmentNames.reduce((a, b) => (fs.statSync(file(a)).size >= fs.statSync(file(b)).size ? a : b));
    for (const name of segmentNames) {
      const size = fs.statSync(file(name)).size;
      const places = name === largest ? envelopePlaces(0, size) : [{ at: Math.floor(size / 2) }];
      for (const { at } of places) {
        await damaged(name, flip(at), () => restoreAt({ code: 'CORRUPT', names: name }, segmentEnd(name)));
      }
    }
    // Through the CLI: one line, exit 7.
    const name = segmentNames.at(-1)!;
    await damaged(name, flip(SEAL_HEADER + 1), async () => {
      oneErrorLine(await runCli(['backup', 'restore', '--at', 'latest', '--repo', repoUrl, '--to', newTarget()]), 'CORRUPT', 7, name);
      nothingRestored();
    });
  });
});

describe('format 3 under attack: objects moved, swapped, cut short, downgraded', () => {
  it('two blobs of one size with their stored bytes swapped: refused naming the pack', async () => {
    const [a, b] = (() => {
      for (const x of chunks) {
        const y = chunks.find((c) => c.id !== x.id && c.length === x.length);
        if (y) return [x, y];
      }
      throw new Error('no two chunks of one stored size (the database should hold tables of 2 MiB)');
    })();
    const swap = async (fn: () => Promise<void>) => {
      const pa = packName(a.pack);
      const pb = packName(b.pack);
      const bytesA = fs.readFileSync(file(pa)).subarray(a.offset, a.offset + a.length);
      const bytesB = fs.readFileSync(file(pb)).subarray(b.offset, b.offset + b.length);
      await damaged(pa, (p) => (bytesB.copy(p, a.offset), p), async () => {
        if (pa === pb) {
          const p = fs.readFileSync(file(pa));
          bytesA.copy(p, b.offset);
          fs.writeFileSync(file(pa), p);
          await fn();
        } else {
          await damaged(pb, (p) => (bytesA.copy(p, b.offset), p), fn);
        }
      });
    };
    await swap(async () => {
      const message = await restore(mine.id, { code: 'CORRUPT', names: 'data/' });
      expect(message).toMatch(new RegExp(`object data/../(${a.pack}|${b.pack}) is damaged: blob (${a.id}|${b.id})`));
      expect(message).toMatch(/does not authenticate/);
      const errors = await verifyFinds(`blob ${a.id}`);
      expect(errors.join('\n')).toContain(`blob ${b.id}`);
    });
  });

  it('an index entry pointing at a foreign blob (rewritten by a key holder): refused, sealed or re-sealed', async () => {
    // Two chunks in one pack: the index is rewritten (sealed with the key, as a buggy writer would) so
    // that the first's entry points at the second's bytes.
    const x = chunks.find((c) => chunks.some((d) => d.pack === c.pack && d.id !== c.id))!;
    const y = chunks.find((d) => d.pack === x.pack && d.id !== x.id)!;
    const pack = packName(x.pack);
    const holding = await withRepo(async (repo) => {
      for (const name of indexNames) if ((await repo.getJson<IndexFile>(name)).packs.some((p) => p.id === x.pack)) return name;
      throw new Error('no index lists the pack');
    });
    const original = fs.readFileSync(file(holding));
    const rewrite = async (edit: (f: IndexFile, repo: Repository) => Promise<void>) =>
      withRepo(async (repo) => {
        const f = await repo.getJson<IndexFile>(holding);
        await edit(f, repo);
        await repo.putJson(holding, f);
      });
    try {
      await rewrite(async (f) => {
        const entry = f.packs.find((p) => p.id === x.pack)!.blobs.find(([id]) => id === x.id)!;
        entry[1] = y.offset;
        entry[2] = y.length;
      });
      const message = await restore(mine.id, { code: 'CORRUPT', names: `object ${pack} is damaged: blob ${x.id}` });
      expect(message).toMatch(/does not authenticate/);
      fs.writeFileSync(file(holding), original);

      // Harder: the key holder seals y's bytes under x's id, in a pack of its own, and points x there.
      // The envelope authenticates; the content id does not match.
      let forged = '';
      await rewrite(async (f, repo) => {
        await repo.loadIndex();
        const plain = await repo.readBlob(y.id, 'data', CHUNK_SIZE);
        const stored = sealBlob(deriveKeys(repo.keyAccess().master), 'data', x.id, plain, 'never', null);
        const { id, tail } = repo.codec.packTail([[x.id, 0, stored.length]]);
        const bytes = Buffer.concat([stored, tail]);
        await repo.uploadPack(id, bytes);
        forged = packName(id);
        const own = f.packs.find((p) => p.id === x.pack)!;
        own.blobs = own.blobs.filter(([id]) => id !== x.id);
        f.packs.push({ id, size: bytes.length, blobs: [[x.id, 0, stored.length]] });
      });
      const second = await restore(mine.id, { code: 'CORRUPT', names: `object ${forged} is damaged: blob ${x.id}` });
      expect(second).toMatch(/opens to bytes of another id/);
      fs.rmSync(file(forged));
    } finally {
      fs.writeFileSync(file(holding), original);
    }
  });

  it('a snapshot copied under another snapshot\'s name: list and restore refuse it', async () => {
    const victim = `snapshots/${base.id}`;
    const other = fs.readFileSync(file(`snapshots/${mine.id}`));
    await damaged(victim, () => Buffer.from(other), async () => {
      const message = await list({ code: 'CORRUPT', names: victim });
      expect(message).toMatch(/does not authenticate/);
      await restore(base.id, { code: 'CORRUPT', names: victim });
      // The one under its own name is untouched, and restores.
      await withRepo((repo) => repo.readSnapshot(mine.id));
    });
  });

  it('a log segment cut at a 64 KiB chunk boundary, or inside a chunk: refused, never a shorter restore', async () => {
    const name = segmentNames.reduce((a, b) => (fs.statSync(file(a)).size >= fs.statSync(file(b)).size ? a : b));
    const size = fs.statSync(file(name)).size;
    const sealedChunks = Math.ceil((size - SEAL_HEADER) / SEALED_CHUNK);
    expect(sealedChunks, 'a segment of at least 3 chunks').toBeGreaterThanOrEqual(3);
    // After the first full chunk, and after the last full one.
    const boundaries = [SEAL_HEADER + SEALED_CHUNK, SEAL_HEADER + (sealedChunks - 1) * SEALED_CHUNK];
    for (const cut of boundaries) {
      const message = await damaged(name, (b) => b.subarray(0, cut), () => restoreAt({ code: 'CORRUPT', names: name }, segmentEnd(name)));
      expect(message).toMatch(/truncated/);
    }
    // Inside a chunk (the second; the first, which is then the last), and in the header.
    for (const cut of [SEAL_HEADER + SEALED_CHUNK + 1000, SEAL_HEADER + 100, SEAL_HEADER - 1]) {
      await damaged(name, (b) => b.subarray(0, cut), () => restoreAt({ code: 'CORRUPT', names: name }, segmentEnd(name)));
    }
  });

  it('a config rewritten as plaintext (format 2, or format 3 without encryption) while keys exist: refused as a downgrade, nothing written', async () => {
    const id = await withRepo(async (repo) => repo.config.id);
    const plain = {
      'format 2': { format: 'node-admin-repository', version: 1, id, chunkSize: CHUNK_SIZE, createdAt: new Date().toISOString() },
      'format 3, encryption none': {
        format: 'node-admin-repository',
        version: 3,
        id,
        chunkSize: CHUNK_SIZE,
        createdAt: new Date().toISOString(),
        encryption: 'none',
        compression: 'none',
      },
    };
    for (const [what, config] of Object.entries(plain)) {
      await damaged(configName, () => Buffer.from(canonicalJson(config)), async () => {
        const before = repositoryState();
        const downgrade = { code: 'CORRUPT', names: 'a downgrade' };
        await open(downgrade);
        // A writer that would accept plaintext (both flags said) is refused all the same.
        await refused(Repository.open(storage, { insecureNoEncryption: true, allowFormat2: true, ...TEST_REPO }).then((r) => r.assertWritable()), downgrade);
        await restore(mine.id, downgrade, 'fresh');
        await restoreAt(downgrade, 'latest', 'fresh');
        oneErrorLine(await runCli(['backup', 'verify', '--repo', repoUrl]), 'CORRUPT', 7, 'a downgrade');
        expect(repositoryState(), what).toEqual(before);
      });
    }
    // And with the keys deleted too: then it reads as a format 2 repository, into which no writer goes
    // without the flag for format 2, and whose sealed objects do not read as plaintext.
    const key = fs.readFileSync(file(keyName));
    fs.rmSync(file(keyName));
    try {
      await damaged(configName, () => Buffer.from(canonicalJson(plain['format 2'])), async () => {
        const before = repositoryState();
        await refused(Repository.open(storage, TEST_REPO).then((r) => r.assertWritable()), { code: 'PLAINTEXT_REFUSED', names: 'format 2' });
        // Both snapshots are read at once (listSnapshots): whichever fails first is named.
        await refused(withRepo((repo) => repo.listSnapshots(), 'fresh'), { code: 'CORRUPT', names: [base.id, mine.id] });
        await restore(mine.id, { code: 'CORRUPT', names: mine.id }, 'fresh');
        expect(repositoryState()).toEqual(before);
      });
    } finally {
      fs.writeFileSync(file(keyName), key);
    }
  });

  it('the config deleted (and the keys): no new repository is made over the old one; nothing written', async () => {
    const config = fs.readFileSync(file(configName));
    const key = fs.readFileSync(file(keyName));
    try {
      for (const gone of [[configName], [configName, keyName]]) {
        for (const name of gone) fs.rmSync(file(name));
        const before = repositoryState();
        // Readers: no repository. Whatever would make one (an agent's first backup, backup init): refused.
        await refused(Repository.open(storage, TEST_REPO), { code: 'REPOSITORY_NOT_FOUND', names: repoUrl });
        await refused(Repository.open(storage, { create: true, ...TEST_REPO }), { code: 'CORRUPT', names: 'no new repository is made over them' });
        oneErrorLine(await runCli(['backup', 'init', '--repo', repoUrl]), 'CORRUPT', 7, 'no new repository is made over them');
        expect(repositoryState(), gone.join(' and ')).toEqual(before);
        fs.writeFileSync(file(configName), config);
        fs.writeFileSync(file(keyName), key);
      }
    } finally {
      fs.writeFileSync(file(configName), config);
      fs.writeFileSync(file(keyName), key);
    }
  });

  it("a pack's header moved onto another pack, and a whole pack under another's name: refused naming the pack", async () => {
    const packs = [...new Set(chunks.map((c) => c.pack))].map((id) => packName(id));
    expect(packs.length, 'backup `mine` spans two packs').toBeGreaterThanOrEqual(2);
    // p the smaller: q's bytes under p's name hold every offset p's blobs are indexed at.
    const [p, q] = packs.sort((a, b) => fs.statSync(file(a)).size - fs.statSync(file(b)).size) as [string, string];
    const tailOf = (bytes: Buffer) => bytes.subarray(bytes.length - 12 - bytes.readUInt32LE(bytes.length - 12));
    const qBytes = fs.readFileSync(file(q));
    // p's blobs, then q's sealed header: the header does not hash to p's name.
    await damaged(p, (bytes) => Buffer.concat([bytes.subarray(0, bytes.length - tailOf(bytes).length), tailOf(qBytes)]), async () => {
      const errors = await verifyFinds(`object ${p} is damaged: its header does not match its name`);
      expect(errors.filter((e) => !e.includes(p))).toEqual([]);
    });
    // q's whole bytes under p's name: p's blobs are not where the index says.
    await damaged(p, () => Buffer.from(qBytes), async () => {
      await restore(mine.id, { code: 'CORRUPT', names: p });
      await verifyFinds(`object ${p} is damaged: its header does not match its name`);
    });
  });

  it('negative control, after every attack was undone: the repository restores byte-exactly again', async () => {
    await restoresExactly('fresh');
  });
});
