import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import type { ProvidedS3, S3TestServer } from './support/s3-server.js';

/**
 * vitest globalSetup: starts OpenStack Swift with s3api (test/support/swift-s3.sh) under a temp dir on a
 * free block of 5 loopback ports, creates a bucket, and provides `s3` to the test files
 * (test/support/s3-server.ts reads it). Stops it and removes the dir at teardown.
 *
 * It installs nothing. If Swift is not installed (or does not start), it provides the reason instead,
 * so that every S3 test FAILS with it while the other tests run normally.
 */

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'swift-s3.sh');
const BINARIES = ['swift-proxy-server', 'swift-account-server', 'swift-container-server', 'swift-object-server', 'memcached'];
/** What CI must install (.ci/run). */
const SWIFT_PACKAGES = 'swift swift-proxy swift-account swift-container swift-object memcached';
const ACCESS_KEY_ID = 'test:tester';
const SECRET_ACCESS_KEY = 'testing';
const REGION = 'us-east-1';
const BUCKET = 'node-admin-test';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const provide = (value: ProvidedS3) => project.provide('s3', value);
  const missing = BINARIES.filter((b) => !onPath(b));
  if (missing.length > 0) {
    provide({
      ok: false,
      error:
        `the S3 tests need OpenStack Swift with s3api, and ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not installed: ` +
        `apt-get install -y --no-install-recommends ${SWIFT_PACKAGES}`,
    });
    return async () => {};
  }

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
    provide({ ok: true, server });
    return stop;
  } catch (err) {
    await stop();
    provide({ ok: false, error: `the S3 test server (OpenStack Swift) did not start: ${(err as Error).message}` });
    return async () => {};
  }
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin')
    .split(':')
    .some((dir) => {
      try {
        fs.accessSync(path.join(dir, bin), fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

/** A random port p such that p..p+count-1 are all free on 127.0.0.1 (Swift uses PORT..PORT+4). */
async function freePortBlock(count: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const first = 20_000 + Math.floor(Math.random() * 30_000);
    let free = true;
    for (let p = first; p < first + count && free; p++) free = await canListen(p);
    if (free) return first;
  }
  throw new Error(`found no ${count} consecutive free ports on 127.0.0.1`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** The proxy answers its healthcheck before the account/container servers listen: retry a little. */
async function createBucket(server: S3TestServer): Promise<void> {
  const client = new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  });
  const deadline = Date.now() + 60_000;
  try {
    for (;;) {
      try {
        await client.send(new CreateBucketCommand({ Bucket: server.bucket }));
        return;
      } catch (err) {
        const name = (err as Error).name;
        if (name === 'BucketAlreadyOwnedByYou' || name === 'BucketAlreadyExists') return;
        if (Date.now() > deadline) throw new Error(`creating bucket ${server.bucket} failed: ${name}: ${(err as Error).message}`);
        await sleep(200);
      }
    }
  } finally {
    client.destroy();
  }
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
