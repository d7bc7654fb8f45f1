import { isBackupId, isCheckpointId, API_VERSION, type CreateBackupRequest, type VerifyBackupsRequest } from '../../shared/api.js';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import type { Agent } from '../agent-types.js';

export interface RouteRequest {
  params: string[];
  query: URLSearchParams;
  body: unknown;
}

export interface RouteResult {
  status: number;
  body: unknown;
}

/**
 * A streamed answer (application/x-ndjson): `run` calls `emit` for each line it sends (the first one sends
 * the headers with `status`), then resolves with the value of the final `{"result": ...}` line. If it
 * fails before its first emit, the failure is an ordinary error answer; after, a last `{"error": ...}` line.
 */
export interface StreamResult {
  status: number;
  stream: (emit: (line: unknown) => void) => Promise<unknown>;
}

type Handler = (agent: Agent, req: RouteRequest) => Promise<RouteResult | StreamResult>;

const ok = (body: unknown): RouteResult => ({ status: 200, body });

/** The route table: one line per route. `{id}` segments are parsed into checkpoint ids before a handler runs. */
const routes: { method: string; path: RegExp; handler: Handler }[] = [
  { method: 'GET', path: /^\/status$/, handler: async (a) => ok(await a.status()) },
  { method: 'GET', path: /^\/checkpoints$/, handler: async (a) => ok(await a.listCheckpoints()) },
  { method: 'POST', path: /^\/checkpoints$/, handler: async (a, r) => ({ status: 201, body: await a.createCheckpoint(parseCreate(r.body)) }) },
  { method: 'POST', path: /^\/checkpoints\/cancel$/, handler: async (a, r) => (noBody(r.body), ok(await a.cancel())) },
  { method: 'POST', path: /^\/checkpoints\/prune$/, handler: async (a, r) => ok(await a.prune(parsePrune(r.body))) },
  { method: 'GET', path: /^\/checkpoints\/([^/]+)$/, handler: async (a, r) => ok(await a.getCheckpoint(id(r))) },
  { method: 'DELETE', path: /^\/checkpoints\/([^/]+)$/, handler: async (a, r) => ok(await a.deleteCheckpoint(id(r), { force: flag(r.query, 'force') })) },
  { method: 'POST', path: /^\/checkpoints\/([^/]+)\/pin$/, handler: async (a, r) => (noBody(r.body), ok(await a.pin(id(r)))) },
  { method: 'POST', path: /^\/checkpoints\/([^/]+)\/unpin$/, handler: async (a, r) => (noBody(r.body), ok(await a.unpin(id(r)))) },
  { method: 'POST', path: /^\/checkpoints\/([^/]+)\/verify$/, handler: async (a, r) => (noBody(r.body), ok(await a.verify(id(r)))) },
  { method: 'GET', path: /^\/backups$/, handler: async (a) => ok(await a.listBackups()) },
  { method: 'POST', path: /^\/backups$/, handler: async (a, r) => streamBackup(a, parseCreateBackup(r.body)) },
  { method: 'POST', path: /^\/backups\/cancel$/, handler: async (a, r) => (noBody(r.body), ok(await a.cancelBackup())) },
  { method: 'POST', path: /^\/backups\/prune$/, handler: async (a, r) => ok(await a.pruneBackups(parsePrune(r.body))) },
  { method: 'POST', path: /^\/backups\/verify$/, handler: async (a, r) => ok(await a.verifyBackups(parseVerifyBackups(r.body))) },
  { method: 'GET', path: /^\/backups\/([^/]+)$/, handler: async (a, r) => ok(await a.getBackup(backupId(r.params[0]))) },
];

/** POST /v1/backups: progress lines while it runs, then the record (see StreamResult). */
function streamBackup(a: Agent, req: CreateBackupRequest): StreamResult {
  return { status: 200, stream: (emit) => a.createBackup(req, (progress) => emit({ progress })) };
}

