import type http from 'node:http';
import { AdminError, ErrorCodes, isErrorCode } from './errors.js';
import type { AdminApi, Operation } from './admin-api.js';
import type {
  ArchiveCopyProgress,
  BackupProgress,
  BackupRecord,
  ChangeBatch,
  ChangesRequest,
  ChangesSummary,
  CopyBackupsRequest,
  CopyProgress,
  CopySummary,
  CreateBackupRequest,
} from './api.js';
import { pathOf, routes, type Route, type WireArgs } from './routes.js';

// Not `import http from 'node:http'`: importing a built-in as an ES module reads every export, and on
// Node 24 and 26 node:http's lazy WebSocket exports then load undici, 80-130 ms of CPU on every CLI
// start (test/cli-fast-path-imports.test.ts); getBuiltinModule returns the same module without that.
const { request } = process.getBuiltinModule('node:http');

export interface SocketClientOptions {
  socketPath: string;
  /** Gives up on a request after this long (ms). Checkpoint creation can take a while on big databases. */
  timeoutMs?: number;
}

/**
 * A client of the agent's admin socket: AdminApi over HTTP. Every method resolves with the decoded answer
 * or rejects with an AdminError: the agent's own error, AGENT_UNAVAILABLE when nothing listens,
 * PROTOCOL_ERROR when the answer is not ours.
 */
// The operations come from the route table (below the class): this declaration gives them their types.
export interface SocketClient extends AdminApi {}

export class SocketClient implements AdminApi {
  readonly socketPath: string;
  private readonly timeoutMs: number;

  constructor(options: SocketClientOptions) {
    this.socketPath = options.socketPath;
    this.timeoutMs = options.timeoutMs ?? 10 * 60_000;
  }

  /**
   * One operation of AdminApi over the socket, as routes.ts says it travels. The operations themselves
   * are the methods AdminApi declares; they are filled in from the route table below this class.
   */
  call<Op extends Operation>(op: Op, ...args: WireArgs<Op>): Promise<Awaited<ReturnType<AdminApi[Op]>>> {
    const route = routes[op] as Route<Operation>;
    const parts = route.encode(...(args as WireArgs<Operation>));
    if (route.text !== undefined) return this.requestText(route.method, pathOf(route, parts)) as Promise<Awaited<ReturnType<AdminApi[Op]>>>;
    return this.request(route.method, pathOf(route, parts), parts.body);
  }

  /**
   * Backs a checkpoint up through the agent: `onProgress` gets each progress line of the NDJSON stream;
   * resolves with the final record, rejects with the agent's error (before or during the stream).
   * The timeout is one of silence: the agent sends progress at least every second while it works.
   */
  createBackup(req: CreateBackupRequest = {}, onProgress?: (p: BackupProgress) => void): Promise<BackupRecord> {
    const route = routes.createBackup;
    const parts = route.encode(req);
    return this.requestStream(route.method, pathOf(route, parts), parts.body, (line) => {
      const progress = (line as { progress?: unknown }).progress;
      if (progress !== undefined && progress !== null && typeof progress === 'object') onProgress?.(progress as BackupProgress);
    });
  }

  /** A copy from the agent's repository into another, its progress lines to `onProgress` (the agent repeats the last one every second). */
  copyBackups(req: CopyBackupsRequest, onProgress?: (p: CopyProgress | ArchiveCopyProgress) => void): Promise<CopySummary> {
    const route = routes.copyBackups;
    const parts = route.encode(req);
    return this.requestStream(route.method, pathOf(route, parts), parts.body, (line) => {
      const progress = (line as { progress?: unknown }).progress;
      if (progress !== undefined && progress !== null && typeof progress === 'object') onProgress?.(progress as CopyProgress | ArchiveCopyProgress);
    });
  }

