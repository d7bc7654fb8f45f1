import type * as ClientS3 from '@aws-sdk/client-s3';
import type { GetObjectCommandOutput } from '@aws-sdk/client-s3';
import type * as LibStorage from '@aws-sdk/lib-storage';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { SourceStreamError, StreamSizeMismatch, sizedStream } from './sized-stream.js';
import {
  StorageError,
  checkName,
  checkPrefix,
  checkRangeArgs,
  checkSize,
  isValidName,
  MAX_GET_BYTES,
  objectTooLarge,
  rangeError,
  streamSizeError,
  streamSourceError,
  type ObjectInfo,
  type Storage,
  type StorageErrorKind,
  type StorageOp,
} from './storage.js';

// The SDK is CommonJS. Imported from an ES module, Node's ES loader lexes each of its files for named
// exports (cjs-module-lexer) and resolves its requires through the ES loader: 0.31-0.34 s to load
// client-s3 and lib-storage here, against 0.20-0.27 s through require, which loads the same files.
// Every command and agent start that opens an S3 repository pays it before its first request.
const requireSdk = createRequire(import.meta.url);
const { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } = requireSdk('@aws-sdk/client-s3') as typeof ClientS3;
const { Upload } = requireSdk('@aws-sdk/lib-storage') as typeof LibStorage;
type S3Client = ClientS3.S3Client;

const MiB = 1024 * 1024;

export interface S3StorageOptions {
  bucket: string;
  /** Keys are `<prefix>/<name>`; '' or undefined for the bucket's root. */
  prefix?: string;
  /** e.g. `http://127.0.0.1:18080`. Default: the SDK's (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else AWS). */
  endpoint?: string;
  /** Default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`. */
  region?: string;
  /** Path-style addressing (`host/bucket/key`). Default: true when an endpoint is configured, else false. */
  forcePathStyle?: boolean;
  /**
   * Explicit credentials. Default: the SDK's standard chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
   * `AWS_PROFILE` and ~/.aws, web identity, instance metadata).
   */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /**
   * An attempt fails `transient` when its connection sees no byte in either direction for this long
   * (a hung server, a stalled download). Default 30 s. Slow but moving transfers are not cut off.
   */
  timeoutMs?: number;
  /** An attempt fails `transient` if the TCP connection is not established within this. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * Objects up to this size go up as one PutObject; larger ones as multipart uploads. Default 64 MiB: far
   * above a pack (PACK_TARGET_SIZE plus one chunk and its header), so that every pack costs one request.
   */
  multipartThreshold?: number;
  /** The largest object get() reads (default MAX_GET_BYTES). */
  maxGetBytes?: number;
  /** Part size of a multipart upload. Default 8 MiB (min 5 MiB). */
  partSize?: number;
  /** Parts uploaded at once; memory use is about partSize × queueSize. Default 4. */
  queueSize?: number;
  /**
   * Called once for every request sent to the server (each attempt), with the S3 operation's name
   * (`PutObject`, `GetObject`, `CreateMultipartUpload`, ...): what the bench counts and tests assert on.
   */
  onRequest?: (operation: string, name: string | undefined) => void;
  /**
   * Bodies up to this size are signed with their SHA-256 (x-amz-content-sha256); larger ones (packs) go
   * as UNSIGNED-PAYLOAD. Default 1 MiB. Signing a body hashes every byte of it again, on the event loop,
   * and makes the server hash it too (Swift's s3api does). A pack's every blob is addressed by its SHA-256
   * and checked on every read (restore, verify --read-data), and TLS guards the transfer on https; what
   * the signature adds is that a pack damaged on a plain-http wire is refused at once rather than found
   * by the next verify. `Infinity` signs every body.
   */
  signedPayloadLimit?: number;
}

