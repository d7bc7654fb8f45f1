import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

/** One request to the backup storage as LoggingStorage logs it: one debug line per attempt. */
export interface StorageCall {
  op: string;
  name: string;
}

/** The storage request a log line records (LoggingStorage's `storage <op>` lines), or null for any other line. */
export function storageCallOf(line: string): StorageCall | null {
  const entry = JSON.parse(line) as { msg?: unknown; op?: unknown; name?: unknown };
  if (typeof entry.msg !== 'string' || !entry.msg.startsWith('storage ') || typeof entry.op !== 'string') return null;
  return { op: entry.op, name: typeof entry.name === 'string' ? entry.name : '' };
}

/**
 * A pino logger at debug level for an agent under test, and every storage request it logs, in order:
 * how tests prove that a scrape, a status or an idle archiver makes no request (and that the count sees
 * the requests an operation does make).
 */
export function storageCallLogger(): { logger: Logger; calls: StorageCall[] } {
  const calls: StorageCall[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        const call = line ? storageCallOf(line) : null;
        if (call) calls.push(call);
      }
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), calls };
}
