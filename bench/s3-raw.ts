import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';

/**
 * The store's own limit, for the backup benchmark's S3 phase: the plain AWS SDK moving `objects` objects
 * of `objectBytes` to or from the server, `concurrency` at once, as its own process (timed like ours:
 * Node's start and the SDK's import included). The client as a user would build it for Swift (checksums
 * WHEN_REQUIRED, which Swift needs), signing its payloads as the SDK does by default.
 *
 *   node dist/bench/s3-raw.js put|get '{"endpoint":"http://…","bucket":"…","prefix":"raw-1","objects":128,"objectBytes":8388608,"concurrency":4,"accessKeyId":"…","secretAccessKey":"…"}'
 *
 * Prints one JSON line: {"bytes": …, "seconds": …} (seconds from the first request to the last answer).
 */

interface RawArgs {
  endpoint: string;
  region?: string;
  bucket: string;
  prefix: string;
  objects: number;
  /** get: how many objects `put` left under the prefix; object i reads key i modulo this. */
  available?: number;
  objectBytes: number;
  concurrency: number;
  accessKeyId: string;
  secretAccessKey: string;
}

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  if ((mode !== 'put' && mode !== 'get') || !json) throw new Error('usage: s3-raw.js put|get <json arguments>');
  const a = JSON.parse(json) as RawArgs;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new S3Client({
    endpoint: a.endpoint,
    region: a.region ?? 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const body = mode === 'put' ? randomBytes(a.objectBytes) : null;
  let next = 0;
  let bytes = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < a.objects) {
      const Key = `${a.prefix}/${next++ % (a.available ?? a.objects)}`;
      if (body) {
        await client.send(new PutObjectCommand({ Bucket: a.bucket, Key, Body: body, ContentLength: body.length }));
        bytes += body.length;
      } else {
        const res = await client.send(new GetObjectCommand({ Bucket: a.bucket, Key }));
        const data = await res.Body!.transformToByteArray();
        bytes += data.length; // after the await: `bytes += await …` would add to a stale total
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, a.concurrency) }, worker));
  const seconds = (performance.now() - started) / 1000;
  client.destroy();
  process.stdout.write(JSON.stringify({ bytes, seconds }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`s3-raw failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
