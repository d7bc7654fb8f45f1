import type { AdminApi, Operation } from '../../shared/admin-api.js';
import { API_VERSION } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { API_PREFIX, routes, type Route, type WireRequest } from '../../shared/routes.js';

export interface RouteResult {
  status: number;
  body: unknown;
}

/** A text answer (GET /v1/metrics): `text` sent as is, with its content type. */
export interface TextResult {
  status: number;
  text: string;
  contentType: string;
}

/**
 * A streamed answer (application/x-ndjson): `run` calls `emit` for each line it sends (the first one sends
 * the headers with `status`; the promise it returns settles once the line is taken by the socket: a
 * producer that awaits it goes no faster than the client reads), then resolves with the value of the
 * final `{"result": ...}` line. If it
 * fails before its first emit, the failure is an ordinary error answer; after, a last `{"error": ...}` line.
 */
export interface StreamResult {
  status: number;
  stream: (emit: (line: unknown) => Promise<void>) => Promise<unknown>;
}

/** Serves one matched request: decodes it by its route's rules and calls the operation. */
export type Handler = (api: AdminApi, req: WireRequest) => Promise<RouteResult | StreamResult | TextResult>;

interface CompiledRoute {
  op: Operation;
  method: string;
  pattern: RegExp;
  names: string[];
}

/** The shared route table (shared/routes.ts), its `{name}` segments turned into capture groups. */
const compiled: CompiledRoute[] = (Object.keys(routes) as Operation[]).map((op) => {
  const route = routes[op];
  const names: string[] = [];
  const source = route.path.replace(/\{(\w+)\}/g, (_, name: string) => (names.push(name), '([^/]+)'));
  return { op, method: route.method, pattern: new RegExp(`^${source}$`), names };
});

export function matchRoute(method: string, pathname: string): { handler: Handler; params: Record<string, string> } {
  if (!pathname.startsWith(`${API_PREFIX}/`)) {
    const version = /^\/(v\d+)\//.exec(pathname)?.[1];
    throw new AdminError(
      ErrorCodes.ROUTE_NOT_FOUND,
      version ? `unsupported API version ${version} (this agent speaks ${API_VERSION})` : `no route ${pathname}`,
    );
  }
  const rest = pathname.slice(API_PREFIX.length);
  const allowed: string[] = [];
  for (const route of compiled) {
    const m = route.pattern.exec(rest);
    if (!m) continue;
    if (route.method !== method) {
      allowed.push(route.method);
      continue;
    }
    const params: Record<string, string> = {};
    route.names.forEach((name, i) => (params[name] = decodeSegment(m[i + 1] ?? '')));
    return { handler: handlerFor(route.op), params };
  }
  if (allowed.length > 0) throw new AdminError(ErrorCodes.METHOD_NOT_ALLOWED, `${method} not allowed on ${pathname} (allowed: ${allowed.join(', ')})`);
  throw new AdminError(ErrorCodes.ROUTE_NOT_FOUND, `no route ${pathname}`);
}

function handlerFor<Op extends Operation>(op: Op): Handler {
  const route = routes[op] as Route<Operation>;
  return async (api, req) => {
    const args = route.decode(req) as unknown[];
    const call = api[op] as (...a: unknown[]) => Promise<unknown>;
    if (route.stream) {
      // The callback becomes the stream's lines (AdminApi.createBackup's progress, backupChanges' batches).
      const name = route.stream;
      return { status: route.status, stream: (emit) => call.call(api, ...args, (value: unknown) => emit({ [name]: value })) };
    }
    const value = await call.apply(api, args);
    if (route.text !== undefined) {
      if (typeof value !== 'string') throw new AdminError(ErrorCodes.INTERNAL, `${op} answered ${typeof value}, not text`);
      return { status: route.status, text: value, contentType: route.text };
    }
    return { status: route.status, body: value };
  };
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'malformed percent-encoding in the path');
  }
}
