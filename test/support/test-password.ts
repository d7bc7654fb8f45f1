import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The password of the repositories the tests make (format 3, encrypted), in a file every test process
 * and every process it spawns can read: test/support/setup-env.ts names it in NODE_ADMIN_PASSWORD_FILE,
 * which the CLI, the example node and agents without a password of their own fall back on.
 */
export const TEST_PASSWORD = 'correct horse battery staple (tests only)';

export const TEST_PASSWORD_FILE = path.join(os.tmpdir(), `node-admin-test-password-${process.getuid?.() ?? 'user'}`);

/** Writes the password file (mode 0600) if it is not there with the right content. */
export function ensureTestPasswordFile(): string {
  let current: string | null = null;
  try {
    current = fs.readFileSync(TEST_PASSWORD_FILE, 'utf8');
  } catch {
    // not made yet
  }
  if (current !== `${TEST_PASSWORD}\n`) {
    const tmp = `${TEST_PASSWORD_FILE}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${TEST_PASSWORD}\n`, { mode: 0o600 });
    fs.renameSync(tmp, TEST_PASSWORD_FILE);
  }
  return TEST_PASSWORD_FILE;
}

/**
 * scrypt's cost for keys the tests create: the least a key file may have (2^10), so that opening a
 * repository costs milliseconds, not the half second a real key takes (the cost is the key file's:
 * readers use what it says). Key files made by agents and the example node keep the default.
 */
export const TEST_KDF = { N: 2 ** 10, r: 8, p: 1 };

/** Repository.open options for the tests' repositories: the password, and a cheap key when creating. */
export const TEST_REPO = { password: async () => Buffer.from(TEST_PASSWORD), kdfCost: TEST_KDF };