/**
 * `s3://bucket/prefix`: each object is the key `<prefix>/<name>`, through @aws-sdk/client-s3.
 *
 * - Checksums only WHEN_REQUIRED: the SDK's default aws-chunked uploads with CRC32 trailers are refused
 *   by Swift's s3api (501) and corrupted by some fakes; they would also read every byte once more.
 * - Packs (bodies over `signedPayloadLimit`) go as UNSIGNED-PAYLOAD, small objects signed (see there).
 * - The SDK does not retry (maxAttempts 1): retry-storage owns retries, so that attempts are counted in
 *   one place and never multiply. Every attempt is bounded by `timeoutMs` of inactivity.
 * - One request per object: anything up to `multipartThreshold` (64 MiB, every pack) is one PutObject.
 *   Only larger objects go up with lib-storage's Upload (multipart); a failed one is aborted, so nothing partial
 *   becomes visible (S3 makes an object visible only on PutObject/CompleteMultipartUpload).
 * - DeleteObjects is not used (single deletes only), so no Content-MD5 middleware is needed.
 * - A missing bucket is `permanent` ("no such bucket"), except for `stat`: HEAD answers a bare 404 for
 *   both a missing key and a missing bucket, so stat returns null there.
 * - Error messages are built from the SDK error's name, status and message, never from the error
 *   object, which carries the access key id and the string to sign; the SDK error is not kept as cause.
 */
export class S3Storage implements Storage {
  readonly description: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly keyPrefix: string;
  private readonly partSize: number;
  private readonly multipartThreshold: number;
  private readonly maxGetBytes: number;
  private readonly queueSize: number;
  private readonly secrets: string[];

