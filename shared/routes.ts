/**
 * The route table: every operation of AdminApi, the one route that carries it, and how its arguments
 * travel. The agent's server matches requests against it and decodes them (agent/admin-server/); the
 * socket client encodes calls with it (socket-client.ts). A route, its arguments and its checks are
 * written here once; the compiler makes the table cover every operation.
 *
 * HTTP/1.1 + JSON on a Unix socket; every route is versioned under /v1 (an unknown version is a 404
 * ROUTE_NOT_FOUND). Errors: a 4xx/5xx status and an ErrorBody (errors.ts). The streamed routes answer
 * 200 application/x-ndjson: lines named by the route's `stream` (POST /v1/backups:
 * `{"progress":BackupProgress}`; GET /v1/log-archive/changes: `{"batch":ChangeBatch}`), then exactly one
 * `{"result":...}` or `{"error":{"code","message"}}` line; a failure before the stream starts (bad
 * body, BUSY, BACKUP_NOT_CONFIGURED, no such checkpoint, storage refused) is an ordinary error answer
 * (the Docker Engine convention). One route answers text rather than JSON: GET /v1/metrics,
 * the Prometheus exposition (METRICS_CONTENT_TYPE); its errors are JSON like every other.
 */

import type { AdminApi, Operation } from './admin-api.js';
import { API_VERSION, type ChangesRequest, type CopyBackupsRequest, type CopySelection, type CreateBackupRequest, type CreateCheckpointRequest, type PruneRequest, type VerifyBackupsRequest } from './api.js';
import { AdminError, ErrorCodes } from './errors.js';
import { parseBackupId, parseCheckpointId, parseLabel, parseMoment, parseOptionalBoolean, parseTimelineId } from './input-rules.js';

export const API_PREFIX = `/${API_VERSION}`;

/** The Prometheus text exposition format, version 0.0.4 (what prom-client's default registry writes). */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A request as the server received it: path parameters (percent-decoded), query and parsed JSON body. */
export interface WireRequest {
  params: Readonly<Record<string, string>>;
  query: URLSearchParams;
  /** undefined when the request had no body. */
  body: unknown;
}

/** What the client sends for one call: path parameters, query parameters, a JSON body. */
export interface WireParts {
  params?: Record<string, string>;
  query?: Record<string, string>;
  body?: unknown;
}

/** The arguments that cross the socket: all of them, but for a streamed route's callback (it becomes the stream). */
export type WireArgs<Op extends Operation> = Op extends 'createBackup'
  ? [req?: CreateBackupRequest]
  : Op extends 'copyBackups'
    ? [req: CopyBackupsRequest]
  : Op extends 'backupChanges'
    ? [req?: ChangesRequest]
    : Parameters<AdminApi[Op]>;

export interface Route<Op extends Operation> {
  method: 'GET' | 'POST' | 'DELETE';
  /** Under API_PREFIX; a `{name}` segment is a path parameter. */
  path: string;
  /** The status of a success: 201 for a create, else 200. */
  status: 200 | 201;
  /** Answered as an NDJSON stream (see above): the name of its lines (the operation's callback gets each). */
  stream?: 'progress' | 'batch';
  /** Answered as text of this content type (the operation resolves with a string), not JSON. */
  text?: string;
  /** Server side: the request as the operation's arguments, every input rule applied (throws INVALID_ARGUMENT). */
  decode(req: WireRequest): WireArgs<Op>;
  /** Client side: the request for these arguments. */
  encode(...args: WireArgs<Op>): WireParts;
}

