/**
 * The CLI's LineWriter (cli/line-writer.ts) on real streams: every line out, in order, in few writes;
 * the listing held up while the output is full; a lone line out once the listing waits; a closed output
 * said as such instead of waited on.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LINE_CHUNK, LineWriter, OutputClosedError } from '../dist/cli/line-writer.js';

/** A Writable that keeps what it is given, taking each write only when `release` is called (or at once when `open`). */
function sink(open: boolean): { stream: Writable; writes: string[]; release: () => void } {
  const writes: string[] = [];
  const held: (() => void)[] = [];
  const stream = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, done) {
      writes.push(chunk.toString('utf8'));
      if (open) done();
      else held.push(done);
    },
  });
  return { stream, writes, release: () => held.splice(0).forEach((d) => d()) };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** `p`, or a rejection if it has not settled within `ms` (a bound on a wait that must end, not a timing). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`not settled after ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

describe('LineWriter', () => {
  it('writes every line, in order, in pieces of about LINE_CHUNK', async () => {
    const { stream, writes } = sink(true);
    const w = new LineWriter(stream);
    const lines = Array.from({ length: 20_000 }, (_, i) => `line ${i} ${'x'.repeat(i % 50)}`);
    for (const l of lines) await w.line(l);
    await w.flush();
    expect(writes.join('')).toBe(lines.map((l) => `${l}\n`).join(''));
    const total = writes.join('').length;
    expect(writes.length).toBeLessThanOrEqual(Math.ceil(total / LINE_CHUNK) + 1);
    expect(writes.length).toBeGreaterThan(1);
  });

  it('holds the listing up while the output has not taken a piece', async () => {
    const { stream, writes, release } = sink(false);
    const w = new LineWriter(stream);
    let settled = false;
    const full = 'y'.repeat(LINE_CHUNK); // one line fills a piece: written now, and the stream is over its mark
    const p = w.line(full).then(() => (settled = true));
    await until(() => writes.length === 1, 'the piece written');
    // Turns of the event loop pass; the promise must still wait for the drain.
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    release();
    await p;
    expect(settled).toBe(true);
  });

  it('lets a lone line out while the listing waits, without a flush', async () => {
    const { stream, writes } = sink(true);
    const w = new LineWriter(stream);
    await w.line('the only match so far');
    expect(writes).toEqual([]); // gathered, not yet written
    await until(() => writes.length === 1, 'the line written while nothing else happens');
    expect(writes).toEqual(['the only match so far\n']);
  });

  it('rejects with OutputClosedError, and says closed, once the output is destroyed', async () => {
    const { stream, writes } = sink(false);
    const w = new LineWriter(stream);
    const waiting = w.line('z'.repeat(LINE_CHUNK));
    await until(() => writes.length === 1, 'the piece written');
    expect(w.closed).toBe(false);
    stream.destroy(); // as process.stdout is on EPIPE
    await expect(within(waiting, 10_000)).rejects.toBeInstanceOf(OutputClosedError);
    expect(w.closed).toBe(true);
    await w.line('more');
    await expect(w.flush()).rejects.toBeInstanceOf(OutputClosedError);
  });

  it('writes to a plain collector (no events) at once on flush', async () => {
    const got: string[] = [];
    const w = new LineWriter({ write: (s: string) => got.push(s) });
    await w.line('a');
    await w.line('b');
    await w.flush();
    expect(got).toEqual(['a\nb\n']);
    expect(w.closed).toBe(false);
  });
});