  constructor(options: S3StorageOptions) {
    this.bucket = options.bucket;
    const prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.keyPrefix = prefix === '' ? '' : `${prefix}/`;
    this.description = `s3://${this.bucket}${prefix === '' ? '' : `/${prefix}`}`;
    this.partSize = Math.max(5 * MiB, options.partSize ?? 8 * MiB);
    this.multipartThreshold = Math.max(this.partSize, options.multipartThreshold ?? 64 * MiB);
    this.maxGetBytes = options.maxGetBytes ?? MAX_GET_BYTES;
    this.queueSize = Math.max(1, options.queueSize ?? 4);
    this.secrets = [options.credentials?.secretAccessKey, options.credentials?.sessionToken].filter((s): s is string => !!s);
    const endpointConfigured = !!(options.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL);
    const timeoutMs = options.timeoutMs ?? 30_000;
    // The pinned SDK (3.1169.0) supports Node 20; its warning about later releases is noise on every
    // node's stderr. An operator's own setting wins.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      forcePathStyle: options.forcePathStyle ?? endpointConfigured,
      ...(options.credentials ? { credentials: options.credentials } : {}),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
      // Plain options: the SDK builds its NodeHttpHandler from them (no import of @smithy/node-http-handler).
      requestHandler: {
        connectionTimeout: options.connectTimeoutMs ?? 10_000,
        socketTimeout: timeoutMs,
      },
    });
    const signedPayloadLimit = Math.max(0, options.signedPayloadLimit ?? MiB);
    this.client.middlewareStack.add(
      (next) => (args) => {
        const request = args.request as { headers: Record<string, string>; body?: unknown };
        if (Buffer.isBuffer(request.body) && request.body.length > signedPayloadLimit) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
        return next(args);
      },
      // Before signing (finalizeRequest): the signer uses a hash header it finds instead of computing one.
      { step: 'build', name: 'nodeAdminUnsignedPayload' },
    );
    const onRequest = options.onRequest;
    if (onRequest) {
      // At the finalize step: once per request that goes out (lib-storage's parts included).
      this.client.middlewareStack.add(
        (next, context) => (args) => {
          const key = (args.input as { Key?: unknown }).Key;
          const name = typeof key === 'string' && key.startsWith(this.keyPrefix) ? key.slice(this.keyPrefix.length) : undefined;
          onRequest((context.commandName ?? 'unknown').replace(/Command$/, ''), name);
          return next(args);
        },
        { step: 'finalizeRequest', name: 'nodeAdminCountRequests' },
      );
    }
  }

  async put(name: string, data: Buffer): Promise<void> {
    checkName(this.description, 'put', name);
    try {
      if (data.length > this.multipartThreshold) {
        await this.upload(name, data, data.length);
      } else {
        await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: this.key(name), Body: data, ContentLength: data.length }),
        );
      }
    } catch (err) {
      throw this.error('put', name, err);
    }
  }

  async putStream(name: string, open: () => Readable, size: number): Promise<void> {
    checkName(this.description, 'putStream', name);
    checkSize(this.description, name, size);
    let body: Readable | undefined;
    let sourceFailure: unknown; // Upload may report another failure first (a part it was sending)
    try {
      try {
        body = sizedStream(open(), size);
      } catch (err) {
        throw new SourceStreamError(err);
      }
      // The HTTP handler does not end a request whose body fails: the request would wait for the bytes
      // it was promised until the socket times out (twice 30 s, measured). Abort it at once instead.
      const sourceFailed = new AbortController();
      body.once('error', (err) => {
        sourceFailure = err;
        sourceFailed.abort();
      });
      if (size <= this.multipartThreshold) {
        // One PutObject, the stream as its body with a known length: nothing held in memory. A stream
        // that ends short or runs long fails (sizedStream) and the request with it: nothing is stored.
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(name), Body: body, ContentLength: size }), {
          abortSignal: sourceFailed.signal,
        });
      } else {
        await this.upload(name, body, size);
      }
    } catch (caught) {
      const err = sourceFailure ?? caught;
      if (err instanceof StreamSizeMismatch) throw streamSizeError(this.description, name, err.expected, err.got);
      if (err instanceof SourceStreamError) throw streamSourceError(this.description, name, err.cause);
      throw this.error('putStream', name, err);
    } finally {
      body?.destroy();
    }
  }

  async get(name: string): Promise<Buffer> {
    checkName(this.description, 'get', name);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(name) }));
      // The server states the length (the object's content cannot change that), so it is checked first.
      if (res.ContentLength !== undefined && res.ContentLength > this.maxGetBytes) {
        (res.Body as { destroy?: () => void } | undefined)?.destroy?.();
        throw objectTooLarge(this.description, name, res.ContentLength, this.maxGetBytes);
      }
      const data = await readBody(res);
      if (res.ContentLength !== undefined && data.length !== res.ContentLength) {
        throw new StorageError('transient', this.description, `short read: ${data.length} of ${res.ContentLength} bytes`, { op: 'get', name });
      }
      return data;
    } catch (err) {
      throw this.error('get', name, err);
    }
  }

  async getRange(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkName(this.description, 'getRange', name);
    checkRangeArgs(this.description, name, offset, length, into);
    const data = await this.getRangeOwn(name, offset, length);
    if (!into) return data;
    data.copy(into, 0);
    return into.subarray(0, length);
  }

  private async getRangeOwn(name: string, offset: number, length: number): Promise<Buffer> {
    if (length === 0) {
      // `bytes=o-(o-1)` is not a range S3 accepts: answer from the size.
      const info = await this.stat(name);
      if (!info) throw new StorageError('not-found', this.description, 'no such object', { op: 'getRange', name });
      if (offset > info.size) throw rangeError(this.description, name, offset, length, info.size);
      return Buffer.alloc(0);
    }
    let res: GetObjectCommandOutput;
    let data: Buffer;
    try {
      res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(name), Range: `bytes=${offset}-${offset + length - 1}` }),
      );
      data = await readBody(res);
    } catch (err) {
      if (statusOf(err) === 416) throw rangeError(this.description, name, offset, length, undefined);
      throw this.error('getRange', name, err);
    }
    const total = totalFromContentRange(res.ContentRange);
    if (res.ContentRange === undefined) {
      // The server ignored Range and sent the whole object.
      if (offset + length > data.length) throw rangeError(this.description, name, offset, length, data.length);
      return data.subarray(offset, offset + length);
    }
    if (data.length !== length) {
      if (total !== undefined && offset + length > total) throw rangeError(this.description, name, offset, length, total);
      throw new StorageError('transient', this.description, `short read: ${data.length} of ${length} bytes`, { op: 'getRange', name });
    }
    return data;
  }

  /** One ranged GET whose body is handed over as it arrives (no buffer of the range's size). */
  async streamRange(name: string, offset: number, length: number, onPiece: (piece: Buffer) => Promise<void> | void): Promise<void> {
    checkName(this.description, 'getRange', name);
    checkRangeArgs(this.description, name, offset, length);
    if (length === 0) {
      await this.getRangeOwn(name, offset, 0);
      return;
    }
    let res: GetObjectCommandOutput;
    try {
      res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(name), Range: `bytes=${offset}-${offset + length - 1}` }),
      );
    } catch (err) {
      if (statusOf(err) === 416) throw rangeError(this.description, name, offset, length, undefined);
      throw this.error('getRange', name, err);
    }
    const body = res.Body as (Readable & AsyncIterable<Buffer>) | undefined;
    // A server that ignored Range sends the whole object: skip to the range.
    let skip = res.ContentRange === undefined ? offset : 0;
    let got = 0;
    let consumerFailure: { err: unknown } | null = null;
    try {
      if (body) {
        for await (const chunk of body) {
          let piece = chunk;
          if (skip > 0) {
            const n = Math.min(skip, piece.length);
            skip -= n;
            piece = piece.subarray(n);
          }
          if (piece.length > length - got) piece = piece.subarray(0, length - got);
          if (piece.length === 0) continue;
          try {
            await onPiece(piece);
          } catch (err) {
            consumerFailure = { err };
            throw err;
          }
          got += piece.length;
          if (got === length) break;
        }
      }
    } catch (err) {
      const failure = consumerFailure as { err: unknown } | null; // set inside the loop
      if (failure) throw failure.err;
      throw this.error('getRange', name, err);
    } finally {
      body?.destroy();
    }
    if (got !== length) {
      const total = res.ContentRange === undefined ? res.ContentLength : totalFromContentRange(res.ContentRange);
      if (total !== undefined && offset + length > total) throw rangeError(this.description, name, offset, length, total);
      throw new StorageError('transient', this.description, `short read: ${got} of ${length} bytes`, { op: 'getRange', name });
    }
  }

  async stat(name: string): Promise<ObjectInfo | null> {
    checkName(this.description, 'stat', name);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(name) }));
      return { name, size: res.ContentLength ?? 0 };
    } catch (err) {
      const e = this.error('stat', name, err);
      if (e.kind === 'not-found') return null;
      throw e;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(this.description, prefix);
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.keyPrefix + prefix, ContinuationToken: token }),
        );
      } catch (err) {
        throw this.error('list', prefix, err, true);
      }
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined || !o.Key.startsWith(this.keyPrefix)) continue;
        const name = o.Key.slice(this.keyPrefix.length);
        if (isValidName(name)) yield { name, size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(name: string): Promise<void> {
    checkName(this.description, 'delete', name);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(name) }));
    } catch (err) {
      const e = this.error('delete', name, err);
      if (e.kind !== 'not-found') throw e;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private key(name: string): string {
    return this.keyPrefix + name;
  }

  private async upload(name: string, body: Buffer | Readable, size: number): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.key(name), Body: body, ContentLength: size },
      partSize: Math.max(this.partSize, Math.ceil(size / 10_000)),
      queueSize: this.queueSize,
      leavePartsOnError: false, // abort the multipart upload on failure
    });
    await upload.done();
  }

  /** Maps anything the SDK or the network threw to a StorageError, without credentials. */
  private error(op: StorageOp, name: string, err: unknown, isPrefix = false): StorageError {
    if (err instanceof StorageError) return err;
    const { kind, detail } = classifyS3Error(err);
    const clean = this.secrets.reduce((s, secret) => s.split(secret).join('***'), detail);
    const where = isPrefix ? `prefix ${JSON.stringify(name)}` : name;
    return new StorageError(kind, this.description, clean, { op, name: where });
  }
}