/** In matching order: the first route whose path and method match serves the request. */
export const routes: { readonly [Op in Operation]: Route<Op> } = {
  status: { method: 'GET', path: '/status', status: 200, decode: () => [], encode: () => ({}) },
  listCheckpoints: { method: 'GET', path: '/checkpoints', status: 200, decode: () => [], encode: () => ({}) },
  createCheckpoint: {
    method: 'POST',
    path: '/checkpoints',
    status: 201,
    decode: (r) => [parseCreateCheckpoint(r.body)],
    encode: (req = {}) => ({ body: req }),
  },
  cancel: { method: 'POST', path: '/checkpoints/cancel', status: 200, decode: (r) => (noBody(r.body), []), encode: () => ({ body: {} }) },
  prune: { method: 'POST', path: '/checkpoints/prune', status: 200, decode: (r) => [parsePrune(r.body)], encode: (req = {}) => ({ body: req }) },
  getCheckpoint: { method: 'GET', path: '/checkpoints/{id}', status: 200, decode: (r) => [checkpointParam(r)], encode: (id) => ({ params: { id } }) },
  deleteCheckpoint: {
    method: 'DELETE',
    path: '/checkpoints/{id}',
    status: 200,
    decode: (r) => [checkpointParam(r), { force: flag(r.query, 'force') }],
    encode: (id, options = {}) => ({ params: { id }, ...(options.force === true ? { query: { force: 'true' } } : {}) }),
  },
  pin: checkpointAction('pin'),
  unpin: checkpointAction('unpin'),
  verify: checkpointAction('verify'),
  listBackups: { method: 'GET', path: '/backups', status: 200, decode: () => [], encode: () => ({}) },
  createBackup: {
    method: 'POST',
    path: '/backups',
    status: 200,
    stream: 'progress',
    decode: (r) => [parseCreateBackup(r.body)],
    encode: (req = {}) => ({ body: req }),
  },
  copyBackups: {
    method: 'POST',
    path: '/backups/copy',
    status: 200,
    stream: 'progress',
    decode: (r) => [parseCopyBackups(r.body)],
    encode: (req) => ({ body: req }),
  },
  cancelCopy: { method: 'POST', path: '/backups/copy/cancel', status: 200, decode: (r) => (noBody(r.body), []), encode: () => ({ body: {} }) },
  cancelBackup: { method: 'POST', path: '/backups/cancel', status: 200, decode: (r) => (noBody(r.body), []), encode: () => ({ body: {} }) },
  pruneBackups: { method: 'POST', path: '/backups/prune', status: 200, decode: (r) => [parsePrune(r.body)], encode: (req = {}) => ({ body: req }) },
  verifyBackups: {
    method: 'POST',
    path: '/backups/verify',
    status: 200,
    decode: (r) => [parseVerifyBackups(r.body)],
    encode: (req = {}) => ({ body: req }),
  },
  getBackup: {
    method: 'GET',
    path: '/backups/{id}',
    status: 200,
    decode: (r) => [parseBackupId(r.params.id, 'the path segment')],
    encode: (id) => ({ params: { id } }),
  },
  backupTimeline: { method: 'GET', path: '/log-archive/timeline', status: 200, decode: () => [], encode: () => ({}) },
  backupChanges: {
    method: 'GET',
    path: '/log-archive/changes',
    status: 200,
    stream: 'batch',
    decode: (r) => (noBody(r.body), [parseChanges(r.query)]),
    encode: (req = {}) => ({
      query: Object.fromEntries(
        Object.entries({ ...req, values: req.values === true ? 'true' : undefined }).filter((e): e is [string, string] => typeof e[1] === 'string'),
      ),
    }),
  },
  metrics: { method: 'GET', path: '/metrics', status: 200, text: METRICS_CONTENT_TYPE, decode: () => [], encode: () => ({}) },
};

/** POST /checkpoints/{id}/<action>, no body: pin, unpin, verify. */
function checkpointAction(action: 'pin' | 'unpin' | 'verify'): Route<typeof action> {
  return {
    method: 'POST',
    path: `/checkpoints/{id}/${action}`,
    status: 200,
    decode: (r) => (noBody(r.body), [checkpointParam(r)]),
    encode: (id) => ({ params: { id }, body: {} }),
  };
}

/** The path of one call, `{name}` segments filled in (percent-encoded) and the query appended. */
export function pathOf(route: Route<Operation>, parts: WireParts): string {
  const path = route.path.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = parts.params?.[name];
    if (value === undefined) throw new AdminError(ErrorCodes.INTERNAL, `no value for {${name}} in ${route.path}`);
    return encodeURIComponent(value);
  });
  const query = parts.query && Object.keys(parts.query).length > 0 ? `?${new URLSearchParams(parts.query).toString()}` : '';
  return `${API_PREFIX}${path}${query}`;
}