  /**
   * The log archive's batches between two moments through the agent (`backup changes`): each batch line
   * of the NDJSON stream to `onBatch` (a promise it returns pauses the reading until it settles, so a slow
   * consumer holds the agent up rather than let lines pile up here); resolves with the summary.
   */
  backupChanges(req: ChangesRequest = {}, onBatch?: (b: ChangeBatch) => void | Promise<void>): Promise<ChangesSummary> {
    const route = routes.backupChanges;
    const parts = route.encode(req);
    return this.requestStream(route.method, pathOf(route, parts), undefined, (line) => {
      const batch = (line as { batch?: unknown }).batch;
      if (batch !== undefined && batch !== null && typeof batch === 'object') return onBatch?.(batch as ChangeBatch);
    });
  }

  /**
   * One request whose answer may be an NDJSON stream (application/x-ndjson): every line but the last goes
   * to `onLine` (a promise it returns pauses the answer until it settles); the last must be
   * `{"result": ...}` (resolves with it) or `{"error": {...}}` (rejects). A plain JSON answer is handled
   * like request() (errors before the stream started). `body` undefined: none (a GET).
   */
  requestStream<T>(method: string, path: string, body: unknown, onLine: (line: unknown) => void | Promise<void>): Promise<T> {
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const fail = (err: AdminError) => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: {
            accept: 'application/x-ndjson, application/json',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const type = String(res.headers['content-type'] ?? '');
          const status = res.statusCode ?? 0;
          if (!type.startsWith('application/x-ndjson')) {
            // Not streamed: a JSON answer, most likely an error found before the work started.
            collectJson(res, status, (err, value) => (err ? fail(err) : ((settled = true), resolve(value as T))));
            return;
          }
          let buffered = '';
          let final: { result: unknown } | { error: AdminError } | null = null;
          const handleLine = (text: string) => {
            if (text.trim() === '' || settled) return;
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              fail(new AdminError(ErrorCodes.PROTOCOL_ERROR, 'the agent sent a stream line that is not JSON'));
              req.destroy();
              return;
            }
            if (final !== null) {
              fail(new AdminError(ErrorCodes.PROTOCOL_ERROR, 'the agent sent more after the final line of a stream'));
              req.destroy();
              return;
            }
            const o = (parsed ?? {}) as { result?: unknown; error?: { code?: unknown; message?: unknown } };
            if (Object.hasOwn(o, 'result')) final = { result: o.result };
            else if (o.error !== undefined) final = { error: errorFromBody(o.error, status) };
            else {
              let taken: void | Promise<void>;
              try {
                taken = onLine(parsed);
              } catch (err) {
                fail(err instanceof AdminError ? err : new AdminError(ErrorCodes.INTERNAL, String(err)));
                req.destroy();
                return;
              }
              if (taken instanceof Promise) {
                res.pause();
                taken.then(
                  () => res.resume(),
                  (err: unknown) => {
                    fail(err instanceof AdminError ? err : new AdminError(ErrorCodes.INTERNAL, String(err)));
                    req.destroy();
                  },
                );
              }
            }
          };
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buffered += chunk;
            let nl: number;
            while ((nl = buffered.indexOf('\n')) !== -1) {
              const text = buffered.slice(0, nl);
              buffered = buffered.slice(nl + 1);
              handleLine(text);
            }
          });
          res.on('error', (err) => fail(unavailable(this.socketPath, err)));
          res.on('end', () => {
            handleLine(buffered);
            if (settled) return;
            const f = final as { result: unknown } | { error: AdminError } | null;
            if (f === null) fail(new AdminError(ErrorCodes.PROTOCOL_ERROR, 'the agent ended the stream without a result (did it stop?)'));
            else if ('error' in f) fail(f.error);
            else {
              settled = true;
              resolve(f.result as T);
            }
          });
          res.on('close', () => {
            if (!res.complete) fail(new AdminError(ErrorCodes.AGENT_UNAVAILABLE, `the agent at ${this.socketPath} closed the connection mid-stream`));
          });
        },
      );
      req.setTimeout(this.timeoutMs, () => {
        req.destroy(new AdminError(ErrorCodes.AGENT_UNAVAILABLE, `no word from the agent at ${this.socketPath} for ${this.timeoutMs} ms`));
      });
      req.on('error', (err) => fail(err instanceof AdminError ? err : unavailable(this.socketPath, err)));
      req.end(payload ?? undefined);
    });
  }

  /** One request, one JSON answer. Exposed for tools that speak routes this class has no method for. */
  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return this.exchange(method, path, body, 'application/json', (text, status) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new AdminError(ErrorCodes.PROTOCOL_ERROR, `agent answered ${status} with a body that is not JSON`);
      }
      return parsed as T;
    });
  }

  /** One request whose success is text (a route with `text` in routes.ts); its errors are JSON as ever. */
  requestText(method: string, path: string): Promise<string> {
    return this.exchange(method, path, undefined, 'text/plain, application/json', (text) => text);
  }

  /** Sends one request; a 2xx body goes through `decode`, anything else is the agent's JSON error. */
  private exchange<T>(method: string, path: string, body: unknown, accept: string, decode: (text: string, status: number) => T): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: {
            accept,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(unavailable(this.socketPath, err)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              try {
                resolve(decode(text, status));
              } catch (err) {
                reject(err);
              }
              return;
            }
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              reject(new AdminError(ErrorCodes.PROTOCOL_ERROR, `agent answered ${status} with a body that is not JSON`));
              return;
            }
            const e = (parsed as { error?: { code?: unknown; message?: unknown } }).error;
            if (e && isErrorCode(e.code) && typeof e.message === 'string') {
              reject(new AdminError(e.code, e.message));
            } else {
              reject(new AdminError(ErrorCodes.PROTOCOL_ERROR, `agent answered ${status} without an error body`));
            }
          });
        },
      );
      req.setTimeout(this.timeoutMs, () => {
        req.destroy(new AdminError(ErrorCodes.AGENT_UNAVAILABLE, `no answer from the agent at ${this.socketPath} within ${this.timeoutMs} ms`));
      });
      req.on('error', (err) => reject(err instanceof AdminError ? err : unavailable(this.socketPath, err)));
      req.end(payload);
    });
  }
}

