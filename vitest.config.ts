import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts a real S3-compatible server (OpenStack Swift + s3api) for the S3 tests; see the file.
    globalSetup: ['./test/global-setup-s3.ts'],
    // The tests' repository password, for them and for every process they spawn (test-password.ts).
    setupFiles: ['./test/support/setup-env.ts'],
    // Real processes, real databases, real sockets: generous limits, never timing assertions.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    // Two cores: the load tests measure correctness under contention, but must not starve each other.
    fileParallelism: false,
    pool: 'forks',
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
