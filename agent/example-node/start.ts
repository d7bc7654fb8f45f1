// The example node's process, once main.cts has sized libuv's pool.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { randomBytes } from 'node:crypto';
import { createAgent, REDACT_PATHS } from '../agent.js';
import { fsyncDir, mkdirDurableSync, writeFileAtomicSync } from '../fs/durable-fs.js';
import { describePassword } from '../repository/password-source.js';
import type { AgentOptions } from '../agent-types.js';
import { AdminError, toAdminError } from '../../shared/errors.js';
import type { BackupPace } from '../../shared/api.js';
import { parseBytes, parseDuration } from '../../shared/units.js';
import { KEEP_RULES, type KeepKey } from '../../shared/input-rules.js';

type KeepFlag = (typeof KEEP_RULES)[number]['flag'];
import { startLoad } from './load.js';

/**
 * A small but real storage node: a classic-level database behind a key-value HTTP API on 127.0.0.1,
 * with the node-admin agent embedded and Prometheus metrics at GET /metrics on the same port. `npm start` runs it with everything under ./var.
 */

const USAGE = `usage: node dist/agent/example-node/main.cjs [options]
  --data-dir <dir>              database in <dir>/db, checkpoints in <dir>/checkpoints (default ./var)
  --socket <path>               admin socket (default <data-dir>/run/admin.sock)
  --socket-group <group>        let this group use the socket too (socket 0660, directory 0750)
  --port <n>                    KV API and GET /metrics port on 127.0.0.1 (default 7070; 0 picks a free one)
  --load <writes/s>             generate a write load (puts, overwrites, deletes, batches)
  --checkpoint-interval <dur>   take a checkpoint every <dur> (e.g. 24h); off by default
  --checkpoint-delay <dur>      first scheduled checkpoint after <dur> (default: the interval)
  --checkpoint-retry <dur>      after a failed one, retry after <dur> (default min(interval, 5m))
  --keep-last <n>               retention: keep the newest n (default 3)
  --keep-hourly/--keep-daily/--keep-weekly/--keep-monthly <n>   retention windows (default 0)
  --max-age <dur>               retention: remove unpinned checkpoints older than <dur>
  --min-free <size>             keep this much free on the checkpoint filesystem (e.g. 10GiB)
  --backup-repo <url>           remote backups: s3://bucket/prefix or file:///path (default file://<data-dir>/backups;
                                "none": no backups). S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE
  --s3-endpoint <url>           S3 endpoint (default $AWS_ENDPOINT_URL_S3, else AWS)
  --s3-region <region>          S3 region (default $AWS_REGION, else us-east-1)
  --s3-path-style               path-style S3 addressing (default: on with --s3-endpoint)
  --backup-password-file <f>    the backup repository's password (default: $NODE_ADMIN_PASSWORD_FILE, the systemd
                                credential node-admin-password, else <data-dir>/backup-password, made at first start)
  --backup-password-command <c> a command that prints the password (a secrets manager)
  --backup-insecure-no-encryption  backups unencrypted: whoever can read the repository reads the database
  --backup-allow-format-2       new backups into a format 2 (unencrypted) repository
  --backup-concurrency <n>      packs uploading at once (default 4)
  --backup-bwlimit <size/s>     upload bandwidth cap (e.g. 10MiB/s); none by default
  --backup-pace auto|max|<MB/s> how fast backups read the database (default auto: backs off while the node
                                is busy, never below 8 MiB/s; max: full speed; 50 or 50MiB/s: a fixed rate)
  --promote-scheduled           back up every scheduled checkpoint once it is taken
  --promote-min-interval <dur>  ...but at most one backup per <dur> (implies --promote-scheduled)
  --log-archive on|off          archive the database's log to the backup repository, for restores to any moment
                                (\`node-admin backup restore --at <time>\`); default on whenever there is a
                                backup repository (the default one included)
  --log-archive-interval <dur>  ship newly written batches at most this often (default 1s)
  --backup-replica <url>        a second copy kept current: every snapshot and every archived segment (with the
                                log archive on) also go to this repository (same password and S3 options), on
                                its own; repeatable
  --backup-keep-last <n>        backup retention for \`backup prune\` (default 3)
  --backup-keep-hourly/--backup-keep-daily/--backup-keep-weekly/--backup-keep-monthly <n>   (default 0)
  --write-buffer-size <size>    LevelDB memtable size (default 4MiB)
  --max-file-size <size>        LevelDB table size (default 2MiB)
  --log-level <level>           pino level (default info)`;

