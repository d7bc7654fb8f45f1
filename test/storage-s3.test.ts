import { HeadObjectCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../dist/shared/errors.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { S3Storage, classifyS3Error } from '../dist/agent/storage/s3-storage.js';
import { emptyAndClose, s3Server, s3TestStorage } from './support/s3-server.js';
import { chunked, expectKind, failure, runStorageConformance } from './support/storage-conformance.js';

// Against OpenStack Swift's s3api (started by test/global-setup-s3.ts): a real S3 implementation.

// Each test gets its own prefix, and the whole server is discarded at teardown: cleanup only closes
// (deleting the 1000+ objects of the paging test one by one would double its time on Swift).
runStorageConformance('s3 (OpenStack Swift s3api)', async () => {
  const storage = s3TestStorage();
  return { storage, cleanup: () => storage.close() };
}, { writer: false });

describe('s3 storage against Swift', () => {
  let raw: S3Client;
  beforeAll(() => {
    const server = s3Server();
    raw = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  });
  afterAll(() => raw?.destroy());

  it('get refuses an object larger than it reads whole (CORRUPT, from the stated length, before the body); up to the limit it reads', async () => {
    const s = s3TestStorage({ maxGetBytes: 1000 });
    try {
      await s.put('snapshots/at-limit', randomBytes(1000));
      await s.put('snapshots/over', randomBytes(1001));
      expect((await s.get('snapshots/at-limit')).length).toBe(1000);
      const err = await failure(s.get('snapshots/over'));
      expectKind(err, 'permanent');
      expect(err.code).toBe('CORRUPT');
      expect(err.message).toMatch(/1001 bytes, more than the 1000/);
      expect((await s.getRange('snapshots/over', 0, 1001)).length).toBe(1001); // ranged reads are the caller's bound
    } finally {
      await emptyAndClose(s);
    }
  });

  it('keeps objects at <prefix>/<name>, sends objects above multipartThreshold as multipart, aborts failed multipart uploads', async () => {
    const s = s3TestStorage({ prefix: `layout-${randomBytes(4).toString('hex')}/sub`, multipartThreshold: 16 * 1024 * 1024 });
    try {
      const prefix = s.description.replace(`s3://${s3Server().bucket}/`, '');
      const small = randomBytes(1000);
      await s.put('data/small', small);
      const head = await raw.send(new HeadObjectCommand({ Bucket: s3Server().bucket, Key: `${prefix}/data/small` }));
      expect(head.ContentLength).toBe(1000);

      const big = randomBytes(17 * 1024 * 1024);
      await s.putStream('data/big', () => chunked(big, 1 << 20), big.length);
      const bigHead = await raw.send(new HeadObjectCommand({ Bucket: s3Server().bucket, Key: `${prefix}/data/big` }));
      expect(bigHead.ETag).toMatch(/-3"$/); // 3 parts of 8 MiB: a multipart upload
      await s.put('data/big2', big);
      const big2Head = await raw.send(new HeadObjectCommand({ Bucket: s3Server().bucket, Key: `${prefix}/data/big2` }));
      expect(big2Head.ETag).toMatch(/-3"$/); // put() above the threshold goes multipart too
      expect((await s.get('data/big2')).equals(big)).toBe(true);

      // Just over a pack, under the threshold: one PutObject, streamed or not (an ETag without a part count).
      const nine = randomBytes(9 * 1024 * 1024);
      await s.put('data/nine', nine);
      await s.putStream('data/nine-streamed', () => chunked(nine, 1 << 20), nine.length);
      for (const name of ['data/nine', 'data/nine-streamed']) {
        const nineHead = await raw.send(new HeadObjectCommand({ Bucket: s3Server().bucket, Key: `${prefix}/${name}` }));
        expect(nineHead.ETag).toMatch(/^"[0-9a-f]{32}"$/);
        expect((await s.get(name)).equals(nine)).toBe(true);
      }

      // A stream that comes up short fails before CompleteMultipartUpload, and the upload is aborted.
      await failure(s.putStream('data/short', () => chunked(big, 1 << 20), big.length + 1));
      const uploads = await raw.send(new ListMultipartUploadsCommand({ Bucket: s3Server().bucket, Prefix: `${prefix}/` }));
      expect(uploads.Uploads ?? []).toEqual([]);
      expect(await s.stat('data/short')).toBeNull();
    } finally {
      await emptyAndClose(s);
    }
  });

  it('fails permanent (STORAGE_REFUSED) with wrong credentials, without leaking them', async () => {
    const secret = 'wrong-secret-Zq9xV';
    const s = s3TestStorage({ credentials: { accessKeyId: 'test:tester', secretAccessKey: secret } });
    try {
      for (const call of [() => s.get('x'), () => s.put('x', Buffer.from('x')), () => s.stat('x')]) {
        const err = await failure(call());
        expectKind(err, 'permanent');
        expect(err.code).toBe(ErrorCodes.STORAGE_REFUSED);
        expect(err.message).not.toContain(secret);
        expect(err.message).not.toContain('test:tester');
        expect(JSON.stringify(err)).not.toContain(secret);
        expect(err.cause).toBeUndefined(); // the SDK error carries the access key id and string to sign
      }
      const err = await failure(s.get('x'));
      expect(err.message).toMatch(/access denied/);
    } finally {
      await s.close();
    }
  });

  it('fails permanent "no such bucket" for a bucket that does not exist (never not-found)', async () => {
    const s = s3TestStorage({ bucket: 'no-such-bucket-here' });
    try {
      const err = await failure(s.get('x'));
      expectKind(err, 'permanent');
      expect(err.message).toMatch(/no such bucket/);
      expectKind(await failure(s.put('x', Buffer.from('x'))), 'permanent');
    } finally {
      await s.close();
    }
  });

  it('fails transient, fast, when nothing listens at the endpoint', async () => {
    const s = s3TestStorage({ endpoint: 'http://127.0.0.1:9', connectTimeoutMs: 2000 });
    try {
      const err = await failure(s.get('x'));
      expectKind(err, 'transient');
      expect(err.code).toBe(ErrorCodes.STORAGE_UNAVAILABLE);
      expect(err.message).toMatch(/ECONNREFUSED/);
    } finally {
      await s.close();
    }
  });

  it('opens s3://bucket/prefix through openStorage with credentials and endpoint from the environment', async () => {
    const server = s3Server();
    const saved = { ...process.env };
    const lines: string[] = [];
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write(chunk, _enc, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    process.env.AWS_ENDPOINT_URL_S3 = server.endpoint;
    process.env.AWS_REGION = server.region;
    const prefix = `open-${randomBytes(4).toString('hex')}`;
    const s = await openStorage(`s3://${server.bucket}/${prefix}/`, { logger });
    try {
      expect(s.description).toBe(`s3://${server.bucket}/${prefix}`);
      await s.put('cfg', Buffer.from('hello'));
      expect((await s.get('cfg')).toString()).toBe('hello');
      expect(lines.some((l) => /"op":"put".*"name":"cfg".*"bytes":5/.test(l))).toBe(true);
      expect(lines.join('')).not.toContain(server.secretAccessKey === 'testing' ? '"testing"' : server.secretAccessKey);
    } finally {
      await emptyAndClose(s);
      process.env = saved;
    }
  });
});

describe('classifyS3Error', () => {
  const sdk = (name: string, status?: number, extra: Record<string, unknown> = {}) =>
    Object.assign(new Error(`${name} message`), { name, $metadata: { httpStatusCode: status }, ...extra });
  it.each([
    [sdk('NoSuchKey', 404), 'not-found'],
    [sdk('NotFound', 404), 'not-found'],
    [sdk('NoSuchBucket', 404), 'permanent'],
    [sdk('SlowDown', 503), 'transient'],
    [sdk('InternalError', 500), 'transient'],
    [sdk('UnknownError', 502), 'transient'],
    [sdk('Throttling', 400), 'transient'],
    [sdk('RequestTimeout', 400), 'transient'],
    [sdk('TooManyRequests', 429), 'transient'],
    [sdk('AccessDenied', 403), 'permanent'],
    [sdk('InvalidAccessKeyId', 403), 'permanent'],
    [sdk('InvalidArgument', 400), 'permanent'],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'transient'],
    [Object.assign(new Error('x'), { name: 'TimeoutError' }), 'transient'],
    [Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' }), 'transient'],
    [new Error('socket hang up'), 'transient'],
    [new Error('something else'), 'permanent'],
  ] as const)('%s → %s', (err, kind) => {
    expect(classifyS3Error(err).kind).toBe(kind);
  });

  it('tells a reset (which the SDK calls TimeoutError) from a timeout', () => {
    const reset = classifyS3Error(Object.assign(new Error('read ECONNRESET'), { name: 'TimeoutError', code: 'ECONNRESET' }));
    expect(reset).toEqual({ kind: 'transient', detail: 'connection lost: read ECONNRESET (ECONNRESET)' });
    const idle = classifyS3Error(
      Object.assign(new Error('@smithy/node-http-handler - the request socket timed out after 1000 ms of inactivity (configured by client requestHandler).'), {
        name: 'TimeoutError',
      }),
    );
    expect(idle).toEqual({ kind: 'transient', detail: 'timed out: no data for 1000 ms' });
  });

  it('scrubs signatures and credentials from messages', () => {
    const { detail } = classifyS3Error(sdk('AccessDenied', 403, { message: 'bad X-Amz-Credential=AKIA123/2026 Signature=abcdef' }));
    expect(detail).not.toContain('AKIA123');
    expect(detail).not.toContain('abcdef');
  });
});

// Constructing the class directly is the programmatic API; make sure a bad bucket name in a direct
// construction still produces a StorageError at the first call rather than a raw SDK error.
describe('s3 storage errors are always StorageErrors', () => {
  it('wraps an SDK validation error', async () => {
    const server = s3Server();
    const s = new S3Storage({
      bucket: 'Bad_Bucket',
      endpoint: server.endpoint,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    });
    try {
      expectKind(await failure(s.get('x')), 'permanent');
    } finally {
      await s.close();
    }
  });
});
