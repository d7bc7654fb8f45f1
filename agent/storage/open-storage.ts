import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { DirStorage } from './dir-storage.js';
import { LoggingStorage } from './logging-storage.js';
import { RetryStorage, type RetryOptions } from './retry-storage.js';
import type { S3StorageOptions } from './s3-storage.js';
import { isValidBucketName } from './bucket-name.js';
import type { Storage } from './storage.js';

export interface OpenStorageOptions {
  /** Every storage call at debug level, retries at warn. None: no logging layer (a CLI that logs nothing need not load pino). */
  logger?: Logger;
  /** For `s3://` URLs. Credentials come from the SDK's standard chain unless given here. */
  s3?: Omit<S3StorageOptions, 'bucket' | 'prefix'>;
  /** Retry policy (retry-storage.ts); `false` for none. */
  retry?: Omit<RetryOptions, 'logger'> | false;
}

/**
 * The one place a storage is built: parses the URL, makes the backend, and stacks the wrappers
 *
 *     RetryStorage(LoggingStorage(backend))
 *
 * (without LoggingStorage when no logger is given)
 * so that every attempt is logged and retries are counted once, above all of them.
 *
 * URLs: `file:///absolute/path` (dir-storage) and `s3://bucket[/prefix]` (s3-storage). Anything else is
 * INVALID_ARGUMENT. Credentials never go in the URL (`s3://key:secret@bucket` is refused without echoing
 * them): the SDK finds them in the environment, ~/.aws or instance metadata.
 */
export async function openStorage(url: string, options: OpenStorageOptions): Promise<Storage> {
  const parsed = parseStorageUrl(url);
  // The AWS SDK is large (startup, memory, GC): load it only for s3:// URLs.
  const backend: Storage =
    parsed.kind === 'file'
      ? new DirStorage(parsed.root)
      : new (await import('./s3-storage.js')).S3Storage({ ...options.s3, bucket: parsed.bucket, prefix: parsed.prefix });
  const logged = options.logger ? new LoggingStorage(backend, options.logger) : backend;
  if (options.retry === false) return logged;
  return new RetryStorage(logged, { ...options.retry, ...(options.logger ? { logger: options.logger } : {}) });
}

/** Checks a storage URL without opening anything (and without loading the AWS SDK). */
export function parseStorageUrl(url: string): { kind: 'file'; root: string } | { kind: 's3'; bucket: string; prefix: string } {
  const invalid = (why: string) =>
    new AdminError(ErrorCodes.INVALID_ARGUMENT, `invalid storage URL ${JSON.stringify(redactUrl(url))}: ${why}`);
  if (typeof url !== 'string' || url === '') throw invalid('it is empty; use file:///path or s3://bucket/prefix');
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalid('not a URL; use file:///path or s3://bucket/prefix');
  }
  if (u.username !== '' || u.password !== '') {
    throw invalid('credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)');
  }
  if (u.search !== '' || u.hash !== '') throw invalid('it has a query or fragment');
  switch (u.protocol) {
    case 'file:': {
      if (u.host !== '' && u.host !== 'localhost') throw invalid('a file URL names a local path: file:///path');
      const root = fileURLToPath(u);
      if (root === '/' || root === '') throw invalid('the filesystem root cannot be a backup storage');
      return { kind: 'file', root };
    }
    case 's3:': {
      const bucket = u.hostname;
      if (u.port !== '') throw invalid('no port in an s3 URL; set the endpoint option or AWS_ENDPOINT_URL_S3');
      if (!isValidBucketName(bucket)) throw invalid(`"${bucket}" is not a valid bucket name (3-63 of a-z 0-9 . -)`);
      // From the URL as written: URL parsing would silently apply "." and ".." segments.
      const rawPath = url.slice(url.indexOf('//') + 2).replace(/^[^/]*/, '');
      let prefix: string;
      try {
        prefix = decodeURIComponent(rawPath).replace(/^\/+|\/+$/g, '');
      } catch {
        throw invalid('the prefix is not valid percent-encoding');
      }
      if (prefix !== '' && !prefix.split('/').every((s) => /^[A-Za-z0-9._-]+$/.test(s) && s !== '.' && s !== '..')) {
        throw invalid('the prefix must be /-separated segments of A-Z a-z 0-9 . _ - (no empty, "." or ".." segment)');
      }
      return { kind: 's3', bucket, prefix };
    }
    default:
      throw invalid(`unsupported scheme "${u.protocol}"; use file:///path or s3://bucket/prefix`);
  }
}

/** The URL without any user:password part, for messages. */
export function redactUrl(url: string): string {
  // Up to the last @: a secret may contain / (and a prefix never contains @).
  return String(url).replace(/^([a-z][a-z0-9+.-]*:\/\/).*@/i, '$1***@');
}
