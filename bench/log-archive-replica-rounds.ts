import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent } from '../agent/index.js';
import { dbSequence } from '../agent/log-archive/db-sequence.js';
import { parseWalName } from '../agent/log-archive/segment.js';
import { openStorage } from '../agent/storage/open-storage.js';
import type { GoalRow } from './goal-table.js';
import { lagPerWrite, load, sampleStatus, until, untilFirstBase, type LoadResult, type Op, type Shipped } from './log-archive-load.js';
import { progress, sleep } from './progress.js';
import { median, summarize, type Summary } from './stats.js';

/**
 * The log archive with a continuous replica (issue "a second copy", `backup.replicas`): two databases
 * side by side, each with its own agent archiving at the 1 s interval into a `file://` repository of its
 * own; the second's agent also replicates to a second `file://` repository. `runs` pairs of the same
 * load, alternating, archive only then archive + replica, and per write:
 *
 *   - the replica's lag: from its acknowledgment to the moment a segment holding its sequence number
 *     was seen in the replica's repository (the replica's `wal/` listed every 10 ms: what the store
 *     holds, not what the agent says);
 *   - the primary's RPO, with the replica attached and without (the agents' status, every 10 ms);
 *   - the node's write latency p99 and the process's CPU, with the replica against without.
 *
 * Both sides are observed alike (a status sample and a listing of a `wal/` every 10 ms), so that the
 * observers' own cost weighs on both.
 */

const WARM_UP_SECONDS = 3;

export interface ReplicaRounds {
  rows: GoalRow[];
  json: Record<string, unknown>;
}

export async function replicaRounds(o: { dir: string; passwordFile: string; writes: Op[][]; rate: number; seconds: number; runs: number }): Promise<ReplicaRounds> {
  const agents: Agent[] = [];
  const dbs: ClassicLevel<string, Buffer>[] = [];
  const silent = pino({ level: 'silent' });
  const side = async (name: string, replica: string | null) => {
    const dbPath = path.join(o.dir, `${name}-db`);
    const db = new ClassicLevel<string, Buffer>(dbPath, { valueEncoding: 'buffer' });
    await db.open();
    dbs.push(db);
    const repoDir = path.join(o.dir, `${name}-repo`);
    const agent = createAgent({
      dbPath,
      checkpointDir: path.join(o.dir, `${name}-checkpoints`),
      retention: { keepLast: 5 },
      backup: {
        repository: pathToFileURL(repoDir).href,
        password: { file: o.passwordFile },
        logArchive: { intervalMs: 1000 },
        ...(replica ? { replicas: [pathToFileURL(replica).href] } : {}),
      },
      logger: silent,
    });
    agents.push(agent);
    await agent.start();
    // The first base in every repository the side writes to: the windows start there.
    for (const repo of replica ? [repoDir, replica] : [repoDir]) {
      const storage = await openStorage(pathToFileURL(repo).href, {});
      try {
        await untilFirstBase(storage, 120_000, `the first base in ${path.basename(repo)}`);
      } finally {
        await storage.close();
      }
    }
    await load(db, o.writes, o.rate, WARM_UP_SECONDS, () => {});
    const checkpoint = await agent.createCheckpoint({ label: 'bench-sequence' });
    const s0 = (await dbSequence(checkpoint.path)).sequence;
    // What the side observes every 10 ms besides its status: its replica's wal/, or (archive only) its own.
    return { db, agent, s0, watched: replica ?? repoDir };
  };
  try {
    progress(`log archive with a replica: ${o.runs} pairs of the load (${o.rate} writes/s for ${o.seconds} s), archive only, then archive + a file:// replica`);
    const plain = await side('archive-only', null);
    const withReplica = await side('with-replica', path.join(o.dir, 'replica'));
    const pairs: { plain: LoadResult; replica: LoadResult; rpoPlain: Summary; rpoWith: Summary; lag: Summary }[] = [];
    for (let r = 0; r < o.runs; r++) {
      progress(`  pair ${r + 1} of ${o.runs}`);
      const a = await observed(plain.agent, plain.watched, async () => load(plain.db, o.writes, o.rate, o.seconds, () => {}));
      const b = await observed(withReplica.agent, withReplica.watched, async () => load(withReplica.db, o.writes, o.rate, o.seconds, () => {}));
      const entries = a.run.entriesAfter.at(-1)!;
      const s0Plain = plain.s0 + r * entries;
      const s0With = withReplica.s0 + r * entries;
      await a.finish(s0Plain + entries);
      await b.finish(s0With + entries);
      pairs.push({
        plain: a.run,
        replica: b.run,
        rpoPlain: summarize(lagPerWrite(a.run, s0Plain, a.status)),
        rpoWith: summarize(lagPerWrite(b.run, s0With, b.status)),
        lag: summarize(lagPerWrite(b.run, s0With, b.store)),
      });
    }
    const byLag = [...pairs].sort((x, y) => x.lag.p99 - y.lag.p99);
    const mid = byLag[Math.floor((byLag.length - 1) / 2)]!;
    const ratios = pairs.map((p) => p.replica.latency.p99 / p.plain.latency.p99);
    const cpus = pairs.map((p) => p.replica.cpuPercent - p.plain.cpuPercent);
    const every = (values: number[], f: (v: number) => string) => (values.length > 1 ? `; every pair: ${values.map(f).join(', ')}` : '');
    const secs = (v: number) => `${(v / 1000).toFixed(2)} s`;
    const ms = (v: number) => `${v < 10 ? v.toFixed(3) : v.toFixed(1)} ms`;
    const rpoWithP99 = median(pairs.map((p) => p.rpoWith.p99));
    const rows: GoalRow[] = [
      {
        metric: 'replica lag: acknowledgment -> in the replica (file://; its wal/ listed every 10 ms), p50 / p99 (the median pair)',
        value: `${secs(mid.lag.p50)} / ${secs(mid.lag.p99)}${every(pairs.map((p) => p.lag.p99), secs)}`,
        goal: 'p99 <= 2 s',
        met: mid.lag.p99 <= 2000,
      },
      {
        metric: "primary's RPO p50 / p99 with a replica attached; without (medians of the pairs)",
        value: `${secs(median(pairs.map((p) => p.rpoWith.p50)))} / ${secs(rpoWithP99)}; ${secs(median(pairs.map((p) => p.rpoPlain.p50)))} / ${secs(median(pairs.map((p) => p.rpoPlain.p99)))}`,
        goal: 'p99 <= 2 s',
        met: rpoWithP99 <= 2000,
      },
      {
        metric: 'write latency p99: with a replica / archive only (the median pair)',
        value: `${median(ratios).toFixed(2)}x (first pair ${ms(pairs[0]!.replica.latency.p99)} / ${ms(pairs[0]!.plain.latency.p99)})${every(ratios, (v) => `${v.toFixed(2)}x`)}`,
        goal: '-',
        met: null,
      },
      {
        metric: 'process CPU: with a replica - archive only, % of one core (the median pair)',
        value: `${median(cpus).toFixed(1)}%${every(cpus, (v) => `${v.toFixed(1)}%`)}`,
        goal: '-',
        met: null,
      },
    ];
    const json = {
      pairs: pairs.map((p) => ({ lag: p.lag, rpoWith: p.rpoWith, rpoPlain: p.rpoPlain, p99With: p.replica.latency.p99, p99Plain: p.plain.latency.p99, cpuWith: p.replica.cpuPercent, cpuPlain: p.plain.cpuPercent })),
    };
    return { rows, json };
  } finally {
    for (const a of agents) await a.stop().catch(() => {});
    for (const d of dbs) await d.close().catch(() => {});
  }
}