// ---- the checks of what arrives ----

function checkpointParam(r: WireRequest): string {
  return parseCheckpointId(r.params.id, 'the path segment');
}

function flag(query: URLSearchParams, name: string): boolean {
  const v = query.get(name);
  if (v === null || v === 'false' || v === '0') return false;
  if (v === '' || v === 'true' || v === '1') return true;
  throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `query parameter ${name} must be true or false`);
}

/** The body as an object of only `allowed` keys (absent: {}); anything else is INVALID_ARGUMENT. */
function object(body: unknown, allowed: readonly string[]): Record<string, unknown> {
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

export function parseCreateCheckpoint(body: unknown): CreateCheckpointRequest {
  const o = object(body, ['label', 'pin']);
  const label = parseLabel(o.label);
  const pin = parseOptionalBoolean(o.pin, 'pin');
  return { ...(label !== null ? { label } : {}), ...(pin !== undefined ? { pin } : {}) };
}

export function parsePrune(body: unknown): PruneRequest {
  const dryRun = parseOptionalBoolean(object(body, ['dryRun']).dryRun, 'dryRun');
  return dryRun === undefined ? {} : { dryRun };
}

export function parseCreateBackup(body: unknown): CreateBackupRequest {
  const o = object(body, ['checkpointId', 'pin']);
  const checkpointId = o.checkpointId === undefined ? undefined : parseCheckpointId(o.checkpointId, 'checkpointId');
  const pin = parseOptionalBoolean(o.pin, 'pin');
  return { ...(checkpointId !== undefined ? { checkpointId } : {}), ...(pin !== undefined ? { pin } : {}) };
}

/** GET /log-archive/changes' query: each moment and id checked here, once (the agent parses them again into its query, harmlessly). */
export function parseChanges(query: URLSearchParams): ChangesRequest {
  const allowed = ['from', 'to', 'timeline', 'key', 'prefix', 'values'];
  for (const name of query.keys()) {
    if (!allowed.includes(name)) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `unknown query parameter ${JSON.stringify(name)}`);
  }
  const one = (name: string): string | undefined => {
    const all = query.getAll(name);
    if (all.length > 1) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `query parameter ${name} given twice`);
    return all[0];
  };
  const req: ChangesRequest = {};
  const from = one('from');
  const to = one('to');
  const timeline = one('timeline');
  const key = one('key');
  const prefix = one('prefix');
  if (from !== undefined) {
    parseMoment(from, 'from', false);
    req.from = from;
  }
  if (to !== undefined) {
    parseMoment(to, 'to');
    req.to = to;
  }
  if (timeline !== undefined) req.timeline = parseTimelineId(timeline, 'timeline');
  if (key !== undefined) req.key = key;
  if (prefix !== undefined) req.prefix = prefix;
  if (flag(query, 'values')) req.values = true;
  return req;
}

/** The most a copy's upload limit takes (bytes/s): beyond any link, and a typo's guard. */
export const MAX_COPY_LIMIT = 100_000 * 1_000_000;

