import http from 'node:http';

/**
 * One admin request on its own new connection to the agent's Unix socket, timed from before the
 * connect to the last byte of the answer: what a client that is already running pays (curl adds its
 * own start-up, measured beside it). No keep-alive, so each request pays for its connection.
 */
export interface TimedRequest {
  ms: number;
  status: number;
  body: string;
}

export function timedRequest(socketPath: string, method: string, route: string, body?: unknown): Promise<TimedRequest> {
  const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(
      {
        socketPath,
        method,
        path: route,
        agent: false,
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const ms = performance.now() - t0;
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 400) reject(new Error(`${method} ${route}: ${status} ${text.trim()}`));
          else resolve({ ms, status, body: text });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload ?? undefined);
  });
}
