import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../dist/agent/index.js';
import { cloneDbSync, removeTreeSync } from '../dist/agent/checkpoint/checkpoint-dir.js';
import { tempDir } from './support/processes.js';
import { WriterModel, keyOf, opOfValue, parseKey, valueOf, type Change } from './support/write-model.js';

/**
 * The differential test of live checkpoints: writers put, overwrite, delete and batch while compactions
 * run without pause (tiny memtable and table files), checkpoints are taken one after another, and each
 * one, opened from a clone, must equal the in-memory model of every writer at some op between the last
 * one acknowledged before the create request and the last one issued before it returned.
 *
 * CI size: >= 100 MB and 120 checkpoints, each read whole (about 0.9 s each here: the suite's longest
 * file; 200 took three minutes of CI's 45). NODE_ADMIN_DIFF_MB / NODE_ADMIN_DIFF_CHECKPOINTS scale it
 * (the 1 GB run: NODE_ADMIN_DIFF_MB=1024).
 */

const DB_MB = Number(process.env.NODE_ADMIN_DIFF_MB ?? 100);
const CHECKPOINTS = Number(process.env.NODE_ADMIN_DIFF_CHECKPOINTS ?? 120);
/** Broken checkpoints the negative control takes (NODE_ADMIN_DIFF_BROKEN); at least half must be tried and caught. */
const BROKEN = Number(process.env.NODE_ADMIN_DIFF_BROKEN ?? 20);
const WRITERS = 8;
/** Total write ops per second under load: heavy churn (a memtable flush every ~100 ms), yet room left for the checks. */
const RATE = Number(process.env.NODE_ADMIN_DIFF_RATE ?? 3000);
const AVG_VALUE = 2000;
const KEYS_PER_WRITER = Math.ceil((DB_MB * 1024 * 1024) / AVG_VALUE / WRITERS);
const size = (op: number, k: number) => 800 + ((op * 31 + k * 17) % 2400);

interface Taken {
  id: string;
  path: string;
  lo: number[];
  hi: number[];
}

interface Outcome {
  ok: boolean;
  why?: string;
  /** Per writer: how many ops past the last acknowledged one the checkpoint holds. */
  ahead?: number[];
}

class Harness {
  private stopped = false;
  private running: Promise<void>[] = [];
  opsDone = 0;

  constructor(
    readonly db: ClassicLevel<string, Buffer>,
    readonly models: WriterModel[] = Array.from({ length: WRITERS }, (_, w) => new WriterModel(w)),
  ) {}

  /** Fills the database to the target size: batches of fresh keys, one op each. */
  async populate(): Promise<void> {
    const batch = 200;
    await Promise.all(
      this.models.map(async (m) => {
        for (let start = 0; start < KEYS_PER_WRITER; start += batch) {
          const changes: Change[] = [];
          for (let k = start; k < Math.min(start + batch, KEYS_PER_WRITER); k++) changes.push({ k, put: true });
          await this.apply(m, changes);
        }
      }),
    );
  }