async function readBody(res: GetObjectCommandOutput): Promise<Buffer> {
  if (!res.Body) return Buffer.alloc(0);
  const bytes = await res.Body.transformToByteArray();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function totalFromContentRange(contentRange: string | undefined): number | undefined {
  const m = /\/(\d+)\s*$/.exec(contentRange ?? '');
  return m?.[1] !== undefined ? Number(m[1]) : undefined;
}

interface SdkErrorLike {
  name?: string;
  message?: string;
  code?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
  cause?: unknown;
}

function statusOf(err: unknown): number | undefined {
  return (err as SdkErrorLike | null)?.$metadata?.httpStatusCode;
}

const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'ProvisionedThroughputExceededException',
  'BandwidthLimitExceeded',
  'ServiceUnavailable',
  'InternalError',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
]);

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/**
 * The one switch that decides what a failure means: NoSuchKey/404 → not-found; 5xx, 408, 429,
 * throttling, timeouts and network resets → transient; everything else (other 4xx, auth, NoSuchBucket)
 * → permanent. Exported for tests.
 */
export function classifyS3Error(err: unknown): { kind: StorageErrorKind; detail: string } {
  const e = (err ?? {}) as SdkErrorLike;
  const name = typeof e.name === 'string' ? e.name : 'Error';
  const status = e.$metadata?.httpStatusCode;
  const netCode = networkCode(err);
  const message = scrub(typeof e.message === 'string' && e.message !== 'UnknownError' ? e.message : '');
  // The SDK names ECONNRESET and EPIPE "TimeoutError" too: the network code says what happened.
  const tag = [name !== 'Error' && name !== 'TimeoutError' ? name : undefined, netCode, status ? `HTTP ${status}` : undefined]
    .filter(Boolean)
    .join(', ');
  const detail = (text: string) => `${text}${tag ? ` (${tag})` : ''}`;

  if (name === 'NoSuchBucket') return { kind: 'permanent', detail: detail('no such bucket') };
  if (name === 'NoSuchKey' || name === 'NotFound' || (status === 404 && name !== 'NoSuchUpload')) {
    return { kind: 'not-found', detail: detail('no such object') };
  }
  const lost = status === undefined && /socket hang up|aborted|premature close|other side closed/i.test(message);
  if (netCode === 'ECONNRESET' || netCode === 'EPIPE' || lost) {
    return { kind: 'transient', detail: detail(`connection lost: ${message || netCode}`) };
  }
  if (name === 'TimeoutError' || netCode === 'ETIMEDOUT') {
    const idle = /after (\d+) ms of inactivity/.exec(message);
    const connect = /establish a connection with the server within the configured timeout of (\d+) ms/.exec(message);
    const what = idle ? `no data for ${idle[1]} ms` : connect ? `no connection within ${connect[1]} ms` : message;
    return { kind: 'transient', detail: detail(`timed out: ${what}`) };
  }
  const transient =
    TRANSIENT_NAMES.has(name) ||
    (netCode !== undefined && TRANSIENT_CODES.has(netCode)) ||
    (status !== undefined && (status >= 500 || status === 408 || status === 429)) ||
    !!e.$retryable;
  if (transient) return { kind: 'transient', detail: detail(message || 'the server did not answer usably') };
  if (status === 401 || status === 403) return { kind: 'permanent', detail: detail(`access denied: ${message || 'check the credentials and the bucket policy'}`) };
  return { kind: 'permanent', detail: detail(message || 'request refused') };
}

/** A Node network error code on the error or its cause chain. */
function networkCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e && typeof e === 'object'; depth++) {
    const code = (e as SdkErrorLike).code;
    if (typeof code === 'string' && /^E[A-Z_]+$/.test(code)) return code;
    e = (e as SdkErrorLike).cause;
  }
  return undefined;
}

/** Removes anything credential-like an SDK or server message might echo. One line, bounded length. */
function scrub(message: string): string {
  return message
    .replace(/(Credential|Signature|X-Amz-Security-Token|X-Amz-Credential|X-Amz-Signature|AWSAccessKeyId)=[^\s,&;]+/gi, '$1=***')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 300);
}

/** For openStorage: a bucket name S3 accepts (3-63 of [a-z0-9.-], starting and ending alphanumeric). */
export { isValidBucketName } from './bucket-name.js';
