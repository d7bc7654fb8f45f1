import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { ProvidedS3, S3TestServer } from './support/s3-server.js';
// One copy of the Swift recipe's pieces, shared with the benchmark (built before vitest runs).
import { createBucket, freePortBlock, swiftMissing } from '../dist/bench/swift-server.js';

/**
 * vitest globalSetup: starts OpenStack Swift with s3api (test/support/swift-s3.sh) under a temp dir on a
 * free block of 5 loopback ports, creates a bucket, and provides `s3` to the test files
 * (test/support/s3-server.ts reads it). Stops it and removes the dir at teardown.
 *
 * It installs nothing. If Swift is not installed (or does not start), it provides the reason instead,
 * so that every S3 test FAILS with it while the other tests run normally.
 */

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'swift-s3.sh');
const ACCESS_KEY_ID = 'test:tester';
const SECRET_ACCESS_KEY = 'testing';
const REGION = 'us-east-1';
const BUCKET = 'node-admin-test';

/** The one server of this vitest process, whichever project's setup came first; stopped by the last teardown. */
interface SharedServer {
  started: Promise<{ provided: ProvidedS3; stop: () => Promise<void> }>;
  users: number;
}
const SHARED = Symbol.for('node-admin.test.swift');

/**
 * Called once for the root config and once for each project (vitest.config.ts): every call provides the
 * same server, started once (a Swift start takes seconds, and three of them would run side by side).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const g = globalThis as { [SHARED]?: SharedServer };
  const shared = (g[SHARED] ??= { started: start(), users: 0 });
  shared.users++;
  const { provided, stop } = await shared.started;
  project.provide('s3', provided);
  return async () => {
    if (--shared.users > 0) return;
    delete g[SHARED];
    await stop();
  };
}

async function start(): Promise<{ provided: ProvidedS3; stop: () => Promise<void> }> {
  const none = async () => {};
  const missing = swiftMissing();
  if (missing !== null) return { provided: { ok: false, error: `the S3 tests need OpenStack Swift with s3api, and ${missing}` }, stop: none };

  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'node-admin-swift-'));
  // The script wipes and recreates its BASE: give it a child of our temp dir.
  const swiftDir = path.join(base, 'swift');
  let stopped = false;
  const stop = async () => {
    stopped = true;
    await run('bash', [script, 'stop', swiftDir], {});
    fs.rmSync(base, { recursive: true, force: true });
  };
  // Safety net if vitest exits without running teardown (an error in another globalSetup, Ctrl-C).
  process.once('exit', () => {
    if (stopped) return;
    try {
      execFileSync('bash', [script, 'stop', swiftDir], { stdio: 'ignore', timeout: 10_000 });
      fs.rmSync(base, { recursive: true, force: true });
    } catch {
      // best effort
    }
  });
  try {
    const port = await freePortBlock(5);
    const started = await run('bash', [script, 'start', swiftDir], { PORT: String(port) });
    if (started.code !== 0) {
      throw new Error(`swift-s3.sh start failed (exit ${started.code}): ${lastLines(started.output)}${logTails(swiftDir)}`);
    }
    const server: S3TestServer = {
      endpoint: `http://127.0.0.1:${port}`,
      region: REGION,
      bucket: BUCKET,
      accessKeyId: ACCESS_KEY_ID,
      secretAccessKey: SECRET_ACCESS_KEY,
    };
    await createBucket(server);
    return { provided: { ok: true, server }, stop };
  } catch (err) {
    await stop();
    return { provided: { ok: false, error: `the S3 test server (OpenStack Swift) did not start: ${(err as Error).message}` }, stop: none };
  }
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

function lastLines(s: string, n = 5): string {
  return s.trim().split('\n').slice(-n).join(' | ');
}

function logTails(dir: string): string {
  try {
    return fs
      .readdirSync(path.join(dir, 'log'))
      .map((f) => {
        const text = fs.readFileSync(path.join(dir, 'log', f), 'utf8').trim();
        return text ? `; ${f}: ${lastLines(text, 3)}` : '';
      })
      .join('');
  } catch {
    return '';
  }
}