  startLoad(): void {
    this.running = this.models.map(async (m) => {
      let seed = m.writer * 7 + 1;
      const rnd = () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
        return seed / 2_147_483_648;
      };
      const key = () => Math.floor(rnd() * KEYS_PER_WRITER * 1.1);
      const perWriterMs = (1000 * WRITERS) / RATE;
      const start = performance.now();
      let n = 0;
      while (!this.stopped) {
        const due = start + n++ * perWriterMs;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        const r = rnd();
        let changes: Change[];
        if (r < 0.6) changes = [{ k: key(), put: true }];
        else if (r < 0.75) changes = [{ k: key(), put: false }];
        else {
          const n = 2 + Math.floor(rnd() * 8);
          const seen = new Set<number>();
          changes = [];
          for (let i = 0; i < n; i++) {
            const k = key();
            if (seen.has(k)) continue; // one change per key per batch keeps the model simple
            seen.add(k);
            changes.push({ k, put: rnd() < 0.75 });
          }
        }
        await this.apply(m, changes);
      }
    });
  }

  async stopLoad(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  private async apply(m: WriterModel, changes: Change[]): Promise<void> {
    m.ops.push(changes);
    const op = ++m.issued;
    const writes = changes.map((c) =>
      c.put
        ? { type: 'put' as const, key: keyOf(m.writer, c.k), value: valueOf(m.writer, op, c.k, size(op, c.k)) }
        : { type: 'del' as const, key: keyOf(m.writer, c.k) },
    );
    if (writes.length === 1) {
      const w = writes[0]!;
      await (w.type === 'put' ? this.db.put(w.key, w.value) : this.db.del(w.key));
    } else {
      await this.db.batch(writes);
    }
    m.acked = op;
    this.opsDone++;
  }

  /** Takes a checkpoint and records, per writer, the window its state must fall in. */
  async take(agent: Agent): Promise<Taken> {
    const lo = this.models.map((m) => m.acked);
    const record = await agent.createCheckpoint();
    const hi = this.models.map((m) => m.issued);
    return { id: record.id, path: record.path, lo, hi };
  }

  /** Opens a clone of the checkpoint, reads it all, and matches every writer against the model. */
  async check(taken: Taken, scratch: string): Promise<Outcome> {
    const clone = path.join(scratch, `clone-${taken.id}`);
    const t0 = performance.now();
    cloneDbSync(taken.path, clone);
    const tClone = performance.now();
    const seen = this.models.map(() => new Map<number, number>());
    const cdb = new ClassicLevel<string, Buffer>(clone, { createIfMissing: false, valueEncoding: 'buffer' });
    try {
      await cdb.open();
      const it = cdb.iterator();
      for (;;) {
        const entries = await it.nextv(2000);
        if (entries.length === 0) break;
        for (const [key, value] of entries) {
          const parsed = parseKey(key);
          if (!parsed || parsed.writer >= WRITERS) return { ok: false, why: `unexpected key ${key}` };
          const op = opOfValue(parsed.writer, parsed.k, value, size);
          if (op === null) return { ok: false, why: `value of ${key} was written by no op (damaged)` };
          seen[parsed.writer]!.set(parsed.k, op);
        }
      }
      await it.close();
    } catch (err) {
      return { ok: false, why: `cannot read checkpoint: ${(err as Error).message}` };
    } finally {
      await cdb.close().catch(() => {});
      removeTreeSync(clone);
    }
    const tRead = performance.now();
    const ahead: number[] = [];
    for (const m of this.models) {
      const j = m.matchPrefix(seen[m.writer]!, taken.lo[m.writer]!, taken.hi[m.writer]!);
      if (j === null) {
        return { ok: false, why: `writer ${m.writer}: no op in [${taken.lo[m.writer]}, ${taken.hi[m.writer]}] gives the checkpoint's state` };
      }
      ahead.push(j - taken.lo[m.writer]!);
    }
    if (process.env.NODE_ADMIN_DIFF_TRACE) {
      process.stderr.write(`check ${taken.id}: clone ${(tClone - t0).toFixed(0)} ms, read ${(tRead - tClone).toFixed(0)} ms, match ${(performance.now() - tRead).toFixed(0)} ms\n`);
    }
    return { ok: true, ahead };
  }
}

function tableNumbers(dir: string): number[] {
  return fs
    .readdirSync(dir)
    .filter((n) => /^\d+\.(ldb|sst)$/.test(n))
    .map((n) => parseInt(n, 10));
}

