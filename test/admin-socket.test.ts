import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent, type AgentOptions } from '../dist/agent/index.js';
import type { AgentStatus, CancelResult, CheckpointRecord, DeleteResult, PruneResult, VerifyReport } from '../dist/shared/index.js';
import { tempDir } from './support/processes.js';

/**
 * The admin socket of an in-process agent, spoken to as a client would: node:http and curl on a real
 * Unix socket, raw bytes on net.connect for what http clients will not send (slow, oversized, idle).
 */

const execFileAsync = promisify(execFile);
const ID_PATTERN = /^\d{8}T\d{9}Z-[0-9a-f]{4}$/;
const UNKNOWN_ID = '20200101T000000000Z-abcd';
const MiB = 1024 * 1024;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One request over the socket; `body` objects are sent as JSON, strings as they are. */
function call(socketPath: string, method: string, urlPath: string, body?: unknown): Promise<Reply> {
  const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        agent: false,
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A 2xx JSON answer: its status and its decoded body. */
function json<T>(r: Reply, status: number): T {
  expect(r.status, r.text).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/json\b/);
  return JSON.parse(r.text) as T;
}

/** An error answer must be exactly {"error":{"code","message"}} with a one-line message. Returns the message. */
function expectErrorBody(status: number | undefined, contentType: string | undefined, text: string, wantStatus: number, code: string): string {
  expect(status, text).toBe(wantStatus);
  expect(contentType).toMatch(/^application\/json\b/);
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message']);
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(body.error.message).not.toMatch(/[\r\n]/);
  expect(body.error.message).not.toMatch(/\bat .*\.js:\d+/);
  return body.error.message;
}

function expectError(r: Reply, status: number, code: string): string {
  const ct = r.headers['content-type'];
  return expectErrorBody(r.status, Array.isArray(ct) ? ct[0] : ct, r.text, status, code);
}

interface RawReply {
  status: number | null;
  headers: Record<string, string>;
  body: string;
  /** The server closed the connection (we never do before it). */
  closedByServer: boolean;
}

/**
 * A raw HTTP exchange on a fresh connection: `send` writes whatever it likes; resolves once the server
 * has closed the connection, with whatever it answered.
 */
function rawExchange(socketPath: string, send: (s: net.Socket, answered: () => boolean) => Promise<void> | void): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      const text = Buffer.concat(chunks).toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      const head = split === -1 ? text : text.slice(0, split);
      const [statusLine, ...headerLines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const m = /^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '');
      resolve({ status: m ? Number(m[1]) : null, headers, body: split === -1 ? '' : text.slice(split + 4), closedByServer });
    };
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    // A refused body may break our pipe (EPIPE/ECONNRESET) while we still write: the answer is what counts.
    s.on('error', () => finish(true));
    s.once('connect', () => {
      Promise.resolve(send(s, () => chunks.length > 0)).catch((err: unknown) => {
        if (!done) reject(err);
      });
    });
  });
}

function writeAsync(s: net.Socket, data: string | Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    s.write(data, () => resolve());
  });
}

/** curl's output with `-w '\n...'`: the body, then the last `n` lines (the -w values). */
function tail(out: string, n: number): [string, ...string[]] {
  const lines = out.split('\n');
  const values = lines.splice(lines.length - n, n);
  return [lines.join('\n'), ...values];
}

