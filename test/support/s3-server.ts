import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { inject } from 'vitest';
import { S3Storage, type S3StorageOptions } from '../../dist/agent/storage/s3-storage.js';
import type { Storage } from '../../dist/agent/storage/storage.js';

/**
 * The S3 server the tests use: OpenStack Swift + s3api on loopback, started once per run by
 * test/global-setup-s3.ts and handed to test files through vitest's provide/inject.
 */
export interface S3TestServer {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** What global-setup-s3.ts provides: the server, or why there is none (the S3 tests then fail with it). */
export type ProvidedS3 = { ok: true; server: S3TestServer } | { ok: false; error: string };

declare module 'vitest' {
  export interface ProvidedContext {
    s3: ProvidedS3;
  }
}

/** The server, or an Error that says what to do (the tests fail on it: never skip). */
export function s3Server(): S3TestServer {
  const provided = inject('s3') as ProvidedS3 | undefined;
  if (!provided) {
    throw new Error(
      'no S3 test server: add test/global-setup-s3.ts to globalSetup in vitest.config.ts (it starts OpenStack Swift with s3api)',
    );
  }
  if (!provided.ok) throw new Error(provided.error);
  return provided.server;
}

/**
 * What a child process (the CLI, the example node) needs to reach `server` where the SDK looks for it:
 * credentials, endpoint and region in its environment.
 */
export function s3ProcessEnv(server: S3TestServer) {
  return { AWS_ACCESS_KEY_ID: server.accessKeyId, AWS_SECRET_ACCESS_KEY: server.secretAccessKey, AWS_ENDPOINT_URL_S3: server.endpoint, AWS_REGION: server.region };
}

/** An S3Storage on the test server under a fresh prefix, so that tests never see each other's objects. */
export function s3TestStorage(options: Partial<S3StorageOptions> = {}): S3Storage {
  const server = s3Server();
  return new S3Storage({
    bucket: server.bucket,
    prefix: `t-${randomBytes(6).toString('hex')}`,
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    ...options,
  });
}

/** Deletes everything a test storage holds (a few at a time), then closes it. */
export async function emptyAndClose(storage: Storage): Promise<void> {
  try {
    const names: string[] = [];
    for await (const { name } of storage.list('')) names.push(name);
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const name = names[next++];
        if (name !== undefined) await storage.delete(name);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  } finally {
    await storage.close();
  }
}

/**
 * What the proxy does with one client connection:
 * - `pass`: forward both ways;
 * - `reset`: when the request starts arriving, answer with a TCP RST (the client sees ECONNRESET);
 * - `close`: when the request starts arriving, close cleanly without an answer ("socket hang up");
 * - `hang`: accept and read the request, never answer, never close;
 * - `truncate`: forward, but reset after `afterBytes` bytes of the answer (a download cut short).
 */
export type ProxyFault = 'pass' | 'reset' | 'close' | 'hang' | { truncate: number };

/**
 * A loopback TCP proxy in front of the S3 server that misbehaves on purpose: connection i (from 0) gets
 * `plan[i]`, later ones `then`. Real network faults for the real client: no mocks of the SDK.
 */
export class FaultProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  /** Connections accepted so far, and what each got. */
  readonly seen: ProxyFault[] = [];
  plan: ProxyFault[];
  then: ProxyFault;

  constructor(
    private readonly target: { host: string; port: number },
    plan: ProxyFault[] = [],
    then: ProxyFault = 'pass',
  ) {
    this.plan = plan;
    this.then = then;
  }

  static forEndpoint(endpoint: string, plan: ProxyFault[] = [], then: ProxyFault = 'pass'): FaultProxy {
    const u = new URL(endpoint);
    return new FaultProxy({ host: u.hostname, port: Number(u.port) }, plan, then);
  }

  /** Starts listening on 127.0.0.1; resolves to the endpoint URL to give the client. */
  async start(): Promise<string> {
    const server = net.createServer((client) => this.accept(client));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = server.address() as net.AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  /** Cuts every connection open now (a client's pooled keep-alive sockets too): what comes next gets `then`. */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
  }

  private accept(client: net.Socket): void {
    this.track(client);
    const fault = this.plan[this.seen.length] ?? this.then;
    this.seen.push(fault);
    if (fault === 'reset') {
      client.once('data', () => client.resetAndDestroy());
      return;
    }
    if (fault === 'close') {
      client.once('data', () => client.end());
      return;
    }
    if (fault === 'hang') {
      client.resume(); // read and drop the request
      return;
    }
    const upstream = net.connect(this.target.port, this.target.host);
    this.track(upstream);
    client.pipe(upstream);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    if (fault === 'pass') {
      upstream.pipe(client);
      return;
    }
    let forwarded = 0;
    upstream.on('data', (chunk: Buffer) => {
      if (client.destroyed) return;
      const room = fault.truncate - forwarded;
      if (chunk.length < room) {
        forwarded += chunk.length;
        client.write(chunk);
        return;
      }
      client.write(chunk.subarray(0, room), () => client.resetAndDestroy());
      forwarded = fault.truncate;
      upstream.destroy();
    });
  }
}
