/**
 * The storage unreachable for 30 s under load: afterwards, either every batch is archived or the gap is
 * declared in `timeline`, `status` and the log. The real S3 server the tests start, behind a loopback
 * proxy that resets every connection during the outage (the SDK's pooled sockets cut too); writers
 * keep writing into a classic-level database with a small write buffer (logs rotate) while an embedded
 * agent archives it.
 *
 * - With room in the spool, the batches read during the outage wait in memory and are stored when the
 *   storage returns: one timeline, no gap, its window across the outage, and restores to moments inside
 *   the outage equal the model.
 * - With a spool smaller than what the outage brings, the timeline ends (`spool_full`), declared in
 *   the status, the log, the metric and `backup timeline` (a gap); no window claims a moment inside the
 *   gap (a restore there is refused); restores on both sides are exact.
 * - The agent stopped while the storage is away: what it read waits in the spool's directory, and the
 *   next start stores it, so the old timeline's window reaches the last write before the stop.
 * Negative control: the model check refuses a restore that lost a batch (one op of a writer undone).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import type { Storage } from '../dist/agent/storage/storage.js';
import { readWindows, restoreToMoment } from '../dist/agent/log-archive/restore-to-moment.js';
import type { LogArchiveTimelines } from '../dist/shared/api.js';
import { runCli, tempDir } from './support/processes.js';
import { FaultProxy, emptyAndClose, s3ProcessEnv, s3Server } from './support/s3-server.js';
import { Writers, levelApply, readState, until } from './support/pitr-writers.js';
import { TEST_REPO } from './support/test-password.js';

const WRITERS = 3;
/** How long the storage is away at least (NODE_ADMIN_OUTAGE_MS: CI gives Node 24 and 26 a shorter one). */
const OUTAGE_MS = Number(process.env.NODE_ADMIN_OUTAGE_MS ?? 30_000);

interface Run {
  dir: string;
  url: string;
  db: ClassicLevel<string, Buffer>;
  agent: Agent;
  proxy: FaultProxy;
  storage: Storage;
  writers: Writers;
  messages: { level: number; msg: string }[];
  env: NodeJS.ProcessEnv;
  endpoint: string;
}

const runs: Run[] = [];

afterAll(async () => {
  for (const r of runs) {
    await r.writers.stop();
    await r.agent.stop().catch(() => {});
    await r.proxy.stop();
    await r.db.close().catch(() => {});
    await emptyAndClose(r.storage);
    fs.rmSync(r.dir, { recursive: true, force: true });
  }
});

/** An agent archiving a database under writes to S3 through a proxy, up to its first usable base. */
async function start(name: string, spoolBytes: number, reuse?: Run): Promise<Run> {
  const server = s3Server();
  const dir = reuse?.dir ?? tempDir(`pitr-outage-${name}`);
  const dbPath = path.join(dir, 'db');
  const url = reuse?.url ?? `s3://${server.bucket}/outage-${path.basename(dir)}`;
  const proxy = reuse?.proxy ?? FaultProxy.forEndpoint(server.endpoint);
  const endpoint = reuse ? reuse.endpoint : await proxy.start();
  const s3 = { endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } };
  const db = reuse?.db ?? new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer', writeBufferSize: 256 * 1024, maxFileSize: 256 * 1024 });
  if (!reuse) await db.open();
  // The test reads the repository straight from the server, never through the proxy.
  const storage = reuse?.storage ?? (await openStorage(url, { s3: { ...s3, endpoint: server.endpoint } }));
  const writers = reuse?.writers ?? new Writers(levelApply(db), { writers: WRITERS, keysPerWriter: 300, batches: true, pauseMs: 5 });
  const messages: Run['messages'] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) messages.push(JSON.parse(line) as Run['messages'][number]);
      done();
    },
  });
  writers.start();
  const agent = createAgent({
    dbPath,
    checkpointDir: path.join(dir, 'checkpoints'),
    retention: { keepLast: 20 },
    // A small memory part: the outage fills the spool's directory, not just memory.
    backup: { repository: url, s3, logArchive: { intervalMs: 1000, spoolBytes, spoolMemoryBytes: 1024 * 1024 } },
    logger: pino({ level: 'info' }, sink),
  });
  const run: Run = {
    dir, url, db, agent, proxy, storage, writers, messages, endpoint,
    env: s3ProcessEnv(server),
  };
  if (!reuse) runs.push(run);
  else Object.assign(reuse, { agent, messages });
  await agent.start();
  await until('the first base', async () => (await readWindows(storage)).timelines.some((t) => t.from !== null && t.to! > t.from));
  return run;
}

