import { describe, expect, it } from 'vitest';
import { defaultReaders } from '../dist/agent/backup/backup-checkpoint.js';

describe('chunks a backup keeps in flight by default', () => {
  it.each([
    [1, 1],
    [4, 1], // libuv's default pool
    [7, 1],
    [8, 2],
    [16, 4],
    [32, 8], // the CLI's and the example node's
    [64, 16],
    [1024, 16],
  ])("a pool of %i threads: %i (a quarter: the backup's writes and fsyncs take threads too, and the host node must find a free one; 16 at most)", (pool, readers) => {
    expect(defaultReaders(pool)).toBe(readers);
  });

  it('reads the pool size from UV_THREADPOOL_SIZE, libuv\'s default 4 when unset', () => {
    const saved = process.env.UV_THREADPOOL_SIZE;
    try {
      delete process.env.UV_THREADPOOL_SIZE;
      expect(defaultReaders()).toBe(1);
      process.env.UV_THREADPOOL_SIZE = '20';
      expect(defaultReaders()).toBe(5);
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
    }
  });
});