export function matchRoute(method: string, pathname: string): { handler: Handler; params: string[] } {
  const prefix = `/${API_VERSION}/`;
  if (!pathname.startsWith(prefix)) {
    const version = /^\/(v\d+)\//.exec(pathname)?.[1];
    throw new AdminError(
      ErrorCodes.ROUTE_NOT_FOUND,
      version ? `unsupported API version ${version} (this agent speaks ${API_VERSION})` : `no route ${pathname}`,
    );
  }
  const rest = pathname.slice(prefix.length - 1);
  const allowed: string[] = [];
  for (const route of routes) {
    const m = route.path.exec(rest);
    if (!m) continue;
    if (route.method !== method) {
      allowed.push(route.method);
      continue;
    }
    return { handler: route.handler, params: m.slice(1).map(decodeSegment) };
  }
  if (allowed.length > 0) throw new AdminError(ErrorCodes.METHOD_NOT_ALLOWED, `${method} not allowed on ${pathname} (allowed: ${allowed.join(', ')})`);
  throw new AdminError(ErrorCodes.ROUTE_NOT_FOUND, `no route ${pathname}`);
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'malformed percent-encoding in the path');
  }
}

function id(r: RouteRequest): string {
  const value = r.params[0];
  if (!isCheckpointId(value)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a checkpoint id: ${JSON.stringify(value)} (expected like 20261122T210045123Z-a1b2)`);
  }
  return value;
}

function backupId(value: unknown): string {
  if (!isBackupId(value)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `not a backup id: ${JSON.stringify(value)} (expected like 20261122t213525139z-8dd2)`);
  }
  return value;
}

function flag(query: URLSearchParams, name: string): boolean {
  const v = query.get(name);
  if (v === null || v === 'false' || v === '0') return false;
  if (v === '' || v === 'true' || v === '1') return true;
  throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `query parameter ${name} must be true or false`);
}

function object(body: unknown, allowed: string[]): Record<string, unknown> {
  if (body === undefined) return {};
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'request body must be a JSON object');
  }
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `unknown field ${JSON.stringify(key)} in request body`);
  }
  return body as Record<string, unknown>;
}

function noBody(body: unknown): void {
  object(body, []);
}

function parseCreate(body: unknown): { label?: string; pin?: boolean } {
  const o = object(body, ['label', 'pin']);
  if (o.label !== undefined && o.label !== null && typeof o.label !== 'string') {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'label must be a string');
  }
  if (o.pin !== undefined && typeof o.pin !== 'boolean') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'pin must be true or false');
  return { ...(typeof o.label === 'string' ? { label: o.label } : {}), ...(o.pin !== undefined ? { pin: o.pin } : {}) };
}

function parsePrune(body: unknown): { dryRun?: boolean } {
  const o = object(body, ['dryRun']);
  if (o.dryRun !== undefined && typeof o.dryRun !== 'boolean') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'dryRun must be true or false');
  return o.dryRun === undefined ? {} : { dryRun: o.dryRun };
}

function parseCreateBackup(body: unknown): CreateBackupRequest {
  const o = object(body, ['checkpointId', 'pin']);
  if (o.checkpointId !== undefined && !isCheckpointId(o.checkpointId)) {
    throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `checkpointId must be a checkpoint id like 20261122T210045123Z-a1b2, got ${JSON.stringify(o.checkpointId)}`);
  }
  if (o.pin !== undefined && typeof o.pin !== 'boolean') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'pin must be true or false');
  return { ...(o.checkpointId !== undefined ? { checkpointId: o.checkpointId } : {}), ...(o.pin !== undefined ? { pin: o.pin } : {}) };
}

function parseVerifyBackups(body: unknown): VerifyBackupsRequest {
  const o = object(body, ['id', 'readData']);
  const id = o.id === undefined ? undefined : backupId(o.id);
  if (o.readData !== undefined && typeof o.readData !== 'boolean') throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'readData must be true or false');
  return { ...(id !== undefined ? { id } : {}), ...(o.readData !== undefined ? { readData: o.readData } : {}) };
}
