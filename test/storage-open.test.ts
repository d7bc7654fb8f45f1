import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { AdminError, ErrorCodes } from '../dist/shared/errors.js';
import { LoggingStorage } from '../dist/agent/storage/logging-storage.js';
import { openStorage, redactUrl } from '../dist/agent/storage/open-storage.js';
import { RetryStorage } from '../dist/agent/storage/retry-storage.js';

const logger = pino({ level: 'silent' });
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'node-admin-open-storage-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

async function refusal(url: string): Promise<AdminError> {
  try {
    await openStorage(url, { logger });
  } catch (err) {
    expect(err).toBeInstanceOf(AdminError);
    expect((err as AdminError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
    return err as AdminError;
  }
  throw new Error(`openStorage(${url}) should have failed`);
}

describe('openStorage', () => {
  it.each([
    [`file://${root}/repo`, `file://${root}/repo`],
    [`file://localhost${root}/repo`, `file://${root}/repo`],
    ['s3://my-bucket', 's3://my-bucket'],
    ['s3://my-bucket/', 's3://my-bucket'],
    ['s3://my-bucket/Backups/node-1/', 's3://my-bucket/Backups/node-1'],
    ['s3://my.bucket.example/a/b', 's3://my.bucket.example/a/b'],
  ])('opens %s as %s, retrying above logging', async (url, description) => {
    const s = await openStorage(url, { logger, s3: { endpoint: 'http://127.0.0.1:9' } });
    expect(s.description).toBe(description);
    expect(s).toBeInstanceOf(RetryStorage);
    await s.close();
  });

  it('stacks no retries with retry: false', async () => {
    const s = await openStorage(`file://${root}/r2`, { logger, retry: false });
    expect(s).toBeInstanceOf(LoggingStorage);
  });

  it.each([
    ['', /empty/],
    ['/srv/backups', /not a URL/],
    ['backups', /not a URL/],
    ['http://example.com/x', /unsupported scheme "http:"/],
    ['gs://bucket/x', /unsupported scheme/],
    ['file://otherhost/srv/x', /local path/],
    ['file:///', /filesystem root/],
    ['file:///srv/x?y=1', /query/],
    ['s3://Bad_Bucket/x', /not a valid bucket name/],
    ['s3://ab/x', /not a valid bucket name/],
    ['s3://bucket:9000/x', /no port/],
    ['s3://bucket/a%20b', /prefix/],
    ['s3://bucket/a/%2e%2e/b', /prefix/],
    ['s3://bucket/x#frag', /fragment/],
  ])('refuses %j: INVALID_ARGUMENT %s', async (url, why) => {
    expect((await refusal(url)).message).toMatch(why);
  });

  it('refuses credentials in the URL without repeating them', async () => {
    for (const url of ['s3://AKIAEXAMPLE:s3cr3t/with/slash@bucket/prefix', 's3://AKIAEXAMPLE:s3cr3t@bucket/prefix']) {
      const err = await refusal(url);
      expect(err.message).toMatch(/credentials do not belong in the URL|not a URL/);
      expect(err.message).not.toContain('s3cr3t');
      expect(err.message).not.toContain('AKIAEXAMPLE');
    }
    expect(redactUrl('s3://k:s/e@c@bucket/p')).toBe('s3://***@bucket/p');
  });
});