describe(`live checkpoints under load (${DB_MB} MB, ${CHECKPOINTS} checkpoints)`, () => {
  let dir: string;
  let db: ClassicLevel<string, Buffer>;
  let harness: Harness;
  let agent: Agent;

  beforeAll(async () => {
    dir = tempDir('diff');
    db = new ClassicLevel<string, Buffer>(path.join(dir, 'db'), {
      valueEncoding: 'buffer',
      // Tiny memtable and tables: flushes and compactions never stop while the test runs.
      writeBufferSize: 256 * 1024,
      maxFileSize: 256 * 1024,
    });
    await db.open();
    harness = new Harness(db);
    await harness.populate();
    agent = createAgent({
      dbPath: path.join(dir, 'db'),
      checkpointDir: path.join(dir, 'checkpoints'),
      retention: { keepLast: 1_000_000 },
      logger: pino({ level: 'silent' }),
    });
    await agent.start();
  }, 600_000);

  afterAll(async () => {
    await harness?.stopLoad();
    await agent?.stop();
    await db?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('every checkpoint equals the model at a point at or after the last acknowledged write', async () => {
    // Compaction keeps running after populate(): a file listed here may be gone by the time it is stat'ed.
    const dbBytes = fs
      .readdirSync(path.join(dir, 'db'))
      .reduce((s, n) => s + (fs.statSync(path.join(dir, 'db', n), { throwIfNoEntry: false })?.size ?? 0), 0);
    expect(dbBytes).toBeGreaterThanOrEqual(DB_MB * 1024 * 1024 * 0.9);
    const scratch = path.join(dir, 'scratch');
    fs.mkdirSync(scratch);
    harness.startLoad();

    const failures: string[] = [];
    const aheadTotals: number[] = [];
    const tablesSeen = new Set<number>();
    let maxTablesInOne = 0;
    let rereads = 0;
    let rereadIn = 0;
    // Verification of checkpoint i overlaps the creation of checkpoint i+1, as an operator's would.
    let pending: Promise<void> = Promise.resolve();
    const createMs: number[] = [];
    const checkMs: number[] = [];
    for (let i = 0; i < CHECKPOINTS; i++) {
      const t0 = performance.now();
      const taken = await harness.take(agent);
      createMs.push(performance.now() - t0);
      if (i % 20 === 19) {
        process.stderr.write(`differential: ${i + 1}/${CHECKPOINTS}, ${failures.length} mismatches so far, create median ${median(createMs).toFixed(0)} ms, check median ${median(checkMs).toFixed(0)} ms\n`);
      }
      const tables = tableNumbers(taken.path);
      tables.forEach((t) => tablesSeen.add(t));
      maxTablesInOne = Math.max(maxTablesInOne, tables.length);
      // How often a table vanished under the build (a compaction committed) and the MANIFEST was read again.
      const meta = JSON.parse(fs.readFileSync(path.join(taken.path, '..', 'checkpoint.json'), 'utf8')) as { build?: { manifestRereads: number } };
      rereads += meta.build?.manifestRereads ?? 0;
      if ((meta.build?.manifestRereads ?? 0) > 0) rereadIn++;
      await pending;
      pending = (async () => {
        const t1 = performance.now();
        const outcome = await harness.check(taken, scratch);
        checkMs.push(performance.now() - t1);
        if (!outcome.ok) failures.push(`${taken.id}: ${outcome.why}`);
        else aheadTotals.push(outcome.ahead!.reduce((a, b) => a + b, 0));
        await agent.deleteCheckpoint(taken.id);
      })();
    }
    await pending;
    const opsDuringLoad = harness.opsDone;
    await harness.stopLoad();

    console.log(
      `differential: ${CHECKPOINTS} checkpoints of ${(dbBytes / 2 ** 20).toFixed(0)} MB, ${failures.length} mismatches; ` +
        `${opsDuringLoad} ops; ${tablesSeen.size} distinct tables seen (max ${maxTablesInOne} in one checkpoint); ` +
        `a table vanished mid-build in ${rereadIn} checkpoints (${rereads} MANIFEST re-reads); ` +
        `ops past the last acknowledged one, summed over writers: median ${median(aheadTotals)}; ` +
        `create median ${median(createMs).toFixed(0)} ms, check median ${median(checkMs).toFixed(0)} ms`,
    );
    expect(failures).toEqual([]);
    // Compactions ran throughout: the tables the checkpoints saw turned over many times.
    expect(tablesSeen.size).toBeGreaterThan(maxTablesInOne * 2);
    // 20 min at the CI size; the 1 GB run reads ~10x more per check.
  }, Math.max(1_200_000, CHECKPOINTS * DB_MB * 100));

  it('catches a deliberately broken checkpoint (the WAL hard-linked instead of copied)', async () => {
    // A large memtable keeps each WAL live for long, so the linked one goes on growing after the build.
    await db.close();
    db = new ClassicLevel<string, Buffer>(path.join(dir, 'db'), { valueEncoding: 'buffer', writeBufferSize: 64 * 1024 * 1024 });
    await db.open();
    const scratch = path.join(dir, 'scratch-negative');
    fs.mkdirSync(scratch);
    // The same writers go on: their models already hold every op the database has seen.
    const load = new Harness(db, harness.models);
    harness = load;
    load.startLoad();
    let caught = 0;
    let tried = 0;
    let grew = 0;
    for (let i = 0; i < BROKEN; i++) {
      const taken = await load.take(agent);
      // Break it: replace each copied WAL by a hard link to the live one, which keeps growing.
      const linked = new Map<string, number>(); // path -> size when linked
      for (const name of fs.readdirSync(taken.path).filter((n) => n.endsWith('.log'))) {
        const live = path.join(dir, 'db', name);
        if (!fs.existsSync(live)) continue;
        fs.rmSync(path.join(taken.path, name));
        try {
          fs.linkSync(live, path.join(taken.path, name));
          linked.set(path.join(taken.path, name), fs.statSync(path.join(taken.path, name)).size);
        } catch {
          // the live log was just deleted: this one stays honest
        }
      }
      if (linked.size === 0) continue;
      tried++;
      // The writers go on appending to the shared WAL: wait until one has acknowledged an op issued after
      // the create returned (so it is in the live WAL, past what the checkpoint may hold).
      const deadline = Date.now() + 60_000;
      while (!load.models.some((m) => m.acked > taken.hi[m.writer]!)) {
        if (Date.now() > deadline) throw new Error('no writer acknowledged an op after the checkpoint in 60 s');
        await new Promise((r) => setImmediate(r));
      }
      if ([...linked].some(([p, size]) => fs.statSync(p).size > size)) grew++;
      const outcome = await load.check(taken, scratch);
      if (!outcome.ok) caught++;
      await agent.deleteCheckpoint(taken.id);
    }
    await load.stopLoad();
    console.log(`negative control: ${caught} of ${tried} broken checkpoints caught (the linked WAL grew in ${grew})`);
    expect(tried).toBeGreaterThanOrEqual(BROKEN / 2);
    // The case happened: the WAL the broken checkpoints share with the database grew after the build.
    expect(grew).toBeGreaterThanOrEqual(tried / 2);
    expect(caught).toBeGreaterThanOrEqual(tried / 2);
  }, 300_000);
});

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
