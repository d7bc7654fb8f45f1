import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { createAgent, type Agent, type CheckpointRecord } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/backup/storage/open-storage.js';
import { Repository } from '../dist/agent/backup/repository/repository.js';
import { HashCache } from '../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../dist/agent/backup/backup-checkpoint.js';
import { verifyRepository } from '../dist/agent/backup/verify-repository.js';
import { PACK_TARGET_SIZE } from '../dist/agent/backup/repository/format.js';
import type { S3StorageOptions } from '../dist/agent/backup/storage/s3-storage.js';
import { tempDir } from './support/processes.js';
import { s3Server } from './support/s3-server.js';

/**
 * What a backup to S3 costs in requests, counted on the real Swift server by the storage's own client
 * (S3StorageOptions.onRequest, an SDK middleware: every request that goes out, lib-storage's parts
 * included): one PutObject per pack, never a multipart upload, whatever the pack's few bytes over
 * PACK_TARGET_SIZE.
 */

const silent = pino({ level: 'silent' });
const MULTIPART = ['CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload', 'AbortMultipartUpload'];

interface Counted {
  operation: string;
  name: string | undefined;
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
    const repo = await Repository.open(storage, { create: true });
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
