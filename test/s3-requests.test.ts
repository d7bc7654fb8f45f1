import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent, type CheckpointRecord } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { verifyRepository } from '../dist/agent/backup/verify-repository.js';
import { PACK_TARGET_SIZE } from '../dist/agent/repository/format.js';
import type { S3StorageOptions } from '../dist/agent/storage/s3-storage.js';
import { tempDir } from './support/processes.js';
import { s3Server } from './support/s3-server.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * What a backup to S3 costs in requests, counted on the real Swift server by the storage's own client
 * (S3StorageOptions.onRequest, an SDK middleware: every request that goes out, lib-storage's parts
 * included): one PutObject per pack, never a multipart upload, whatever the pack's few bytes over
 * PACK_TARGET_SIZE; and packs sent UNSIGNED-PAYLOAD, as a proxy in front of the server sees them.
 */

const silent = pino({ level: 'silent' });
const MULTIPART = ['CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload', 'AbortMultipartUpload'];

interface Counted {
  operation: string;
  name: string | undefined;
}

/**
 * A loopback TCP proxy in front of the server that keeps every byte the client sends, to read the
 * requests' headers as they went on the wire.
 */
class RecordingProxy {
  private readonly server = net.createServer((client) => {
    const chunks: Buffer[] = [];
    this.connections.push(chunks);
    const upstream = net.connect(Number(new URL(this.target).port), '127.0.0.1');
    client.on('data', (d: Buffer) => chunks.push(d));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  private readonly connections: Buffer[][] = [];

  constructor(private readonly target: string) {}

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Every PUT sent: its path and its x-amz-content-sha256 header. */
  puts(): { path: string; contentSha256: string | undefined }[] {
    const out: { path: string; contentSha256: string | undefined }[] = [];
    for (const chunks of this.connections) {
      const text = Buffer.concat(chunks).toString('latin1');
      for (const m of text.matchAll(/PUT (\S+) HTTP\/1\.1\r\n([\s\S]*?)\r\n\r\n/g)) {
        out.push({ path: m[1]!, contentSha256: /^x-amz-content-sha256: *(.*)$/im.exec(m[2]!)?.[1]?.trim() });
      }
    }
    return out;
  }
}

async function backupCounting(checkpoint: CheckpointRecord, dir: string, s3: Partial<S3StorageOptions> = {}) {
  const server = s3Server();
  const requests: Counted[] = [];
  const storage = await openStorage(`s3://${server.bucket}/requests-${randomBytes(4).toString('hex')}`, {
    logger: silent,
    s3: {
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      onRequest: (operation, name) => requests.push({ operation, name }),
      ...s3,
    },
  });
  try {
    const repo = await Repository.open(storage, { create: true, ...TEST_REPO });
    const record = await backupCheckpoint({ repo, checkpoint, cache: HashCache.load(path.join(dir, `cache-${randomBytes(4).toString('hex')}.json`)) });
    const packs: string[] = [];
    for await (const o of storage.list('data/')) packs.push(o.name);
    const verified = await verifyRepository(repo, { readData: true });
    return { record, requests, packs, verified };
  } finally {
    await storage.close();
  }
}

describe('requests of a backup to S3 (Swift)', () => {
  const dir = tempDir('s3-requests');
  let db: ClassicLevel<string, Buffer>;
  let agent: Agent;
  let checkpoint: CheckpointRecord;

  beforeAll(async () => {
    db = new ClassicLevel<string, Buffer>(path.join(dir, 'db'), { valueEncoding: 'buffer' });
    await db.open();
    // ~30 MB of incompressible values: several packs.
    for (let b = 0; b < 30; b++) {
      await db.batch(Array.from({ length: 1000 }, (_, i) => ({ type: 'put' as const, key: `k/${String(b).padStart(3, '0')}/${i}`, value: randomBytes(1000) })));
    }
    agent = createAgent({ dbPath: path.join(dir, 'db'), checkpointDir: path.join(dir, 'checkpoints'), retention: { keepLast: 10 }, logger: silent });
    await agent.start();
    checkpoint = await agent.createCheckpoint({ label: 'requests' });
  }, 120_000);

  afterAll(async () => {
    await agent?.stop();
    await db?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('stores each pack with exactly one PutObject and no multipart upload', async () => {
    const { record, requests, packs, verified } = await backupCounting(checkpoint, dir);
    expect(record.packsUploaded).toBeGreaterThanOrEqual(3);
    expect(packs).toHaveLength(record.packsUploaded!);
    // Every full pack ends past PACK_TARGET_SIZE (the 8 MiB the old part size was): the case that went multipart.
    expect(record.bytesUploaded!).toBeGreaterThan((record.packsUploaded! - 1) * PACK_TARGET_SIZE);
    const packPuts = requests.filter((r) => r.operation === 'PutObject' && r.name?.startsWith('data/')).map((r) => r.name);
    expect(packPuts.sort()).toEqual([...packs].sort());
    expect(requests.filter((r) => MULTIPART.includes(r.operation))).toEqual([]);
    expect(verified.errors).toEqual([]);
  });

  it('sends packs UNSIGNED-PAYLOAD (their bytes are not hashed again) and signs the small objects with their SHA-256', async () => {
    const signed = async (s3: Partial<S3StorageOptions>) => {
      const proxy = new RecordingProxy(s3Server().endpoint);
      const endpoint = await proxy.start();
      try {
        const { packs } = await backupCounting(checkpoint, dir, { endpoint, ...s3 });
        const puts = proxy.puts();
        const packPuts = puts.filter((p) => p.path.includes('/data/'));
        expect(packPuts).toHaveLength(packs.length);
        const others = puts.filter((p) => !p.path.includes('/data/'));
        expect(others.length).toBeGreaterThanOrEqual(3); // config, lock, index, snapshot
        for (const p of others) expect(p.contentSha256, p.path).toMatch(/^[0-9a-f]{64}$/);
        return packPuts.map((p) => p.contentSha256);
      } finally {
        await proxy.stop();
      }
    };
    for (const h of await signed({})) expect(h).toBe('UNSIGNED-PAYLOAD');
    // Control: with every body signed, the same packs carry their SHA-256 (the proxy sees the header).
    for (const h of await signed({ signedPayloadLimit: Infinity })) expect(h).toMatch(/^[0-9a-f]{64}$/);
  });

  it('counts the multipart requests too (control: with the part size as the threshold, as before, packs go multipart)', async () => {
    const { record, requests, packs } = await backupCounting(checkpoint, dir, { multipartThreshold: 8 * 1024 * 1024 });
    const creates = requests.filter((r) => r.operation === 'CreateMultipartUpload');
    expect(record.packsUploaded).toBeGreaterThanOrEqual(3);
    // Every pack but the last (which ends where the data ends) is over 8 MiB: create, 2 parts, complete.
    expect(creates.length).toBeGreaterThanOrEqual(packs.length - 1);
    expect(requests.filter((r) => r.operation === 'UploadPart').length).toBe(2 * creates.length);
    expect(requests.filter((r) => r.operation === 'PutObject' && r.name?.startsWith('data/')).length).toBe(packs.length - creates.length);
  });
});