/**
 * Runs `work` (a load) while sampling `agent`'s status and listing `watched`'s `wal/` every 10 ms; then
 * `finish(sequence)` goes on sampling until both have seen `sequence` stored.
 */
async function observed(agent: Agent, watched: string, work: () => Promise<LoadResult>): Promise<{ run: LoadResult; status: Shipped[]; store: Shipped[]; finish(sequence: number): Promise<void> }> {
  const status: Shipped[] = [];
  const store: Shipped[] = [];
  const sampler = sampleStatus(agent, (s) => status.push(s));
  let running = true;
  let last = -1;
  const lister = (async () => {
    while (running) {
      const seen = lastStoredSequence(watched);
      if (seen > last) {
        last = seen;
        store.push({ at: performance.now(), sequence: seen });
      }
      await sleep(10);
    }
  })();
  const run = await work();
  return {
    run,
    status,
    store,
    async finish(sequence) {
      await until(async () => (status.at(-1)?.sequence ?? -1) >= sequence && (store.at(-1)?.sequence ?? -1) >= sequence, 60_000, `sequence ${sequence} stored`);
      await sampler.stop();
      running = false;
      await lister;
    },
  };
}

/** The highest sequence number any segment in `repoDir`'s `wal/` holds (-1: none). */
function lastStoredSequence(repoDir: string): number {
  const wal = path.join(repoDir, 'wal');
  let last = -1;
  let timelines: string[];
  try {
    timelines = fs.readdirSync(wal);
  } catch {
    return last;
  }
  for (const t of timelines) {
    let names: string[];
    try {
      names = fs.readdirSync(path.join(wal, t, 'seg'));
    } catch {
      continue;
    }
    for (const n of names) {
      const parsed = parseWalName(`wal/${t}/seg/${n}`);
      if (parsed?.kind === 'segment') last = Math.max(last, parsed.segment.last);
    }
  }
  return last;
}
