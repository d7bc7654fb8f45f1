// A backup in a process of its own, so that a test can kill -9 it mid-way.
// argv: <storage url> <checkpoint record json> <cache file> <bandwidth limit bytes/s> [s3 json]
import { pino } from 'pino';
import { openStorage } from '../../dist/agent/storage/open-storage.js';
import { Repository } from '../../dist/agent/repository/repository.js';
import { HashCache } from '../../dist/agent/backup/hash-cache.js';
import { backupCheckpoint } from '../../dist/agent/backup/backup-checkpoint.js';
import { passwordSource } from '../../dist/agent/repository/password-source.js';

const [url, recordJson, cacheFile, limit, s3Json] = process.argv.slice(2);
if (url === undefined || recordJson === undefined || cacheFile === undefined || limit === undefined) {
  throw new Error('usage: backup-child.mjs <storage url> <checkpoint record json> <cache file> <bandwidth limit bytes/s> [s3 json]');
}
const storage = await openStorage(url, { logger: pino({ level: 'silent' }), ...(s3Json ? { s3: JSON.parse(s3Json) } : {}) });
// The tests' password, from NODE_ADMIN_PASSWORD_FILE (test/support/setup-env.ts); a cheap key when creating.
const repo = await Repository.open(storage, { create: true, password: passwordSource({}), kdfCost: { N: 1024, r: 8, p: 1 } });
const result = await backupCheckpoint({
  repo,
  checkpoint: JSON.parse(recordJson),
  cache: HashCache.load(cacheFile),
  bandwidthLimit: Number(limit),
  onProgress: (p) => process.stdout.write(JSON.stringify(p) + '\n'),
});
process.stdout.write(JSON.stringify({ result }) + '\n');
await storage.close();
