import { describe, expect, it } from 'vitest';
import { defaultReaders } from '../dist/agent/backup/backup-checkpoint.js';

describe('chunks a backup keeps in flight by default', () => {
  it.each([
    [1, 1],
    [2, 1],
    [4, 2], // libuv's default pool
    [5, 2],
    [16, 8], // the CLI's and the example node's
    [32, 16],
    [1024, 16],
  ])('a pool of %i threads: %i (half, so the host node always finds a free thread; 16 at most)', (pool, readers) => {
    expect(defaultReaders(pool)).toBe(readers);
  });

  it('reads the pool size from UV_THREADPOOL_SIZE, libuv\'s default 4 when unset', () => {
    const saved = process.env.UV_THREADPOOL_SIZE;
    try {
      delete process.env.UV_THREADPOOL_SIZE;
      expect(defaultReaders()).toBe(2);
      process.env.UV_THREADPOOL_SIZE = '20';
      expect(defaultReaders()).toBe(10);
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
    }
  });
});