function mode(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

function groupId(name: string): number {
  const line = fs
    .readFileSync('/etc/group', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no group ${name} in /etc/group`);
  return Number(line.split(':')[2]);
}

/** An existing group other than root's, for socketGroup. */
function someGroup(): { name: string; gid: number } {
  for (const name of ['daemon', 'users', 'nogroup']) {
    try {
      return { name, gid: groupId(name) };
    } catch {
      // try the next
    }
  }
  throw new Error('no usable group in /etc/group');
}

/** Nothing accepts connections on `p`: connect fails (ENOENT when no file, ECONNREFUSED when stale). */
function connectError(p: string): Promise<string | null> {
  return new Promise((resolve) => {
    const c = net.connect(p);
    c.once('connect', () => {
      c.destroy();
      resolve(null);
    });
    c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

function leftovers(checkpointDir: string): string[] {
  if (!fs.existsSync(checkpointDir)) return [];
  return fs.readdirSync(checkpointDir).filter((n) => n.startsWith('.'));
}

const silent = pino({ level: 'silent' });

describe('admin socket of an in-process agent', () => {
  const base = tempDir('admin-socket');
  const dbPath = path.join(base, 'db');
  const checkpointDir = path.join(base, 'checkpoints');
  const sock = path.join(base, 'run', 'admin.sock');
  let db: ClassicLevel<string, string>;
  let agent: Agent;
  let keyCount = 0;
  const extraAgents: Agent[] = [];
  /** Opened as soon as the agent listens and never written to: checked by the last test. */
  let idle: Promise<RawReply>;

  function startExtra(options: Partial<AgentOptions> & { socketPath: string }): Agent {
    const a = createAgent({ dbPath, checkpointDir: path.join(base, 'cp-extra'), logger: silent, ...options });
    extraAgents.push(a);
    return a;
  }

  beforeAll(async () => {
    // The WAL is big enough (about 8 MiB, copied and fsynced by every create) that a create takes a
    // moment: long enough for cancels and BUSY to have something to hit. No flush: it all stays in the log.
    db = new ClassicLevel<string, string>(dbPath, { writeBufferSize: 256 * MiB });
    await db.open();
    for (let i = 0; i < 8; i++) {
      const batch = db.batch();
      for (let j = 0; j < 100; j++) batch.put(`key/${i}/${j}`, crypto.randomBytes(5_000).toString('hex'));
      await batch.write();
      keyCount += 100;
    }
    agent = createAgent({ dbPath, checkpointDir, socketPath: sock, logger: silent, retention: { keepLast: 10 } });
    await agent.start();
    idle = rawExchange(sock, () => {});
  });

  afterAll(async () => {
    for (const a of extraAgents) await a.stop().catch(() => {});
    await agent?.stop();
    await db?.close();
    fs.rmSync(base, { recursive: true, force: true });
  });

  describe('the socket file', () => {
    it('is 0600 in a 0700 directory without a group', () => {
      const st = fs.lstatSync(sock);
      expect(st.isSocket()).toBe(true);
      expect(mode(sock)).toBe(0o600);
      expect(mode(path.dirname(sock))).toBe(0o700);
      expect(st.uid).toBe(process.getuid!());
    });

    it('is 0660 with the group, in a 0750 directory of that group, given a gid or a group name', async () => {
      const group = someGroup();
      expect(group.gid).not.toBe(process.getgid!());
      for (const socketGroup of [group.gid, group.name]) {
        const dir = path.join(base, `run-group-${typeof socketGroup}`);
        const p = path.join(dir, 'admin.sock');
        const a = startExtra({ socketPath: p, socketGroup });
        await a.start();
        const st = fs.lstatSync(p);
        expect(st.isSocket()).toBe(true);
        expect(mode(p)).toBe(0o660);
        expect(st.gid).toBe(group.gid);
        expect(mode(dir)).toBe(0o750);
        expect(fs.statSync(dir).gid).toBe(group.gid);
        expect(json<AgentStatus>(await call(p, 'GET', '/v1/status'), 200).socketPath).toBe(p);
        await a.stop();
        expect(fs.existsSync(p)).toBe(false);
      }
    });

    it('is removed by stop(), and stop() is idempotent', async () => {
      const p = path.join(base, 'run-stop', 'admin.sock');
      const a = startExtra({ socketPath: p });
      await a.start();
      expect(fs.lstatSync(p).isSocket()).toBe(true);
      await a.stop();
      expect(fs.existsSync(p)).toBe(false);
      expect(await connectError(p)).toBe('ENOENT');
      await a.stop();
      // The directory stays (it may be shared with a next start), still closed.
      expect(mode(path.dirname(p))).toBe(0o700);
    });

    it.each([0o777, 0o755, 0o705])('is refused in an existing directory with mode %o: SOCKET_DIR_UNSAFE, nothing listens', async (dirMode) => {
      const dir = path.join(base, `run-open-${dirMode.toString(8)}`);
      fs.mkdirSync(dir);
      fs.chmodSync(dir, dirMode);
      const p = path.join(dir, 'admin.sock');
      const a = startExtra({ socketPath: p });
      const err = await a.start().then(
        () => null,
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect(err?.code).toBe('SOCKET_DIR_UNSAFE');
      expect(err?.message).toContain(dir);
      expect(fs.existsSync(p)).toBe(false);
      expect(await connectError(p)).toBe('ENOENT');
      // Never loosened, never "fixed" behind the operator's back.
      expect(mode(dir)).toBe(dirMode);
      await a.stop();
    });

    it('a second agent on the same path gets SOCKET_IN_USE and the first keeps answering', async () => {
      const inoBefore = fs.lstatSync(sock).ino;
      const second = startExtra({ socketPath: sock });
      const err = await second.start().then(
        () => null,
        (e: unknown) => e as { code?: string },
      );
      expect(err?.code).toBe('SOCKET_IN_USE');
      await second.stop();
      expect(fs.lstatSync(sock).ino).toBe(inoBefore);
      const status = json<AgentStatus>(await call(sock, 'GET', '/v1/status'), 200);
      expect(status.dbPath).toBe(dbPath);
      expect(status.socketPath).toBe(sock);
    });

    it('a stale socket left by a process killed with SIGKILL is replaced by a new agent', async () => {
      const dir = path.join(base, 'run-stale');
      fs.mkdirSync(dir, { mode: 0o700 });
      const p = path.join(dir, 'admin.sock');
      const child = spawn(
        process.execPath,
        ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('listening'))", p],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => {
          if (d.toString().includes('listening')) resolve();
        });
        void exited.then(() => reject(new Error('listener child exited before listening')));
      });
      expect(await connectError(p)).toBeNull();
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      // What a kill -9 leaves: the socket file, and nobody behind it.
      const stale = fs.lstatSync(p);
      expect(stale.isSocket()).toBe(true);
      expect(await connectError(p)).toBe('ECONNREFUSED');

      const a = startExtra({ socketPath: p });
      await a.start();
      const fresh = fs.lstatSync(p);
      expect(fresh.isSocket()).toBe(true);
      expect(mode(p)).toBe(0o600);
      expect(json<AgentStatus>(await call(p, 'GET', '/v1/status'), 200).socketPath).toBe(p);
      await a.stop();
      expect(fs.existsSync(p)).toBe(false);
    });

    it('a path that is not a socket is never replaced', async () => {
      const dir = path.join(base, 'run-file');
      fs.mkdirSync(dir, { mode: 0o700 });
      const p = path.join(dir, 'admin.sock');
      fs.writeFileSync(p, 'not a socket');
      const a = startExtra({ socketPath: p });
      const err = await a.start().then(
        () => null,
        (e: unknown) => e as { code?: string },
      );
      expect(err?.code).toBe('SOCKET_IN_USE');
      expect(fs.readFileSync(p, 'utf8')).toBe('not a socket');
      await a.stop();
    });
  });

  describe('routes', () => {
    it('every route answers JSON', async () => {
      const status = json<AgentStatus>(await call(sock, 'GET', '/v1/status'), 200);
      expect(status).toMatchObject({ dbPath, checkpointDir, socketPath: sock, pid: process.pid, inProgress: null, queued: 0 });

      const created = json<CheckpointRecord>(await call(sock, 'POST', '/v1/checkpoints', { label: 'routes' }), 201);
      expect(created.id).toMatch(ID_PATTERN);
      expect(created).toMatchObject({ label: 'routes', pinned: false, trigger: 'manual' });
      expect(created.path.startsWith(path.join(checkpointDir, created.id))).toBe(true);

      const list = json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200);
      expect(Array.isArray(list)).toBe(true);
      expect(list.map((r) => r.id)).toContain(created.id);

      expect(json<CheckpointRecord>(await call(sock, 'GET', `/v1/checkpoints/${created.id}`), 200)).toEqual(created);
      expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${created.id}/pin`), 200).pinned).toBe(true);
      expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${created.id}/unpin`, {}), 200).pinned).toBe(false);

      const report = json<VerifyReport>(await call(sock, 'POST', `/v1/checkpoints/${created.id}/verify`), 200);
      expect(report).toMatchObject({ id: created.id, ok: true, entries: keyCount });

      const prune = json<PruneResult>(await call(sock, 'POST', '/v1/checkpoints/prune', { dryRun: true }), 200);
      expect(prune.dryRun).toBe(true);
      expect(prune.kept).toContain(created.id);

      expect(json<CancelResult>(await call(sock, 'POST', '/v1/checkpoints/cancel'), 200)).toEqual({ cancelled: 0 });

      const deleted = json<DeleteResult>(await call(sock, 'DELETE', `/v1/checkpoints/${created.id}`), 200);
      expect(deleted.deleted).toBe(created.id);
      expect(typeof deleted.freedBytes).toBe('number');
      expect(fs.existsSync(path.join(checkpointDir, created.id))).toBe(false);
      expect(leftovers(checkpointDir)).toEqual([]);
    });

    it('curl --unix-socket speaks to it', async () => {
      const list = await execFileAsync('curl', ['-sS', '--unix-socket', sock, 'http://localhost/v1/checkpoints']);
      expect(Array.isArray(JSON.parse(list.stdout))).toBe(true);

      const created = await execFileAsync('curl', [
        '-sS', '--unix-socket', sock, '-X', 'POST', '-H', 'content-type: application/json',
        '--data', '{"label":"from curl"}', '-w', '\n%{http_code}', 'http://localhost/v1/checkpoints',
      ]);
      const [body, code] = tail(created.stdout, 1);
      expect(code).toBe('201');
      const record = JSON.parse(body) as CheckpointRecord;
      expect(record.label).toBe('from curl');

      const again = await execFileAsync('curl', ['-sS', '--unix-socket', sock, 'http://localhost/v1/checkpoints']);
      expect((JSON.parse(again.stdout) as CheckpointRecord[]).map((r) => r.id)).toContain(record.id);

      // curl normalizes `..` away unless told not to: --path-as-is sends it as typed.
      const dots = await execFileAsync('curl', ['-sS', '--path-as-is', '--unix-socket', sock, '-w', '\n%{http_code}\n%{content_type}', 'http://localhost/v1/checkpoints/..']);
      const [dotsBody, dotsCode, dotsType] = tail(dots.stdout, 2);
      expectErrorBody(Number(dotsCode), dotsType, dotsBody, 400, 'INVALID_ARGUMENT');

      json<DeleteResult>(await call(sock, 'DELETE', `/v1/checkpoints/${record.id}`), 200);
    });
  });

  describe('errors', () => {
    it('ids: unknown -> 404 NOT_FOUND; `..`, `%2F` and other non-ids -> 400 INVALID_ARGUMENT; nothing touched', async () => {
      const keep = json<CheckpointRecord>(await call(sock, 'POST', '/v1/checkpoints', { label: 'keep' }), 201);
      const before = json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200);

      expectError(await call(sock, 'GET', `/v1/checkpoints/${UNKNOWN_ID}`), 404, 'NOT_FOUND');
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${UNKNOWN_ID}`), 404, 'NOT_FOUND');
      expectError(await call(sock, 'POST', `/v1/checkpoints/${UNKNOWN_ID}/pin`), 404, 'NOT_FOUND');
      expectError(await call(sock, 'POST', `/v1/checkpoints/${UNKNOWN_ID}/verify`), 404, 'NOT_FOUND');

      const bad = [
        '..',
        '%2E%2E',
        'a%2Fb',
        '..%2F..%2Fetc',
        `${keep.id}%2F..`,
        `${keep.id}..`,
        'not-an-id',
        '%ZZ',
      ];
      for (const seg of bad) {
        expectError(await call(sock, 'GET', `/v1/checkpoints/${seg}`), 400, 'INVALID_ARGUMENT');
        expectError(await call(sock, 'DELETE', `/v1/checkpoints/${seg}?force=true`), 400, 'INVALID_ARGUMENT');
        expectError(await call(sock, 'POST', `/v1/checkpoints/${seg}/pin`), 400, 'INVALID_ARGUMENT');
      }
      // A dot segment never walks into another route.
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${keep.id}/..`), 404, 'ROUTE_NOT_FOUND');
      expectError(await call(sock, 'POST', `/v1/checkpoints/${keep.id}/../cancel`), 404, 'ROUTE_NOT_FOUND');
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${keep.id}?force=maybe`), 400, 'INVALID_ARGUMENT');

      expect(json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200)).toEqual(before);
      json<DeleteResult>(await call(sock, 'DELETE', `/v1/checkpoints/${keep.id}`), 200);
    });

    it('bodies: malformed JSON -> 400 INVALID_JSON; arrays, scalars, unknown fields, bad types -> 400; nothing created', async () => {
      const before = json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200);
      expectError(await call(sock, 'POST', '/v1/checkpoints', '{"label":'), 400, 'INVALID_JSON');
      expectError(await call(sock, 'POST', '/v1/checkpoints', '{label: "x"}'), 400, 'INVALID_JSON');
      expectError(await call(sock, 'POST', '/v1/checkpoints/prune', 'dryRun=true'), 400, 'INVALID_JSON');
      expectError(await call(sock, 'POST', '/v1/checkpoints', []), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', [{ label: 'x' }]), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', 'null'), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', '"label"'), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', { lable: 'typo' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', { label: 'x', trigger: 'scheduled' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', { label: 42 }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', { pin: 'yes' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', { label: 'two\nlines' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints', { label: 'x'.repeat(201) }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints/prune', { dryRun: 'yes' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints/prune', { dryrun: true }), 400, 'INVALID_ARGUMENT');
      expectError(await call(sock, 'POST', '/v1/checkpoints/cancel', { all: true }), 400, 'INVALID_ARGUMENT');
      expect(json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200)).toEqual(before);
      expect(leftovers(checkpointDir)).toEqual([]);
    });

    it('routes: unknown -> 404 ROUTE_NOT_FOUND, /v2 -> 404 unsupported API version, wrong method -> 405', async () => {
      expectError(await call(sock, 'GET', '/v1/nope'), 404, 'ROUTE_NOT_FOUND');
      expectError(await call(sock, 'GET', '/'), 404, 'ROUTE_NOT_FOUND');
      expectError(await call(sock, 'GET', '/status'), 404, 'ROUTE_NOT_FOUND');
      expectError(await call(sock, 'GET', `/v1/checkpoints/${UNKNOWN_ID}/pin/extra`), 404, 'ROUTE_NOT_FOUND');
      const v2 = expectError(await call(sock, 'GET', '/v2/status'), 404, 'ROUTE_NOT_FOUND');
      expect(v2).toMatch(/unsupported API version/);
      expect(expectError(await call(sock, 'POST', '/v2/checkpoints', {}), 404, 'ROUTE_NOT_FOUND')).toMatch(/unsupported API version/);
      expectError(await call(sock, 'DELETE', '/v1/status'), 405, 'METHOD_NOT_ALLOWED');
      expectError(await call(sock, 'PUT', '/v1/checkpoints', {}), 405, 'METHOD_NOT_ALLOWED');
      expectError(await call(sock, 'GET', `/v1/checkpoints/${UNKNOWN_ID}/pin`), 405, 'METHOD_NOT_ALLOWED');
      expect(expectError(await call(sock, 'PATCH', '/v1/checkpoints/prune'), 405, 'METHOD_NOT_ALLOWED')).toMatch(/POST/);
    });

    it('a body over 1 MiB -> 413 PAYLOAD_TOO_LARGE, announced by content-length or chunked, and the connection is closed', async () => {
      const before = json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200);

      // Declared too big: refused from the headers, before any of the body is read.
      const declared = await rawExchange(sock, async (s) => {
        await writeAsync(s, `POST /v1/checkpoints HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${2 * MiB}\r\n\r\n{"label":"`);
      });
      expectErrorBody(declared.status ?? undefined, declared.headers['content-type'], declared.body, 413, 'PAYLOAD_TOO_LARGE');
      expect(declared.closedByServer).toBe(true);

      // Chunked, no content-length: refused once more than 1 MiB has arrived. We stop writing soon after
      // (never the terminating chunk), so only the server can end this exchange.
      const chunk = Buffer.alloc(64 * 1024, 'a');
      let written = 0;
      const chunked = await rawExchange(sock, async (s, answered) => {
        await writeAsync(s, 'POST /v1/checkpoints HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
        await writeAsync(s, `1\r\n"\r\n`);
        while (written <= MiB + 2 * chunk.length && !answered() && !s.destroyed) {
          await writeAsync(s, Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
          written += chunk.length;
        }
      });
      expect(written).toBeGreaterThan(MiB);
      expectErrorBody(chunked.status ?? undefined, chunked.headers['content-type'], chunked.body, 413, 'PAYLOAD_TOO_LARGE');
      expect(chunked.closedByServer).toBe(true);

      expect(json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200)).toEqual(before);
      // The agent is none the worse.
      json<AgentStatus>(await call(sock, 'GET', '/v1/status'), 200);
    });

    it('a slow body -> 408 REQUEST_TIMEOUT as JSON, then the server closes the connection', async () => {
      const before = json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200);
      const slow = await rawExchange(sock, async (s) => {
        await writeAsync(s, 'POST /v1/checkpoints HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{"');
        // ...and the other 8 bytes never come.
      });
      expectErrorBody(slow.status ?? undefined, slow.headers['content-type'], slow.body, 408, 'REQUEST_TIMEOUT');
      expect(slow.closedByServer).toBe(true);
      // The create never ran.
      expect(json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200)).toEqual(before);
    }, 60_000);
  });

  describe('concurrency', () => {
    it('a verify held up reading a file does not hold up status, list, show or pin', async () => {
      // A verify reads every byte of a checkpoint: minutes for a large one. Here its WAL is a FIFO, so
      // the verify blocks inside that read for as long as the test wants: no timing involved.
      const held = json<CheckpointRecord>(await call(sock, 'POST', '/v1/checkpoints', { label: 'held' }), 201);
      const wal = fs.readdirSync(held.path).find((n) => /^\d+\.log$/.test(n));
      expect(wal).toBeDefined();
      const fifo = path.join(held.path, wal!);
      fs.rmSync(fifo);
      await execFileAsync('mkfifo', [fifo]);
      const verifying = call(sock, 'POST', `/v1/checkpoints/${held.id}/verify`);
      // Opening the FIFO to write without blocking succeeds only once the verify has it open to read.
      let writer: number | null = null;
      while (writer === null) {
        try {
          writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      // Let the verify go: a block of noise where its WAL should be, then the end of the file. Done after
      // the routes below answered, or, if one is stuck behind the verify, after 20 s (so that such a
      // regression fails below rather than hanging the suite).
      let stuck = false;
      const release = () => {
        if (writer === null) return;
        fs.writeSync(writer, crypto.randomBytes(32 * 1024));
        fs.closeSync(writer);
        writer = null;
      };
      const guard = setTimeout(() => {
        stuck = true;
        release();
      }, 20_000);
      try {
        // Now the verify waits on the FIFO, and every other route answers all the same.
        json<AgentStatus>(await call(sock, 'GET', '/v1/status'), 200);
        expect(json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200).map((r) => r.id)).toContain(held.id);
        expect(json<CheckpointRecord>(await call(sock, 'GET', `/v1/checkpoints/${held.id}`), 200).id).toBe(held.id);
        expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${held.id}/pin`), 200).pinned).toBe(true);
        expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${held.id}/unpin`), 200).pinned).toBe(false);
        expect(stuck, 'a route waited for the verify to finish').toBe(false);
      } finally {
        clearTimeout(guard);
        release();
      }
      const report = json<VerifyReport>(await verifying, 200);
      expect(report).toMatchObject({ id: held.id, ok: false, error: { code: 'CORRUPT' } });
      expect(report.error?.message).toContain(wal);
      json<DeleteResult>(await call(sock, 'DELETE', `/v1/checkpoints/${held.id}`), 200);
      expect(leftovers(checkpointDir)).toEqual([]);
    }, 60_000);

    it('5 creates at once: 5 distinct checkpoints, each request its own', async () => {
      const replies = await Promise.all(Array.from({ length: 5 }, (_, i) => call(sock, 'POST', '/v1/checkpoints', { label: `burst-${i}` })));
      const records = replies.map((r) => json<CheckpointRecord>(r, 201));
      expect(new Set(records.map((r) => r.id)).size).toBe(5);
      expect(records.map((r) => r.label).sort()).toEqual(['burst-0', 'burst-1', 'burst-2', 'burst-3', 'burst-4']);
      const listed = json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200);
      for (const r of records) expect(listed.find((l) => l.id === r.id)).toMatchObject({ id: r.id, label: r.label });
      expect(leftovers(checkpointDir)).toEqual([]);
    });

    it('with maxQueuedCreates 1, 6 creates at once: some 503 BUSY, the rest 201, and exactly those exist', async () => {
      const p = path.join(base, 'run-busy', 'admin.sock');
      const cpDir = path.join(base, 'cp-busy');
      const a = startExtra({ socketPath: p, checkpointDir: cpDir, maxQueuedCreates: 1, retention: { keepLast: 10 } });
      await a.start();
      const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => call(p, 'POST', '/v1/checkpoints', { label: `q-${i}` })));
      const created = replies.filter((r) => r.status === 201).map((r) => json<CheckpointRecord>(r, 201));
      const busy = replies.filter((r) => r.status !== 201);
      for (const r of busy) expectError(r, 503, 'BUSY');
      expect(busy.length).toBeGreaterThanOrEqual(1);
      expect(created.length).toBeGreaterThanOrEqual(1);
      expect(created.length + busy.length).toBe(6);
      const listed = json<CheckpointRecord[]>(await call(p, 'GET', '/v1/checkpoints'), 200);
      expect(listed.map((r) => r.id).sort()).toEqual(created.map((r) => r.id).sort());
      expect(leftovers(cpDir)).toEqual([]);
      await a.stop();
    });
  });

  describe('cancel', () => {
    /**
     * Polls status until `ready` says so; the status then, or null if `settled` came first (the creates
     * answered before the state was ever seen).
     */
    async function waitFor(ready: (s: AgentStatus) => boolean, settled: Promise<unknown>): Promise<AgentStatus | null> {
      let over = false;
      void settled.finally(() => (over = true));
      while (!over) {
        const s = json<AgentStatus>(await call(sock, 'GET', '/v1/status'), 200);
        if (ready(s)) return s;
        await new Promise((r) => setTimeout(r, 1));
      }
      return null;
    }

    async function assertGone(id: string): Promise<void> {
      expectError(await call(sock, 'GET', `/v1/checkpoints/${id}`), 404, 'NOT_FOUND');
      expect(json<CheckpointRecord[]>(await call(sock, 'GET', '/v1/checkpoints'), 200).map((r) => r.id)).not.toContain(id);
      expect(fs.existsSync(path.join(checkpointDir, id))).toBe(false);
      expect(leftovers(checkpointDir)).toEqual([]);
    }

    it('a cancelled create answers 409 CANCELLED and leaves nothing; a create that won the race answers 201 and exists', async () => {
      // Where the cancel lands varies: before the create reached the agent, early in the build, and later
      // (toward the rename into place, where a cancel used to report CANCELLED for a checkpoint it kept).
      const plans: ({ waitRunning: false } | { waitRunning: true; delayMs: number })[] = [
        { waitRunning: false },
        { waitRunning: true, delayMs: 0 },
        { waitRunning: true, delayMs: 0 },
        { waitRunning: true, delayMs: 20 },
        { waitRunning: true, delayMs: 50 },
        { waitRunning: true, delayMs: 80 },
        { waitRunning: true, delayMs: 110 },
        { waitRunning: true, delayMs: 140 },
        { waitRunning: true, delayMs: 170 },
        { waitRunning: true, delayMs: 200 },
      ];
      let hits = 0;
      let won = 0;
      for (const plan of plans) {
        const create = call(sock, 'POST', '/v1/checkpoints', { label: 'to-cancel' });
        let seen: string | null = null;
        if (plan.waitRunning) {
          seen = (await waitFor((s) => s.inProgress !== null, create))?.inProgress?.id ?? null;
          if (plan.delayMs > 0) await new Promise((r) => setTimeout(r, plan.delayMs));
        }
        const cancel = json<CancelResult>(await call(sock, 'POST', '/v1/checkpoints/cancel'), 200);
        const r = await create;
        if (r.status === 201) {
          won++;
          const record = json<CheckpointRecord>(r, 201);
          if (seen) expect(record.id).toBe(seen);
          expect(json<CheckpointRecord>(await call(sock, 'GET', `/v1/checkpoints/${record.id}`), 200).id).toBe(record.id);
        } else {
          hits++;
          const message = expectError(r, 409, 'CANCELLED');
          expect(cancel.cancelled).toBeGreaterThanOrEqual(1);
          const id = /\b(\d{8}T\d{9}Z-[0-9a-f]{4})\b/.exec(message)?.[1];
          expect(id, message).toBeDefined();
          if (seen) expect(id).toBe(seen);
          await assertGone(id!);
        }
        expect(leftovers(checkpointDir)).toEqual([]);
      }
      console.log(`cancel: ${hits} of ${plans.length} creates cancelled, ${won} finished first`);
      expect(hits).toBeGreaterThanOrEqual(1);
      expect(hits + won).toBe(plans.length);
      // The agent still creates after all that.
      json<CheckpointRecord>(await call(sock, 'POST', '/v1/checkpoints', { label: 'after-cancels' }), 201);
    });

    it('a cancel that lands after the rename into place, before the agent has heard back from its worker, keeps nothing', async () => {
      // Deterministic version of the race at the end of a build. Once the build's staging directory is
      // seen, the rename has not happened yet; from then on this thread (the agent's) watches for the
      // final directory WITHOUT yielding, so the worker's "done" message stays queued, and cancels
      // in-process the moment the rename has happened.
      const cell = new Int32Array(new SharedArrayBuffer(4));
      let attempts = 0;
      for (;;) {
        attempts++;
        expect(attempts, 'never caught a build in progress').toBeLessThanOrEqual(5);
        const create = call(sock, 'POST', '/v1/checkpoints', { label: 'late-cancel' });
        let settled = false;
        void create.finally(() => (settled = true));
        let staging: string | undefined;
        while (!settled && staging === undefined) {
          staging = fs.readdirSync(checkpointDir).find((n) => n.startsWith('.staging-'));
          if (staging === undefined) await new Promise((r) => setTimeout(r, 1));
        }
        if (staging === undefined) {
          // The whole build fit between two looks: try again.
          json<CheckpointRecord>(await create, 201);
          continue;
        }
        // From here until cancel() this thread never yields.
        const id = staging.slice('.staging-'.length);
        const final = path.join(checkpointDir, id);
        const safetyValve = Date.now() + 60_000;
        while (!fs.existsSync(final) && Date.now() < safetyValve) Atomics.wait(cell, 0, 0, 1);
        expect(fs.existsSync(final)).toBe(true);
        const cancelling = agent.cancel();
        const r = await create;
        expectError(r, 409, 'CANCELLED');
        expect((await cancelling).cancelled).toBe(1);
        await assertGone(id);
        break;
      }
    });

    it('cancel also empties the queue: every queued create answers 409 CANCELLED', async () => {
      const creates = Array.from({ length: 3 }, (_, i) => call(sock, 'POST', '/v1/checkpoints', { label: `queued-${i}` }));
      // One running, two waiting behind it (a create takes a while: the WAL is copied and fsynced).
      const s = await waitFor((x) => x.inProgress !== null && x.queued === 2, Promise.all(creates));
      expect(s, 'never saw one create running and two queued').not.toBeNull();
      const cancel = json<CancelResult>(await call(sock, 'POST', '/v1/checkpoints/cancel'), 200);
      const replies = await Promise.all(creates);
      const cancelled = replies.filter((r) => r.status === 409);
      for (const r of cancelled) {
        const id = /\b(\d{8}T\d{9}Z-[0-9a-f]{4})\b/.exec(expectError(r, 409, 'CANCELLED'))![1]!;
        await assertGone(id);
      }
      for (const r of replies.filter((x) => x.status !== 409)) json<CheckpointRecord>(r, 201);
      // The queued ones at least (whatever the running one did).
      expect(cancelled.length).toBeGreaterThanOrEqual(2);
      expect(cancel.cancelled).toBeGreaterThanOrEqual(cancelled.length);
      expect(json<AgentStatus>(await call(sock, 'GET', '/v1/status'), 200)).toMatchObject({ inProgress: null, queued: 0 });
    });
  });

  describe('pin, unpin, delete, prune', () => {
    it('a pinned checkpoint is not deleted without force (409 CHECKPOINT_PINNED); with ?force=true it goes', async () => {
      const r = json<CheckpointRecord>(await call(sock, 'POST', '/v1/checkpoints', { label: 'pinned', pin: true }), 201);
      expect(r.pinned).toBe(true);
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${r.id}`), 409, 'CHECKPOINT_PINNED');
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${r.id}?force=false`), 409, 'CHECKPOINT_PINNED');
      expect(json<CheckpointRecord>(await call(sock, 'GET', `/v1/checkpoints/${r.id}`), 200)).toMatchObject({ id: r.id, pinned: true });
      expect(fs.existsSync(r.path)).toBe(true);
      const deleted = json<DeleteResult>(await call(sock, 'DELETE', `/v1/checkpoints/${r.id}?force=true`), 200);
      expect(deleted.deleted).toBe(r.id);
      expectError(await call(sock, 'GET', `/v1/checkpoints/${r.id}`), 404, 'NOT_FOUND');
      expect(fs.existsSync(path.join(checkpointDir, r.id))).toBe(false);
      expect(leftovers(checkpointDir)).toEqual([]);
    });

    it('pin then unpin: deletable without force again', async () => {
      const r = json<CheckpointRecord>(await call(sock, 'POST', '/v1/checkpoints', { label: 'pin-unpin' }), 201);
      expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${r.id}/pin`), 200).pinned).toBe(true);
      expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${r.id}/pin`), 200).pinned).toBe(true);
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${r.id}`), 409, 'CHECKPOINT_PINNED');
      expect(json<CheckpointRecord>(await call(sock, 'POST', `/v1/checkpoints/${r.id}/unpin`), 200).pinned).toBe(false);
      expect(json<DeleteResult>(await call(sock, 'DELETE', `/v1/checkpoints/${r.id}`), 200).deleted).toBe(r.id);
      expectError(await call(sock, 'DELETE', `/v1/checkpoints/${r.id}`), 404, 'NOT_FOUND');
    });

    it('prune with dryRun removes nothing; the same prune without it removes what it announced', async () => {
      const cpDir = path.join(base, 'cp-prune');
      const p = path.join(base, 'run-prune', 'admin.sock');
      const maker = startExtra({ socketPath: p, checkpointDir: cpDir, retention: { keepLast: 10 } });
      await maker.start();
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push(json<CheckpointRecord>(await call(p, 'POST', '/v1/checkpoints', { label: `p${i}` }), 201).id);
      await maker.stop();

      // The same directory under a stricter policy: two of the three are outside it.
      const pruner = startExtra({ socketPath: p, checkpointDir: cpDir, retention: { keepLast: 1 } });
      await pruner.start();
      const before = json<CheckpointRecord[]>(await call(p, 'GET', '/v1/checkpoints'), 200);
      expect(before.map((r) => r.id)).toEqual(ids);

      const dry = json<PruneResult>(await call(p, 'POST', '/v1/checkpoints/prune', { dryRun: true }), 200);
      expect(dry.dryRun).toBe(true);
      expect(dry.removed).toEqual([
        { id: ids[0], reason: 'policy' },
        { id: ids[1], reason: 'policy' },
      ]);
      expect(dry.kept).toEqual([ids[2]]);
      expect(json<CheckpointRecord[]>(await call(p, 'GET', '/v1/checkpoints'), 200)).toEqual(before);
      for (const id of ids) expect(fs.existsSync(path.join(cpDir, id))).toBe(true);

      const real = json<PruneResult>(await call(p, 'POST', '/v1/checkpoints/prune', {}), 200);
      expect(real.dryRun).toBe(false);
      expect(real.removed).toEqual(dry.removed);
      expect(json<CheckpointRecord[]>(await call(p, 'GET', '/v1/checkpoints'), 200).map((r) => r.id)).toEqual([ids[2]]);
      expect(leftovers(cpDir)).toEqual([]);
      await pruner.stop();
    });
  });

  it('an idle connection that sends nothing is closed by the server (headers timeout), with a 408 JSON', async () => {
    // Opened in beforeAll, right after the agent started listening, and never written to since.
    const r = await idle;
    expect(r.closedByServer).toBe(true);
    expectErrorBody(r.status ?? undefined, r.headers['content-type'], r.body, 408, 'REQUEST_TIMEOUT');
  }, 90_000);

  it('the database is intact and still written by its owner after all of the above', async () => {
    await db.put('after', 'all');
    let n = 0;
    for await (const _ of db.keys()) n++;
    expect(n).toBe(keyCount + 1);
  });
});
