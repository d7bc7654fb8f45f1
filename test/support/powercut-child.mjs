// A node with the agent embedded, run as its own process so that the power can be cut under it: opens
// the database, starts the agent, runs the steps it is given and prints one JSON line per step the agent
// acknowledged ({"ack": ...}) — what the power-cut cases hold the durable state to.
// argv: <config json>: { dbPath, checkpointDir, retention?, backup?, steps: Step[] }
// Step: {op:'checkpoint', label?} | {op:'backup', checkpointId?} | {op:'puts', prefix, count, size}
//     | {op:'following'} (waits until the log archive has its base: later writes go into segments)
//     | {op:'shipped'} (waits until the log archive has stored every write made so far, the spool too)
//     | {op:'storage', want:'away'|'back'} (asks the harness to make the repository unreachable, or
//       reachable again, and waits for its SIGUSR2: it has)
//     | {op:'spooled', count} (waits until the log archive has written `count` segments to its spool)
// Besides the steps' acknowledgements, every segment the log archive says it wrote to its spool (its
// log: the file is durable by then) is acknowledged as {kind:'spooled', timeline, first, last, to}.
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent } from '../../dist/agent/index.js';

const cfg = JSON.parse(process.argv[2] ?? 'null');
if (cfg === null) throw new Error('usage: powercut-child.mjs <config json>');
/** @param {Record<string, unknown>} a */
const ack = (a) => process.stdout.write(JSON.stringify({ ack: a }) + '\n');

/** SIGUSR2: the harness did what a `storage` step asked. */
let storageDone = () => {};
process.on('SIGUSR2', () => storageDone());

/** The agent's log: warnings and errors to stderr; the spool's writes acknowledged. */
let spooled = 0;
const logSink = {
  /** @param {string} line */
  write(line) {
    const entry = JSON.parse(line);
    if (entry.msg === 'log archive: a segment written to the spool') {
      spooled++;
      ack({ kind: 'spooled', timeline: entry.timeline, first: entry.first, last: entry.last, to: entry.to });
    }
    if (entry.level >= 40) process.stderr.write(line);
  },
};

const db = new ClassicLevel(cfg.dbPath, { valueEncoding: 'utf8' });
await db.open();
const agent = createAgent({
  dbPath: cfg.dbPath,
  checkpointDir: cfg.checkpointDir,
  retention: cfg.retention ?? {},
  backup: cfg.backup ?? null,
  logger: pino({ level: 'info' }, logSink),
});
await agent.start();
ack({ kind: 'started' });
let lastCheckpoint = null;
for (const step of cfg.steps) {
  switch (step.op) {
    case 'checkpoint': {
      const r = await agent.createCheckpoint({ label: step.label ?? null });
      lastCheckpoint = r.id;
      ack({ kind: 'checkpoint', id: r.id });
      break;
    }
    case 'backup': {
      const r = await agent.createBackup({ checkpointId: step.checkpointId ?? lastCheckpoint ?? undefined });
      ack({ kind: 'backup', id: r.id, checkpointId: r.checkpoint.id, bytesUploaded: r.bytesUploaded ?? null });
      break;
    }
    case 'puts': {
      const ops = [];
      for (let i = 0; i < step.count; i++) ops.push({ type: /** @type {const} */ ('put'), key: `${step.prefix}${String(i).padStart(6, '0')}`, value: `${step.prefix}${i}:`.padEnd(step.size, 'v') });
      // In batches of 10: the log gets several records, the archive several batches.
      for (let i = 0; i < ops.length; i += 10) await db.batch(ops.slice(i, i + 10));
      ack({ kind: 'puts', prefix: step.prefix, count: step.count });
      break;
    }
    case 'following': {
      while ((await agent.status()).logArchive?.state !== 'following') await new Promise((resolve) => setTimeout(resolve, 20));
      ack({ kind: 'following' });
      break;
    }
    case 'shipped': {
      for (;;) {
        // Nothing read and not stored (in memory or in the spool), nothing written and not read: every
        // write made so far is stored.
        const s = (await agent.status()).logArchive;
        if (s && s.state === 'following' && s.lag.batches === 0 && s.lag.bytes === 0 && s.lag.unreadBytes === 0 && s.lastShipped) {
          ack({ kind: 'shipped', sequence: s.lastShipped.sequence, timeline: s.lastShipped.timeline });
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      break;
    }
    case 'storage': {
      const done = new Promise((resolve) => (storageDone = () => resolve(undefined)));
      ack({ kind: 'storage', want: step.want });
      await done;
      break;
    }
    case 'spooled': {
      while (spooled < step.count) await new Promise((resolve) => setTimeout(resolve, 20));
      break;
    }
    default:
      throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
}
await agent.stop();
await db.close();
ack({ kind: 'stopped' });