// Every operation but the streamed ones (written above) is a plain call of its route.
for (const op of Object.keys(routes) as Operation[]) {
  if (routes[op].stream !== undefined) continue;
  Object.defineProperty(SocketClient.prototype, op, {
    value(this: SocketClient, ...args: unknown[]) {
      return this.call(op, ...(args as WireArgs<typeof op>));
    },
    writable: true,
    configurable: true,
  });
}

/** Reads a whole JSON answer: a 2xx value, or the AdminError its error body carries. */
function collectJson(res: http.IncomingMessage, status: number, done: (err: AdminError | null, value?: unknown) => void): void {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer | string) => chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c)));
  res.on('error', (err) => done(new AdminError(ErrorCodes.AGENT_UNAVAILABLE, `the answer was cut off: ${err.message}`)));
  res.on('end', () => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      done(new AdminError(ErrorCodes.PROTOCOL_ERROR, `agent answered ${status} with a body that is not JSON`));
      return;
    }
    if (status >= 200 && status < 300) done(null, parsed);
    else done(errorFromBody((parsed as { error?: unknown }).error, status));
  });
}

/** The AdminError an `{"error": {...}}` body describes; PROTOCOL_ERROR if it is not one of ours. */
function errorFromBody(e: unknown, status: number): AdminError {
  const body = e as { code?: unknown; message?: unknown } | undefined;
  if (body && typeof body === 'object' && isErrorCode(body.code) && typeof body.message === 'string') return new AdminError(body.code, body.message);
  return new AdminError(ErrorCodes.PROTOCOL_ERROR, `agent answered ${status} without an error body`);
}

function unavailable(socketPath: string, err: NodeJS.ErrnoException): AdminError {
  const why =
    err.code === 'ENOENT'
      ? 'no socket there (is the node running? is --socket right?)'
      : err.code === 'ECONNREFUSED'
        ? 'nothing listens on it (stale socket: is the node running?)'
        : err.code === 'EACCES'
          ? 'permission denied (are you the node\'s user or in its operator group?)'
          : err.message;
  return new AdminError(ErrorCodes.AGENT_UNAVAILABLE, `cannot reach the agent at ${socketPath}: ${why}`, { cause: err });
}
