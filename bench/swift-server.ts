import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT } from './backup-bench-config.js';

/**
 * The S3 server of the backup benchmark's S3 phase: OpenStack Swift with s3api on loopback, the same
 * single-node recipe the tests start (test/support/swift-s3.sh, run as a script: one copy of it), under
 * a directory of the benchmark's, on a free block of 5 ports. It installs nothing: without Swift the
 * phase is skipped with the packages to install. The tests' global setup (test/global-setup-s3.ts)
 * starts its own with the pieces exported here (the package check, a free port block, the bucket).
 */

export interface SwiftServer {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): void;
}

const SCRIPT = path.join(ROOT, 'test', 'support', 'swift-s3.sh');
const BINARIES = ['swift-proxy-server', 'swift-account-server', 'swift-container-server', 'swift-object-server', 'memcached'];
export const SWIFT_PACKAGES = 'swift swift-proxy swift-account swift-container swift-object memcached';

/** Why Swift cannot run here (a missing binary), or null. */
export function swiftMissing(): string | null {
  const missing = BINARIES.filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);
  if (missing.length > 0) return `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not installed: apt-get install -y --no-install-recommends ${SWIFT_PACKAGES}`;
  if (!fs.existsSync(SCRIPT)) return `${SCRIPT} is missing`;
  return null;
}

export async function startSwift(base: string): Promise<SwiftServer> {
  const port = await freePortBlock(5);
  const dir = path.join(base, 'swift');
  const stop = () => {
    spawnSync('bash', [SCRIPT, 'stop', dir], { stdio: 'ignore', timeout: 30_000 });
  };
  try {
    execFileSync('bash', [SCRIPT, 'start', dir], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  } catch (err) {
    stop();
    throw new Error(`Swift did not start (see ${path.join(dir, 'log')}): ${(err as Error).message}`);
  }
  const server = { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', bucket: 'node-admin-bench', accessKeyId: 'test:tester', secretAccessKey: 'testing', stop };
  try {
    await createBucket(server);
  } catch (err) {
    stop();
    throw err;
  }
  return server;
}

/**
 * Creates the bucket (one already there is fine). The proxy answers its healthcheck before the account
 * and container servers listen: retried for up to a minute.
 */
export async function createBucket(s: Omit<SwiftServer, 'stop'>): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'; // as s3-storage.ts does
  const client = new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  });
  const deadline = Date.now() + 60_000;
  try {
    for (;;) {
      try {
        await client.send(new CreateBucketCommand({ Bucket: s.bucket }));
        return;
      } catch (err) {
        const name = (err as Error).name;
        if (name === 'BucketAlreadyOwnedByYou' || name === 'BucketAlreadyExists') return;
        if (Date.now() > deadline) throw new Error(`creating bucket ${s.bucket} failed: ${name}: ${(err as Error).message}`);
        await sleep(200);
      }
    }
  } finally {
    client.destroy();
  }
}

/** A random port p such that p..p+count-1 are all free on 127.0.0.1 (Swift uses PORT..PORT+4). */
export async function freePortBlock(count: number): Promise<number> {
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
