import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { REDACT_PATHS } from '../dist/agent/index.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { s3Server } from './support/s3-server.js';
import { TEST_REPO } from './support/test-password.js';

/**
 * Credentials never reach logs or errors: a real S3 server, the agent's logger at its most verbose,
 * a wrong secret (the failure path) and a right one (the success path); the secret must appear nowhere.
 */
describe('credentials stay secret', () => {
  it('appear in no log line and no error message, on failure and on success', async () => {
    const server = s3Server();
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = pino({ level: 'trace', redact: REDACT_PATHS }, sink);
    const wrongSecret = 'WRONG-secret-9f8e7d6c5b4a';
    const bad = await openStorage(`s3://${server.bucket}/secrets-test`, {
      logger,
      retry: { maxAttempts: 2 },
      s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: wrongSecret } },
    });
    const err = (await Repository.open(bad, { create: true, ...TEST_REPO }).catch((e: unknown) => e)) as Error & { code?: string };
    await bad.close();
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toMatch(/^STORAGE_/);
    expect(err.message).not.toContain(wrongSecret);
    expect(JSON.stringify(err)).not.toContain(wrongSecret);

    const good = await openStorage(`s3://${server.bucket}/secrets-test`, {
      logger,
      s3: { endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } },
    });
    const repo = await Repository.open(good, { create: true, ...TEST_REPO });
    await repo.loadIndex();
    await good.close();
    expect(lines.length).toBeGreaterThan(0);
    const all = lines.join('');
    expect(all).not.toContain(wrongSecret);
    expect(all).not.toContain(server.secretAccessKey);
  });
});
