import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { statFields } from './proc-stat.js';
import { CENSUS_SLOTS } from './thread-census.js';

/** The census's thread (thread-census.ts): counts the process's other threads by state every tick. */
const { counts, tickMs, mainTid } = workerData as { counts: Int32Array; tickMs: number; mainTid: number };
const own = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
Atomics.store(counts, CENSUS_SLOTS.tid, own);
const tasks = `/proc/${mainTid}/task`;
setInterval(() => {
  let running = 0;
  let diskWait = 0;
  for (const tid of fs.readdirSync(tasks)) {
    const n = Number(tid);
    if (n === mainTid || n === own) continue;
    const state = statFields(`${tasks}/${tid}/stat`)?.[0];
    if (state === 'R') running++;
    else if (state === 'D') diskWait++;
  }
  Atomics.add(counts, CENSUS_SLOTS.running, running);
  Atomics.add(counts, CENSUS_SLOTS.diskWait, diskWait);
  Atomics.add(counts, CENSUS_SLOTS.samples, 1);
}, tickMs);
parentPort!.postMessage('ready');