async function main(): Promise<void> {
  const { values: parsed } = parseArgs({
    options: {
      'data-dir': { type: 'string', default: 'var' },
      socket: { type: 'string' },
      'socket-group': { type: 'string' },
      port: { type: 'string', default: '7070' },
      load: { type: 'string' },
      'checkpoint-interval': { type: 'string' },
      'checkpoint-delay': { type: 'string' },
      'checkpoint-retry': { type: 'string' },
      ...keepFlags(''),
      'max-age': { type: 'string' },
      'min-free': { type: 'string' },
      'write-buffer-size': { type: 'string' },
      'max-file-size': { type: 'string' },
      'backup-repo': { type: 'string' },
      's3-endpoint': { type: 'string' },
      's3-region': { type: 'string' },
      's3-path-style': { type: 'boolean' },
      'backup-concurrency': { type: 'string' },
      'backup-password-file': { type: 'string' },
      'backup-password-command': { type: 'string' },
      'backup-insecure-no-encryption': { type: 'boolean' },
      'backup-allow-format-2': { type: 'boolean' },
      'backup-bwlimit': { type: 'string' },
      'backup-pace': { type: 'string' },
      'promote-scheduled': { type: 'boolean', default: false },
      'promote-min-interval': { type: 'string' },
      'log-archive': { type: 'string' },
      'log-archive-interval': { type: 'string' },
      'backup-replica': { type: 'string', multiple: true },
      ...keepFlags('backup-'),
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  // --backup-replica is the one repeatable flag: the others are single strings or booleans.
  const { 'backup-replica': replicaFlags, ...values } = parsed;
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const log = pino({ level: values['log-level'], redact: REDACT_PATHS });
  const dataDir = path.resolve(values['data-dir']);
  const dbPath = path.join(dataDir, 'db');
  const checkpointDir = path.join(dataDir, 'checkpoints');
  const socketPath = path.resolve(values.socket ?? path.join(dataDir, 'run', 'admin.sock'));
  const port = int(values.port, 'port');
  const retention: AgentOptions['retention'] = keepCounts(values, '');
  if (values['max-age'] !== undefined) retention.maxAgeMs = parseDuration(values['max-age'], 'max-age');
  if (values['min-free'] !== undefined) retention.minFreeBytes = parseBytes(values['min-free'], 'min-free');
  const interval = values['checkpoint-interval'];
  const schedule = interval
    ? {
        intervalMs: parseDuration(interval, 'checkpoint-interval'),
        ...(values['checkpoint-delay'] ? { initialDelayMs: parseDuration(values['checkpoint-delay'], 'checkpoint-delay') } : {}),
        ...(values['checkpoint-retry'] ? { retryAfterMs: parseDuration(values['checkpoint-retry'], 'checkpoint-retry') } : {}),
      }
    : null;
  const backup = backupOptions(values, dataDir, replicaFlags ?? []);

  // The node owns its database, and LevelDB 1.20 (the one classic-level bundles) creates the database
  // directory, and renames CURRENT into it, without fsyncing either parent: after a power cut a node
  // that had started, and even written and checkpointed, could come back with no database at all. So
  // the data directory is made durably, and once open, the database directory's entries and its own
  // entry in the data directory are fsynced (docs/power-loss.md).
  mkdirDurableSync(dataDir);
  const db = new ClassicLevel<string, Buffer>(dbPath, {
    valueEncoding: 'buffer',
    ...(values['write-buffer-size'] ? { writeBufferSize: parseBytes(values['write-buffer-size'], 'write-buffer-size') } : {}),
    ...(values['max-file-size'] ? { maxFileSize: parseBytes(values['max-file-size'], 'max-file-size') } : {}),
  });
  await db.open();
  fsyncDir(dbPath);
  fsyncDir(dataDir);

  // The node's own metrics (here one: its KV requests): the agent adds its own to this registry, and
  // GET /metrics on the KV port serves them all, as a node that already exports metrics would.
  // (Not prom-client's default process metrics: some of their names fail `promtool check metrics`.)
  const registry = new Registry();
  const kvRequests = new Counter({
    name: 'example_node_kv_requests_total',
    help: 'Requests to the example node\'s KV API, by method',
    labelNames: ['method'],
    registers: [registry],
  });

  const agent = createAgent({
    dbPath,
    checkpointDir,
    socketPath,
    socketGroup: values['socket-group'] ?? null,
    retention,
    schedule,
    backup,
    metrics: { registry },
    logger: log,
  });
  await agent.start();

  // KV requests in flight: at a stop, their writes land before the agent's last read of the log, so that
  // everything the node wrote is archived and its next start can go on with the same timeline.
  const inFlight = new Set<Promise<void>>();
  const server = http.createServer((req, res) => {
    if (req.url === '/metrics' && req.method === 'GET') return void serveMetrics(registry, res);
    kvRequests.inc({ method: req.method ?? 'unknown' });
    const served = serveKv(db, req, res).finally(() => inFlight.delete(served));
    inFlight.add(served);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const boundPort = typeof address === 'object' && address ? address.port : port;

  const load = values.load ? startLoad(db, int(values.load, 'load'), log) : null;
  log.info(
    { port: boundPort, socket: socketPath, db: dbPath, checkpoints: checkpointDir, backups: backup?.repository ?? null, load: values.load ?? null },
    'node ready',
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'node stopping');
    await load?.stop();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    await Promise.all(inFlight);
    await agent.stop();
    await db.close();
    log.info('node stopped');
    log.flush();
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

const MAX_VALUE_BYTES = 4 * 1024 * 1024;

/** GET /metrics: the Prometheus exposition of the node's registry (its metrics and the agent's). */
async function serveMetrics(registry: Registry, res: http.ServerResponse): Promise<void> {
  try {
    const text = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  } catch (err) {
    const body = JSON.stringify({ error: { code: 'INTERNAL', message: toAdminError(err).message } }) + '\n';
    res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
}

/** PUT /kv/{key} (body = value), GET /kv/{key} (404 when missing), DELETE /kv/{key}, GET /kv (all, JSON). */
async function serveKv(db: ClassicLevel<string, Buffer>, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const reply = (status: number, body: string | Buffer, type = 'application/json') => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const fail = (status: number, code: string, message: string) => reply(status, JSON.stringify({ error: { code, message } }) + '\n');
  try {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/kv' && req.method === 'GET') {
      const out: Record<string, string> = {};
      for await (const [k, v] of db.iterator()) out[k] = v.toString('utf8');
      return reply(200, JSON.stringify(out) + '\n');
    }
    const m = /^\/kv\/(.+)$/.exec(url.pathname);
    if (!m) return fail(404, 'ROUTE_NOT_FOUND', `no route ${url.pathname}`);
    const key = decodeURIComponent(m[1]!);
    switch (req.method) {
      case 'GET': {
        const v = await db.get(key);
        if (v === undefined) return fail(404, 'NOT_FOUND', `no key ${key}`);
        return reply(200, v, 'application/octet-stream');
      }
      case 'PUT': {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of req as AsyncIterable<Buffer>) {
          size += c.length;
          if (size > MAX_VALUE_BYTES) return fail(413, 'PAYLOAD_TOO_LARGE', `value over ${MAX_VALUE_BYTES} bytes`);
          chunks.push(c);
        }
        await db.put(key, Buffer.concat(chunks));
        return reply(204, '');
      }
      case 'DELETE':
        await db.del(key);
        return reply(204, '');
      default:
        return fail(405, 'METHOD_NOT_ALLOWED', `${req.method} not allowed`);
    }
  } catch (err) {
    const e = toAdminError(err);
    return fail(e.code === 'INVALID_ARGUMENT' ? 400 : 500, e.code, e.message);
  }
}

/** `--<prefix>keep-last` and its kin (shared/input-rules.ts KEEP_RULES), as parseArgs options. */
function keepFlags<P extends string>(prefix: P): Record<`${P}${KeepFlag}`, { type: 'string' }> {
  return Object.fromEntries(KEEP_RULES.map((r) => [`${prefix}${r.flag}`, { type: 'string' }])) as Record<`${P}${KeepFlag}`, { type: 'string' }>;
}

/** The keep-N counts given as `--<prefix>keep-*` flags. */
function keepCounts(values: Record<string, string | boolean | undefined>, prefix: string): Partial<Record<KeepKey, number>> {
  const counts: Partial<Record<KeepKey, number>> = {};
  for (const rule of KEEP_RULES) {
    const v = values[`${prefix}${rule.flag}`];
    if (typeof v === 'string') counts[rule.key] = int(v, `${prefix}${rule.flag}`);
  }
  return counts;
}

/** The --backup-* and --s3-* flags as AgentOptions.backup (null with --backup-repo none). */
function backupOptions(values: Record<string, string | boolean | undefined>, dataDir: string, replicas: string[] = []): AgentOptions['backup'] {
  const str = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const repository = str('backup-repo') ?? pathToFileURL(path.join(dataDir, 'backups')).href;
  if (repository === 'none') {
    if (values['log-archive'] === 'on') throw new AdminError('INVALID_ARGUMENT', '--log-archive on needs a backup repository (not --backup-repo none)');
    if (replicas.length > 0) throw new AdminError('INVALID_ARGUMENT', '--backup-replica needs a backup repository (not --backup-repo none)');
    return null;
  }
  const s3: NonNullable<NonNullable<AgentOptions['backup']>['s3']> = {};
  if (str('s3-endpoint') !== undefined) s3.endpoint = str('s3-endpoint');
  if (str('s3-region') !== undefined) s3.region = str('s3-region');
  if (values['s3-path-style'] !== undefined) s3.forcePathStyle = values['s3-path-style'] === true;
  const retention = keepCounts(values, 'backup-');
  const bw = str('backup-bwlimit');
  const pace = str('backup-pace');
  const insecure = values['backup-insecure-no-encryption'] === true;
  const passwordFile = str('backup-password-file');
  const passwordCommand = str('backup-password-command');
  if (insecure && (passwordFile !== undefined || passwordCommand !== undefined)) {
    throw new AdminError('INVALID_ARGUMENT', '--backup-insecure-no-encryption takes no password');
  }
  // Without a password given anywhere, the node makes one of its own at first start (never inside the
  // repository): the quick start stays two commands, and the backups are encrypted all the same.
  const given = passwordFile !== undefined || passwordCommand !== undefined || describePassword({}) !== null;
  const password = insecure ? null : given ? { ...(passwordFile ? { file: passwordFile } : {}), ...(passwordCommand ? { command: passwordCommand } : {}) } : { file: ownPasswordFile(dataDir) };
  const minInterval = str('promote-min-interval');
  const promote =
    minInterval !== undefined
      ? { scheduled: true, minIntervalMs: parseDuration(minInterval, 'promote-min-interval') }
      : values['promote-scheduled'] === true
        ? { scheduled: true }
        : null;
  // On by default: the off-site copy is then seconds behind the node, not a backup interval.
  const archive = str('log-archive') ?? 'on';
  if (archive !== 'on' && archive !== 'off') throw new AdminError('INVALID_ARGUMENT', `--log-archive must be on or off, not ${JSON.stringify(archive)}`);
  const archiveInterval = str('log-archive-interval');
  if (archiveInterval !== undefined && archive !== 'on') throw new AdminError('INVALID_ARGUMENT', '--log-archive-interval goes with --log-archive on (the default), not off');
  const logArchive = archive === 'on' ? { intervalMs: archiveInterval !== undefined ? parseDuration(archiveInterval, 'log-archive-interval') : 1000 } : null;
  return {
    repository,
    ...(Object.keys(s3).length > 0 ? { s3 } : {}),
    ...(str('backup-concurrency') !== undefined ? { concurrency: int(str('backup-concurrency')!, 'backup-concurrency') } : {}),
    ...(bw !== undefined ? { bandwidthLimit: parseBytes(bw.replace(/\/s$/i, ''), 'backup-bwlimit') } : {}),
    ...(pace !== undefined ? { pace: paceFlag(pace) } : {}),
    retention,
    promote,
    logArchive,
    ...(replicas.length > 0 ? { replicas } : {}),
    ...(password && (password.file || password.command) ? { password } : {}),
    ...(insecure ? { insecureNoEncryption: true } : {}),
    ...(values['backup-allow-format-2'] === true ? { allowFormat2: true } : {}),
  };
}

/**
 * `<data-dir>/backup-password`: the password the node made for its backups at its first start (32
 * random bytes, base64url; mode 0600, written atomically), or the one it made before. Said once, loudly,
 * when made: without it nothing in the repository can be read.
 */
function ownPasswordFile(dataDir: string): string {
  const file = path.resolve(dataDir, 'backup-password');
  if (!fs.existsSync(file)) {
    mkdirDurableSync(path.dirname(file));
    writeFileAtomicSync(file, `${randomBytes(32).toString('base64url')}\n`, 0o600);
    process.stdout.write(
      `example-node: made a password for the encrypted backups: ${file}\n` +
        'example-node: keep a copy of it somewhere safe: without it no backup in the repository can be read\n',
    );
  }
  return file;
}

/** --backup-pace: auto, max, a plain number of MB/s (10^6 bytes), or a size per second (50MiB/s). */
function paceFlag(text: string): BackupPace {
  if (text === 'auto' || text === 'max') return text;
  const mbs = /^\d+(?:\.\d+)?$/.test(text) ? Number(text) * 1e6 : null;
  let rate: number;
  try {
    rate = mbs ?? parseBytes(text.replace(/\/s$/i, ''), 'backup-pace');
  } catch {
    rate = NaN;
  }
  if (!(rate > 0) || !Number.isFinite(rate)) throw new AdminError('INVALID_ARGUMENT', `--backup-pace must be auto, max or a rate (50 for 50 MB/s, or 50MiB/s), not ${JSON.stringify(text)}`);
  return { bytesPerSecond: rate };
}

function int(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new AdminError('INVALID_ARGUMENT', `--${what} must be a whole number, not ${JSON.stringify(text)}`);
  return Number(text);
}

main().catch((err: unknown) => {
  const e = toAdminError(err);
  process.stderr.write(`example-node: ${e.message} (${e.code})\n`);
  process.exitCode = 1;
});