/** POST /backups/copy's body: every field checked here, once; a selection is exactly one way. */
export function parseCopyBackups(body: unknown): CopyBackupsRequest {
  const o = object(body, ['to', 'select', 'logArchive', 'limitUploadBytesPerSecond', 's3', 'passwordFile', 'insecureNoEncryption', 'allowFormat2']);
  const bad = (why: string) => new AdminError(ErrorCodes.INVALID_ARGUMENT, why);
  if (typeof o.to !== 'string' || !/^(s3|file):\/\/\S+$/.test(o.to) || o.to.length > 4096) throw bad('to must be a repository URL: s3://bucket/prefix or file:///absolute/path');
  const logArchive = parseOptionalBoolean(o.logArchive, 'logArchive');
  const select = o.select === undefined ? undefined : parseCopySelection(o.select);
  if (select === undefined && logArchive !== true) throw bad('select is needed (ids, latest, since or all), unless logArchive is true');
  const limit = o.limitUploadBytesPerSecond;
  if (limit !== undefined && !(typeof limit === 'number' && Number.isSafeInteger(limit) && limit > 0 && limit <= MAX_COPY_LIMIT)) {
    throw bad(`limitUploadBytesPerSecond must be a whole number of bytes per second above 0, up to ${MAX_COPY_LIMIT}`);
  }
  let s3: CopyBackupsRequest['s3'];
  if (o.s3 !== undefined) {
    const t = object(o.s3, ['endpoint', 'region', 'forcePathStyle']);
    for (const name of ['endpoint', 'region'] as const) {
      if (t[name] !== undefined && (typeof t[name] !== 'string' || t[name] === '')) throw bad(`s3.${name} must be a non-empty string`);
    }
    const pathStyle = parseOptionalBoolean(t.forcePathStyle, 's3.forcePathStyle');
    s3 = {
      ...(t.endpoint !== undefined ? { endpoint: t.endpoint as string } : {}),
      ...(t.region !== undefined ? { region: t.region as string } : {}),
      ...(pathStyle !== undefined ? { forcePathStyle: pathStyle } : {}),
    };
  }
  if (o.passwordFile !== undefined && (typeof o.passwordFile !== 'string' || !o.passwordFile.startsWith('/') || o.passwordFile.includes('\0'))) {
    throw bad('passwordFile must be an absolute path');
  }
  const insecure = parseOptionalBoolean(o.insecureNoEncryption, 'insecureNoEncryption');
  const format2 = parseOptionalBoolean(o.allowFormat2, 'allowFormat2');
  return {
    to: o.to,
    ...(select !== undefined ? { select } : {}),
    ...(logArchive !== undefined ? { logArchive } : {}),
    ...(limit !== undefined ? { limitUploadBytesPerSecond: limit as number } : {}),
    ...(s3 !== undefined ? { s3 } : {}),
    ...(o.passwordFile !== undefined ? { passwordFile: o.passwordFile as string } : {}),
    ...(insecure !== undefined ? { insecureNoEncryption: insecure } : {}),
    ...(format2 !== undefined ? { allowFormat2: format2 } : {}),
  };
}

/** A CopySelection as it crosses the socket: exactly one of ids, latest, since, all. */
export function parseCopySelection(value: unknown): CopySelection {
  const o = object(value, ['ids', 'latest', 'since', 'all']);
  const keys = Object.keys(o);
  const bad = (why: string) => new AdminError(ErrorCodes.INVALID_ARGUMENT, `select ${why}`);
  if (keys.length !== 1) throw bad('must be exactly one of ids, latest, since, all');
  if (o.ids !== undefined) {
    if (!Array.isArray(o.ids) || o.ids.length === 0 || o.ids.length > 10_000) throw bad('ids must be a list of backup ids');
    return { ids: o.ids.map((id) => parseBackupId(id, 'select.ids')) };
  }
  if (o.latest !== undefined) {
    if (typeof o.latest !== 'number' || !Number.isSafeInteger(o.latest) || o.latest < 1 || o.latest > 999_999) throw bad('latest must be a whole number from 1');
    return { latest: o.latest };
  }
  if (o.since !== undefined) {
    const m = parseMoment(o.since, 'select.since', false);
    if (m.kind !== 'time') throw bad('since must be a time (ISO-8601 with its zone)');
    return { since: new Date(m.ms).toISOString() };
  }
  if (o.all !== true) throw bad('all must be true');
  return { all: true };
}

export function parseVerifyBackups(body: unknown): VerifyBackupsRequest {
  const o = object(body, ['id', 'readData']);
  const id = o.id === undefined ? undefined : parseBackupId(o.id, 'id');
  const readData = parseOptionalBoolean(o.readData, 'readData');
  return { ...(id !== undefined ? { id } : {}), ...(readData !== undefined ? { readData } : {}) };
}
