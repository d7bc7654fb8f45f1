import http from 'node:http';
import { AdminError, ErrorCodes, isErrorCode } from './errors.js';
import type {
  AgentStatus,
  CancelResult,
  CheckpointRecord,
  CreateCheckpointRequest,
  DeleteResult,
  PruneRequest,
  PruneResult,
  VerifyReport,
} from './api.js';

export interface SocketClientOptions {
  socketPath: string;
  /** Gives up on a request after this long (ms). Checkpoint creation can take a while on big databases. */
  timeoutMs?: number;
}

/**
 * A client of the agent's admin socket. Every method resolves with the decoded answer or rejects with an
 * AdminError: the agent's own error, AGENT_UNAVAILABLE when nothing listens, PROTOCOL_ERROR when the
 * answer is not ours.
 */
export class SocketClient {
  readonly socketPath: string;
  private readonly timeoutMs: number;

  constructor(options: SocketClientOptions) {
    this.socketPath = options.socketPath;
    this.timeoutMs = options.timeoutMs ?? 10 * 60_000;
  }

  status(): Promise<AgentStatus> {
    return this.request('GET', '/v1/status');
  }
  listCheckpoints(): Promise<CheckpointRecord[]> {
    return this.request('GET', '/v1/checkpoints');
  }
  createCheckpoint(req: CreateCheckpointRequest = {}): Promise<CheckpointRecord> {
    return this.request('POST', '/v1/checkpoints', req);
  }
  cancel(): Promise<CancelResult> {
    return this.request('POST', '/v1/checkpoints/cancel', {});
  }
  prune(req: PruneRequest = {}): Promise<PruneResult> {
    return this.request('POST', '/v1/checkpoints/prune', req);
  }
  getCheckpoint(id: string): Promise<CheckpointRecord> {
    return this.request('GET', `/v1/checkpoints/${encodeURIComponent(id)}`);
  }
  deleteCheckpoint(id: string, force = false): Promise<DeleteResult> {
    return this.request('DELETE', `/v1/checkpoints/${encodeURIComponent(id)}${force ? '?force=true' : ''}`);
  }
  pin(id: string): Promise<CheckpointRecord> {
    return this.request('POST', `/v1/checkpoints/${encodeURIComponent(id)}/pin`, {});
  }
  unpin(id: string): Promise<CheckpointRecord> {
    return this.request('POST', `/v1/checkpoints/${encodeURIComponent(id)}/unpin`, {});
  }
  verify(id: string): Promise<VerifyReport> {
    return this.request('POST', `/v1/checkpoints/${encodeURIComponent(id)}/verify`, {});
  }

  /** One request, one JSON answer. Exposed for tools that speak routes this class has no method for. */
  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: {
            accept: 'application/json',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(unavailable(this.socketPath, err)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              reject(new AdminError(ErrorCodes.PROTOCOL_ERROR, `agent answered ${res.statusCode} with a body that is not JSON`));
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              resolve(parsed as T);
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
