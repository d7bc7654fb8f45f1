import fs from 'node:fs';
import { powercutUnavailable } from './powercut-fs.js';

/**
 * Whether this run of the suite takes the power-cut tests, and why not.
 *
 * They run wherever the power-cut filesystem can be mounted (Linux, /dev/fuse, root, python3-fusepy,
 * which test/support/ensure-test-deps.sh installs). CI (.ci/run) sets NODE_ADMIN_POWERCUT_NODE to the
 * one Node version that runs them: on the others they are skipped (the filesystem calls they exercise
 * are libuv's and the kernel's, the same on every Node, and the Python filesystem is slow), and on that
 * one, on a machine with /dev/fuse, a skip is a failure (powercutRequired).
 */
export function powercutSkip(): string | null {
  const only = process.env.NODE_ADMIN_POWERCUT_NODE;
  if (only && only !== process.version) return `the power-cut suite runs on Node ${only} only in this run (NODE_ADMIN_POWERCUT_NODE)`;
  return powercutUnavailable();
}

/** CI asked this Node version to run the power-cut suite, and the machine has /dev/fuse. */
export function powercutRequired(): boolean {
  return process.env.NODE_ADMIN_POWERCUT_NODE === process.version && fs.existsSync('/dev/fuse');
}
