// A writer process holding a database open (checkpoint-log-switch.test.ts): once asked (<ctl>.go), one
// small write (g1), enough large values to fill the memtable (LevelDB then switches to a new log), one
// more small write (g2); then it says so (<ctl>.done) and waits to be killed.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClassicLevel } from 'classic-level';

const [dbPath, ctl] = process.argv.slice(2);
if (dbPath === undefined || ctl === undefined) throw new Error('usage: log-switch-writer.mjs <db> <ctl>');
const MEMTABLE = 64 << 20;
/** @type {ClassicLevel<string, Buffer>} */
const db = new ClassicLevel(dbPath, { valueEncoding: 'buffer', writeBufferSize: MEMTABLE });
await db.open();
for (let i = 0; i < 100; i++) await db.put(`seed${i}`, Buffer.alloc(100, 1));
fs.writeFileSync(`${ctl}.ready`, '');
// Polls a file the test creates: the test's process is blocked inside a synchronous build meanwhile.
while (!fs.existsSync(`${ctl}.go`)) await sleep(1);
await db.put('g1', Buffer.from('g1'));
for (let i = 0; i < MEMTABLE / (1 << 20) + 2; i++) await db.put(`big${i}`, randomBytes(1 << 20));
await db.put('g2', Buffer.from('g2'));
fs.writeFileSync(`${ctl}.done`, '');
setInterval(() => {}, 1000);
