import { defineConfig } from 'vitest/config';

/**
 * The files that run alone, one after the other, once every other file has run: each loads the machine
 * on purpose or measures under load (the differentials and the log archive's RPO under writes, the
 * outages, the pace, the power cuts on FUSE, the memory figures), or holds a fixed port (Prometheus).
 * A second file beside one of them would change what it measures. Every other file checks results, not
 * timing, and runs two at a time (two cores: the forks mostly wait for the processes, sockets and disks
 * they drive), which is what keeps the three runs of .ci/run inside CI's time.
 */
const ALONE = [
  'test/powercut.test.ts',
  'test/powercut-fs.test.ts',
  'test/checkpoint-differential.test.ts',
  'test/log-archive-differential.test.ts',
  'test/log-archive-outage.test.ts',
  'test/log-archive-replica.test.ts',
  'test/log-archive-merge.test.ts',
  'test/log-archive-restart.test.ts',
  'test/log-archive-status.test.ts',
  'test/log-archive-agent.test.ts',
  'test/log-archive-example-node.test.ts',
  'test/log-archive-break-upload.test.ts',
  'test/log-archive-spool.test.ts',
  'test/backup-pace.test.ts',
  'test/backup-replica-snapshots.test.ts',
  'test/monitoring-prometheus.test.ts',
  'test/metrics.test.ts',
  'test/cli-heap-flags.test.ts',
];

export default defineConfig({
  test: {
    // Starts a real S3-compatible server (OpenStack Swift + s3api) for the S3 tests; see the file.
    globalSetup: ['./test/global-setup-s3.ts'],
    // The tests' repository password, for them and for every process they spawn (test-password.ts).
    setupFiles: ['./test/support/setup-env.ts'],
    // Real processes, real databases, real sockets: generous limits, never timing assertions.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      { extends: true, test: { name: 'two at a time', include: ['test/**/*.test.ts'], exclude: ALONE, maxWorkers: 2, sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: 'alone', include: ALONE, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
