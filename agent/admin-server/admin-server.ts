import fs from 'node:fs';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { AdminError, ErrorCodes, httpStatusFor, toAdminError } from '../../shared/errors.js';
import type { AdminApi } from '../../shared/admin-api.js';
import { clearStaleSocket, prepareSocketDir, resolveGroup } from './unix-socket.js';
import type { WireRequest } from '../../shared/routes.js';
import { matchRoute, type StreamResult } from './routes.js';

/** Request bodies larger than this are refused with 413 before they are read. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** A client has this long to send its headers, and its body (slow or idle clients are cut off). */
export const HEADERS_TIMEOUT_MS = 10_000;
export const BODY_TIMEOUT_MS = 10_000;
/** An idle keep-alive connection is closed after this. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;

/**
 * The admin socket: HTTP/1.1 + JSON on a Unix domain socket, never TCP. Every answer is JSON (but for
 * the metrics route's text, shared/routes.ts); every error is `{"error":{"code","message"}}` with the status shared/errors.ts maps its code to.
 */
export class AdminServer {
  private readonly server: http.Server;
  private socketPath: string | null = null;
  private socketIno: number | null = null;

  constructor(
    private readonly api: AdminApi,
    private readonly log: Logger,
  ) {
    // Check timeouts every second (Node's default is every 30 s, which lets idle clients linger).
    this.server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => void this.handle(req, res));
    this.server.headersTimeout = HEADERS_TIMEOUT_MS;
    // Our own body timer answers slow bodies with JSON; this is only the backstop.
    this.server.requestTimeout = BODY_TIMEOUT_MS * 3;
    this.server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
    // No inactivity timeout while a request is being served: a create can take minutes.
    this.server.timeout = 0;
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      const e = timeout
        ? new AdminError(ErrorCodes.REQUEST_TIMEOUT, 'the request was not received in time')
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? new AdminError(ErrorCodes.PAYLOAD_TOO_LARGE, 'request headers too large')
          : new AdminError(ErrorCodes.INVALID_ARGUMENT, `malformed HTTP request (${err.code ?? 'parse error'})`);
      if (socket.writable) {
        const body = JSON.stringify(e.toJSON());
        const status = httpStatusFor(e.code);
        socket.end(
          `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
      } else {
        socket.destroy();
      }
    });
  }

  async listen(socketPath: string, group: string | number | null): Promise<void> {
    const gid = resolveGroup(group);
    prepareSocketDir(socketPath, gid);
    await clearStaleSocket(socketPath);
    // The socket file is created by bind() with 0777 & ~umask: set the umask around it so that there is
    // no moment where it is looser than 0600/0660 (chmod after listen would leave a window).
    const previous = process.umask(gid === null ? 0o177 : 0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        this.server.once('error', onError);
        this.server.listen(socketPath, () => {
          this.server.off('error', onError);
          resolve();
        });
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new AdminError(ErrorCodes.SOCKET_IN_USE, `another agent took ${socketPath} while this one was starting`);
      }
      throw err;
    } finally {
      process.umask(previous);
    }
    if (gid !== null) fs.chownSync(socketPath, -1, gid);
    this.socketPath = socketPath;
    this.socketIno = fs.lstatSync(socketPath).ino;
  }

  /** Stops accepting, lets answers in flight finish (briefly), and removes the socket file if still ours. */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const force = setTimeout(() => this.server.closeAllConnections(), 2_000);
    await closed;
    clearTimeout(force);
    if (this.socketPath) {
      try {
        // Only our own socket: a newer agent may have replaced it after a stale-socket check.
        if (fs.lstatSync(this.socketPath).ino === this.socketIno) fs.unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now();
    let status = 500;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      // Route on the raw path: URL's pathname resolves dot segments (`/v1/checkpoints/x/../cancel` would run cancel).
      const match = matchRoute(req.method ?? 'GET', (req.url ?? '/').split('?')[0] ?? '/');
      const body = await readJsonBody(req);
      const request: WireRequest = { params: match.params, query: url.searchParams, body };
      const result = await match.handler(this.api, request);
      status = result.status;
      if ('stream' in result) await stream(res, result);
      else if ('text' in result) sendText(res, status, result.text, result.contentType);
      else send(res, status, result.body);
    } catch (err) {
      const e = toAdminError(err);
      status = httpStatusFor(e.code);
      if (e.code === ErrorCodes.INTERNAL) this.log.error({ err: e.message, url: req.url }, 'admin request failed');
      if (e.code === ErrorCodes.PAYLOAD_TOO_LARGE || e.code === ErrorCodes.REQUEST_TIMEOUT) res.shouldKeepAlive = false;
      send(res, status, e.toJSON());
      if (e.code === ErrorCodes.PAYLOAD_TOO_LARGE || e.code === ErrorCodes.REQUEST_TIMEOUT) {
        // Do not read the rest of a body we refused.
        res.on('finish', () => req.destroy());
      }
    } finally {
      this.log.debug({ method: req.method, url: req.url, status, ms: Date.now() - started }, 'admin request');
    }
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendText(res: http.ServerResponse, status: number, text: string, contentType: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * An NDJSON answer (the Docker Engine convention for progress): one JSON object per line, the headers
 * sent with the first one. A failure before that propagates (an ordinary error answer with its status);
 * after it, the failure is the last line, `{"error":{"code","message"}}`. A client that goes away does
 * not stop the work (cancel it through its own route); the lines are then dropped.
 */
async function stream(res: http.ServerResponse, result: StreamResult): Promise<void> {
  // A client gone mid-stream must not turn our writes into an unhandled 'error'.
  res.on('error', () => {});
  const line = (value: unknown): Promise<void> => {
    if (res.destroyed || res.writableEnded || res.socket?.destroyed === true) return Promise.resolve();
    if (!res.headersSent) {
      res.writeHead(result.status, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    }
    if (res.write(`${JSON.stringify(value)}\n`)) return Promise.resolve();
    // The client reads slower than the lines come: the producer waits (or the client went away).
    return new Promise<void>((resolve) => {
      const done = () => {
        res.off('drain', done);
        res.off('close', done);
        resolve();
      };
      res.on('drain', done);
      res.on('close', done);
    });
  };
  let value: unknown;
  try {
    value = await result.stream(line);
  } catch (err) {
    if (!res.headersSent) throw err;
    void line(toAdminError(err).toJSON());
    res.end();
    return;
  }
  void line({ result: value });
  res.end();
}

/** Reads and parses the JSON body (absent or empty: undefined). Bounded in size and in time. */
function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) {
    return Promise.reject(new AdminError(ErrorCodes.PAYLOAD_TOO_LARGE, `request body over ${MAX_BODY_BYTES} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: unknown, value?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(
      () => finish(new AdminError(ErrorCodes.REQUEST_TIMEOUT, `request body not received within ${BODY_TIMEOUT_MS} ms`)),
      BODY_TIMEOUT_MS,
    );
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        finish(new AdminError(ErrorCodes.PAYLOAD_TOO_LARGE, `request body over ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('error', (err) => finish(err));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return finish(null, undefined);
      try {
        finish(null, JSON.parse(text));
      } catch {
        finish(new AdminError(ErrorCodes.INVALID_JSON, 'request body is not valid JSON'));
      }
    });
  });
}
