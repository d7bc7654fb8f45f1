import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { CryptoPool } from '../dist/agent/repository/crypto-pool.js';
import { deriveKeys, newMasterKey } from '../dist/agent/repository/crypto/index.js';
import { SealedCodec } from '../dist/agent/repository/sealed-codec.js';
import { BACKGROUND_NICE } from '../dist/agent/worker/lower-thread-priority.js';
import { startExampleNode, tempDir } from './support/processes.js';

/**
 * The threads of our processes. libuv's pool: the example node starts with 32 threads on every Node
 * (its CommonJS entry sizes the pool before the loader's first read, which on Node 20 would start it
 * at 4), an operator's UV_THREADPOOL_SIZE winning. The backup's CPU threads run at a lower priority than the host's own (lower-thread-priority.ts): the
 * crypto threads, once started, are at BACKGROUND_NICE, while the process's main thread, and every
 * thread that was there before, keep theirs. Read from /proc, as `top -H` would show it.
 */

/** Each thread of this process by id, with its nice value (field 19 of /proc/<pid>/task/<tid>/stat). */
function niceByThread(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      // After the command's closing parenthesis: state is field 3, nice field 19.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), Number(fields[16]));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

const linux = fs.existsSync('/proc/thread-self');

describe.runIf(linux)('the backup threads\' CPU priority', () => {
  const codec = new SealedCodec(deriveKeys(newMasterKey()), new CryptoPool(2));
  afterAll(() => codec.close());

  it('lowers the crypto threads alone, never the host\'s threads', async () => {
    const before = niceByThread();
    expect([...before.values()].every((n) => n < BACKGROUND_NICE)).toBe(true);
    // Two calls at once: both threads start.
    await Promise.all([codec.blobId('data', Buffer.alloc(1 << 20, 1)), codec.blobId('data', Buffer.alloc(1 << 20, 2))]);
    const after = niceByThread();
    const niced = [...after].filter(([, n]) => n >= BACKGROUND_NICE).map(([tid]) => tid);
    expect(niced.length).toBe(2);
    for (const tid of niced) expect(before.has(tid)).toBe(false);
    for (const [tid, n] of before) if (after.has(tid)) expect(after.get(tid)).toBe(n);
    expect(after.get(process.pid)).toBe(before.get(process.pid));
  });

  it('a worker started without it stays at the process\'s priority (the check sees the difference)', async () => {
    const before = niceByThread();
    const w = new Worker('require("node:worker_threads").parentPort.postMessage(1); setInterval(() => {}, 1000);', { eval: true });
    await new Promise((resolve) => w.once('message', resolve));
    const added = [...niceByThread()].filter(([tid]) => !before.has(tid));
    await w.terminate();
    expect(added.length).toBeGreaterThan(0);
    expect(added.every(([, n]) => n < BACKGROUND_NICE)).toBe(true);
  });
});

/** How many threads the example node runs once ready, started with UV_THREADPOOL_SIZE as given (undefined: unset). */
async function exampleNodeThreads(poolSize: string | undefined): Promise<number> {
  const saved = process.env.UV_THREADPOOL_SIZE;
  if (poolSize === undefined) delete process.env.UV_THREADPOOL_SIZE;
  else process.env.UV_THREADPOOL_SIZE = poolSize;
  let node;
  try {
    node = await startExampleNode(tempDir('threads'));
  } finally {
    if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
    else process.env.UV_THREADPOOL_SIZE = saved;
  }
  try {
    // Ready means its database is open: classic-level's open ran on the pool, which starts whole.
    return fs.readdirSync(`/proc/${node.child.pid}/task`).length;
  } finally {
    await node.stop();
  }
}

describe.runIf(linux)("libuv's pool in the example node", () => {
  it('starts with 32 threads when the environment says nothing, and with the operator\'s size when it does (the count sees the difference)', async () => {
    const byDefault = await exampleNodeThreads(undefined);
    const four = await exampleNodeThreads('4');
    expect(byDefault).toBeGreaterThanOrEqual(33);
    expect(four).toBeLessThan(33);
    expect(byDefault - four).toBeGreaterThanOrEqual(28);
  });
});