/** The storage unreachable until `over` says so (and at least `minMs`): every connection, new or pooled, is reset. */
async function outage(r: Run, over: () => Promise<boolean>, minMs: number): Promise<{ from: number; to: number }> {
  const from = Date.now();
  r.proxy.then = 'reset';
  r.proxy.dropConnections();
  await until('the outage has lasted', async () => Date.now() >= from + minMs && (await over()), minMs + 60_000);
  r.proxy.then = 'pass';
  return { from, to: Date.now() };
}

/** The spool's files (beside the database directory). */
const spooled = (r: Run) => {
  const d = path.join(r.dir, 'db.log-archive-spool');
  return fs.existsSync(d) ? fs.readdirSync(d).filter((n) => n.endsWith('.seg')) : [];
};

async function restoreAndCheck(r: Run, repo: Repository, at: number, name: string): Promise<void> {
  const to = path.join(r.dir, name);
  const result = await restoreToMoment({ repo, at, to });
  expect(result.reached.time).toBeLessThanOrEqual(at);
  const problem = r.writers.mismatch(await readState(to, WRITERS), r.writers.bounds(at), false);
  expect(problem, `restore to ${new Date(at).toISOString()} (${result.batches} batches on backup ${result.backup})`).toBeNull();
  fs.rmSync(to, { recursive: true });
}

