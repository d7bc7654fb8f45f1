/**
 * The route table round trip, operation by operation: a call on SocketClient travels through a real
 * Unix socket into the agent's own AdminServer and reaches the AdminApi behind it with the same
 * arguments, and its answer comes back as sent. Both ends use shared/routes.ts; this proves they agree
 * for every operation the table has (and the table has every operation AdminApi declares: tsc).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminServer } from '../dist/agent/admin-server/admin-server.js';
import { SocketClient, routes, type AdminApi, type BackupProgress, type Operation } from '../dist/shared/index.js';
import { tempDir } from './support/processes.js';

const CP = '20261122T210045123Z-a1b2';
const BK = '20261122t213525139z-8dd2';

/** Arguments for each operation, as a caller would pass them (the progress callback aside). */
const calls: { [Op in Operation]: unknown[][] } = {
  status: [[]],
  listCheckpoints: [[]],
  getCheckpoint: [[CP]],
  createCheckpoint: [[], [{ label: 'before upgrade 🚀', pin: true }], [{ pin: false }]],
  deleteCheckpoint: [[CP], [CP, { force: true }]],
  pin: [[CP]],
  unpin: [[CP]],
  prune: [[], [{ dryRun: true }]],
  verify: [[CP]],
  cancel: [[]],
  createBackup: [[], [{ checkpointId: CP, pin: true }]],
  cancelBackup: [[]],
  copyBackups: [
    [{ to: 'file:///srv/second', select: { latest: 2 } }],
    [
      {
        to: 's3://bucket/second',
        select: { ids: [BK] },
        logArchive: true,
        limitUploadBytesPerSecond: 5_000_000,
        s3: { endpoint: 'http://127.0.0.1:9000', region: 'eu-1', forcePathStyle: true },
        passwordFile: '/etc/node-admin/second',
        insecureNoEncryption: false,
        allowFormat2: true,
      },
    ],
    [{ to: 'file:///srv/second', logArchive: true }],
    [{ to: 'file:///srv/second', select: { since: '2026-11-23T14:03:00.000Z' } }],
  ],
  cancelCopy: [[]],
  listBackups: [[]],
  getBackup: [[BK]],
  pruneBackups: [[{ dryRun: false }]],
  verifyBackups: [[], [{ id: BK, readData: true }]],
  backupTimeline: [[]],
  backupChanges: [[], [{ from: 'seq:5', to: '2026-11-23T14:03:00Z', timeline: BK, key: 'k 🚀/&=?', values: true }], [{ prefix: 'a/' }]],
  metrics: [[]],
};

/** What an argument list means, whichever way it was spelled: absent options and `{}` are the same. */
function meaning(op: Operation, args: unknown[]): unknown[] {
  const a = args.filter((x) => typeof x !== 'function');
  const withOptions = ['createCheckpoint', 'prune', 'createBackup', 'pruneBackups', 'verifyBackups', 'backupChanges'].includes(op) ? 1 : op === 'deleteCheckpoint' ? 2 : 0;
  while (a.length < withOptions) a.push({});
  if (op === 'deleteCheckpoint') a[1] = { force: (a[1] as { force?: boolean }).force === true };
  return a;
}

let received: { op: Operation; args: unknown[] }[] = [];
const progress: BackupProgress = { phase: 'uploading', filesDone: 1, filesTotal: 2, bytesDone: 3, bytesTotal: 4, bytesRead: 3, bytesUploaded: 2, bytesPerSecond: 1 };

/** What the fake agent answers: { op, n }, or for the text route (metrics) the same as exposition text. */
function answerOf(op: string, n: number): unknown {
  return routes[op as Operation].text !== undefined ? `# ${op} ${n}\nnode_admin_fake{op="${op}"} ${n}\n` : { op, n };
}

// Every operation answers answerOf(op, n): the client must hand back exactly that.
const api = new Proxy({} as AdminApi, {
  get: (_t, op: string) => async (...args: unknown[]) => {
    received.push({ op: op as Operation, args });
    const onProgress = args.find((a) => typeof a === 'function') as ((p: BackupProgress) => void) | undefined;
    onProgress?.(progress);
    return answerOf(op, received.length);
  },
});

let dir: string;
let server: AdminServer;
let client: SocketClient;

beforeAll(async () => {
  dir = tempDir('socket-client');
  const socketPath = path.join(dir, 'run', 'admin.sock');
  server = new AdminServer(api, pino({ enabled: false }));
  await server.listen(socketPath, null);
  client = new SocketClient({ socketPath });
});

afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('SocketClient -> socket -> AdminServer -> AdminApi', () => {
  it('the table and the calls here cover the same operations', () => {
    expect(Object.keys(calls).sort()).toEqual(Object.keys(routes).sort());
  });

  for (const op of Object.keys(calls) as Operation[]) {
    for (const args of calls[op]) {
      it(`${op}(${args.map((a) => JSON.stringify(a)).join(', ')})`, async () => {
        received = [];
        const seen: BackupProgress[] = [];
        const method = client[op] as (...a: unknown[]) => Promise<unknown>;
        const onProgress = (p: BackupProgress) => void seen.push(p);
        const streamed = routes[op].stream !== undefined;
        const answer = await method.call(client, ...(streamed ? [args[0], onProgress] : args));
        expect(received).toHaveLength(1);
        expect(received[0]!.op).toBe(op);
        expect(meaning(op, received[0]!.args)).toEqual(meaning(op, args));
        expect(answer).toEqual(answerOf(op, 1));
        // Each streamed line reaches the caller's callback (the fake sends the same object down both).
        if (streamed) expect(seen).toEqual([progress]);
      });
    }
  }

  it('negative control: different arguments are told apart', () => {
    expect(meaning('deleteCheckpoint', [CP, { force: true }])).not.toEqual(meaning('deleteCheckpoint', [CP]));
    expect(meaning('createCheckpoint', [{ label: 'a' }])).not.toEqual(meaning('createCheckpoint', [{ label: 'b' }]));
  });
});