describe('log archive: the storage unreachable for 30 s under load', () => {
  it('with room in the spool: every batch is stored when the storage returns, one window across the outage', async () => {
    const r = await start('room', 64 * 1024 * 1024);
    const failures = () => r.messages.filter((m) => m.msg.includes('upload failed')).length;
    // Over once the uploads fail and what waits has gone to the spool's directory on disk.
    const out = await outage(r, async () => failures() > 0 && spooled(r).length > 0, OUTAGE_MS);
    // Writes go on after the outage; then everything read is stored.
    await until('a segment stored after the outage', async () => {
      const s = await r.agent.status();
      return s.logArchive?.lastShipped !== null && Date.parse(s.logArchive!.lastShipped!.at) > out.to;
    });
    await until('the spool emptied', () => spooled(r).length === 0);
    const resumed = Date.now();
    await until('writes after the outage', () => Date.now() >= resumed + 3000, 10_000);
    await r.writers.stop();
    await r.agent.stop();
    const status = r.messages.filter((m) => m.msg.includes('spool is full'));
    expect(status).toEqual([]);

    const w = await readWindows(r.storage);
    expect(w.timelines.length).toBe(1);
    expect(w.gaps).toEqual([]);
    const t = w.timelines[0]!;
    expect(t.brokenAfter).toBeNull();
    expect(t.from!).toBeLessThan(out.from);
    expect(t.to!).toBeGreaterThan(out.to);
    await r.db.close();
    const { dbSequence } = await import('../dist/agent/log-archive/db-sequence.js');
    expect(t.lastSequence).toBe((await dbSequence(path.join(r.dir, 'db'))).sequence);

    const repo = await Repository.open(r.storage, TEST_REPO);
    const inside = [0.1, 0.5, 0.9].map((f) => Math.floor(out.from + f * (out.to - out.from)));
    for (const [i, at] of [...inside, t.to!].entries()) await restoreAndCheck(r, repo, at, `restored-${i}`);

    // Negative control: a restore missing one op of a writer is caught.
    const control = path.join(r.dir, 'control');
    await restoreToMoment({ repo, at: t.to!, to: control });
    const state = await readState(control, WRITERS);
    const [key, op] = [...state[0]!.entries()].find(([, o]) => o > 1)!;
    state[0]!.set(key, op - 1);
    expect(r.writers.mismatch(state, r.writers.bounds(t.to!), true)).not.toBeNull();
    fs.rmSync(control, { recursive: true });
  }, 240_000);

  it('with a spool too small for the outage: the gap is declared in status, the log, the metric and `backup timeline`', async () => {
    // Room for what is written while a base is backed up (or no timeline could start), not for the outage.
    const r = await start('tiny', 4 * 1024 * 1024);
    // Over once the timeline has ended and what is read after it, while no base can be stored, has
    // overflowed the spool again (a short outage, as CI gives Node 24 and 26, can end between the two).
    const overflowedAgain = () => r.messages.some((m) => m.msg.includes('the spool is full while no base could be stored'));
    const out = await outage(r, async () => (await r.agent.status()).logArchive?.lastBreak?.reason === 'spool_full' && overflowedAgain(), OUTAGE_MS);
    const status = (await r.agent.status()).logArchive!;
    expect(status.lastBreak!.reason).toBe('spool_full');
    expect(status.lastBreak!.detail).toMatch(/more than the spool's 4194304/);
    const brokeAt = Date.parse(status.lastBreak!.at);
    expect(r.messages.some((m) => m.level >= 50 && m.msg.includes('the spool is full; the timeline ends'))).toBe(true);
    const metrics = await r.agent.metrics();
    expect(metrics).toMatch(/node_admin_log_archive_timeline_breaks_total\{reason="spool_full"\} [1-9]/);

    // The storage is back: a new timeline with its own base, restorable.
    // The base's retries back off (up to 30 s) while the storage is away: the next one starts it.
    await until('a new timeline after the outage', async () => (await readWindows(r.storage)).timelines.some((t) => t.from !== null && t.from > out.from && t.to! > t.from), 120_000);
    await r.writers.stop();
    await r.agent.stop();

    const w = await readWindows(r.storage);
    const restorable = w.timelines.filter((t) => t.from !== null);
    expect(restorable.length).toBeGreaterThanOrEqual(2);
    expect(w.gaps.length).toBeGreaterThanOrEqual(1);
    const [before, after] = [restorable[0]!, restorable.at(-1)!];
    // The old window ends by the break: what was read up to the spool's overflow is offered to the
    // storage once (when it returns, if an upload was still retrying then), nothing read after it.
    expect(before.to!).toBeLessThanOrEqual(brokeAt);
    const gap = w.gaps.find((g) => g.from === before.to)!;
    expect(gap).toBeDefined();

    const cli = await runCli(['backup', 'timeline', '--repo', r.url, '--s3-path-style', '--json'], { env: r.env });
    expect(cli.code, cli.stderr).toBe(0);
    const listed = JSON.parse(cli.stdout) as LogArchiveTimelines;
    expect(listed.gaps).toContainEqual({ from: new Date(gap.from).toISOString(), to: new Date(gap.to).toISOString() });

    const repo = await Repository.open(r.storage, TEST_REPO);
    const inGap = Math.floor((gap.from + gap.to) / 2);
    await expect(restoreToMoment({ repo, at: inGap, to: path.join(r.dir, 'in-gap') })).rejects.toThrow(/gap|window/i);
    expect(fs.existsSync(path.join(r.dir, 'in-gap'))).toBe(false);
    await restoreAndCheck(r, repo, Math.floor((before.from! + before.to!) / 2), 'before');
    await restoreAndCheck(r, repo, before.to!, 'before-end');
    await restoreAndCheck(r, repo, after.from!, 'after-start');
    await restoreAndCheck(r, repo, after.to!, 'after-end');
  }, 300_000);

  it('stopped during an outage: what was read waits in the spool on disk, and the next start stores it', async () => {
    const r = await start('restart', 64 * 1024 * 1024);
    const failures = () => r.messages.filter((m) => m.msg.includes('upload failed')).length;
    const out = await outage(r, async () => failures() > 0 && spooled(r).length > 0, 5000);
    r.proxy.then = 'reset'; // still away while the agent stops
    r.proxy.dropConnections();
    await r.writers.stop();
    const lastWrite = Date.now();
    await r.agent.stop();
    expect(spooled(r).length).toBeGreaterThan(0);
    const oldTimeline = (await readWindows(r.storage)).timelines.at(-1)!;
    expect(oldTimeline.to!).toBeLessThan(lastWrite); // not stored yet

    r.proxy.then = 'pass';
    await start('restart', 64 * 1024 * 1024, r);
    await until('the spool stored by the new start', () => spooled(r).length === 0);
    await r.agent.stop();
    const w = await readWindows(r.storage);
    const old = w.timelines.find((t) => t.id === oldTimeline.id)!;
    expect(old.brokenAfter).toBeNull();
    // The spool's batches extend the window. (Not "past out.to": whether a write lands between the
    // outage's end and the writers' stop is up to the scheduler.)
    expect(old.to!).toBeGreaterThan(oldTimeline.to!);
    expect(old.to!).toBeGreaterThan(out.from);
    const repo = await Repository.open(r.storage, TEST_REPO);
    // Every write acknowledged before the stop is in the old timeline's last moment.
    const to = path.join(r.dir, 'old-end');
    await restoreToMoment({ repo, at: old.to!, to });
    expect(r.writers.mismatch(await readState(to, WRITERS), r.writers.bounds(lastWrite + 2000), true)).toBeNull();
    fs.rmSync(to, { recursive: true });
  }, 240_000);
});
