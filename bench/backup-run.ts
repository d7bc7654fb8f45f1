import '../shared/threadpool.js'; // as the CLI does, before anything uses libuv's pool
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { CheckpointRecord } from '../shared/api.js';
import { backupCheckpoint } from '../agent/backup/backup-checkpoint.js';
import { HashCache } from '../agent/backup/hash-cache.js';
import { Repository } from '../agent/repository/repository.js';
import { restoreBackup } from '../agent/backup/restore-backup.js';
import { openStorage, type OpenStorageOptions } from '../agent/storage/open-storage.js';
import { passwordSource } from '../agent/repository/password-source.js';
import { storedByKind } from './stored-by-kind.js';

/**
 * One backup or restore of ours, as its own process, so that the backup benchmark measures its wall time
 * and peak RSS exactly as it measures restic's and borg's (through /usr/bin/time): Node startup and
 * module loading included, as a person running a backup sees them.
 *
 *   node dist/bench/backup-run.js backup  '{"repo":"file:///…","passwordFile":"/…","checkpoint":{…CheckpointRecord},"cache":"/…/hash-cache.json","concurrency":2}'
 *   node dist/bench/backup-run.js restore '{"repo":"file:///…","passwordFile":"/…","id":"<backup id>","to":"/…","concurrency":8}'
 *
 * A repository is encrypted (format 3) with the password in `passwordFile`, as the agent and the CLI
 * make and open one; a restore's crypto threads start while the key is derived, as the CLI's restore
 * starts them (OpenOptions.startThreads; a backup's start with its work, as in the agent: measured, the
 * early start slowed the key's making on 2 cores and gained the backup nothing); with `insecure: true`
 * (and no password) it is made and written unencrypted, as `--insecure-no-encryption` does.
 *
 * Prints one JSON line on stdout: the BackupRecord or RestoreBackupResult, plus `maxRssKb` as the
 * process saw itself (a cross-check of /usr/bin/time), `moduleLoadMs` (start of the process to the
 * first line of work: Node's startup and our imports), `openMs` (reading the config and unlocking the
 * key: the key derivation, about half a second, or making the key) and, for a backup,
 * `eventLoopDelayMs` (p50, p99, max of the event loop's delay while it ran: what a host node's requests
 * would have waited) and `stored` (raw and stored bytes of the backup's files by kind: stored-by-kind.ts).
 * Also `openCpuMs` (the opening's CPU), and `workCpuMs` and `workPeakRssKb`: the backup's or restore's
 * own CPU (every thread) and peak RSS, sampled while it ran, without the start and the key's unlocking.
 * With `s3` (an s3:// repository), also `requests`: every request sent to the server, by S3 operation.
 */

/** For an s3:// repository: the server (the S3 phase's Swift). */
interface S3Args {
  endpoint: string;
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** How the repository is opened: with the password in `passwordFile`, or unencrypted (`insecure`). */
interface KeyArgs {
  passwordFile?: string;
  insecure?: boolean;
}

interface BackupArgs extends KeyArgs {
  repo: string;
  s3?: S3Args;
  checkpoint: CheckpointRecord;
  cache: string;
  concurrency?: number;
}

interface RestoreArgs extends KeyArgs {
  repo: string;
  s3?: S3Args;
  id: string;
  to: string;
  concurrency?: number;
}

async function main(): Promise<void> {
  const moduleLoadMs = performance.now();
  const [mode, json] = process.argv.slice(2);
  if ((mode !== 'backup' && mode !== 'restore') || !json) {
    throw new Error('usage: backup-run.js backup|restore <json arguments>');
  }
  if (mode === 'backup') {
    const a = JSON.parse(json) as BackupArgs;
    const storage = await openStorage(a.repo, storageOptions(a.s3));
    try {
      const opening = performance.now();
      const openCpu = process.cpuUsage();
      const repo = await Repository.open(storage, { create: true, ...keyOptions(a) });
      repo.assertWritable();
      const openMs = performance.now() - opening;
      const openCpuMs = cpuMs(openCpu);
      const cache = HashCache.load(a.cache);
      // How long the event loop was held up while the backup ran: what a host node's requests would wait.
      const loop = monitorEventLoopDelay({ resolution: 1 }); // samples every 1 ms: an idle loop shows ~1.1 ms
      loop.enable();
      const work = watchWork();
      const record = await backupCheckpoint({ repo, checkpoint: a.checkpoint, cache, concurrency: a.concurrency ?? 4 });
      const { workCpuMs, workPeakRssKb } = work.stop();
      loop.disable();
      const eventLoopDelayMs = { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 };
      const maxRssKb = process.resourceUsage().maxRSS;
      // After the measured work (a few small reads): what the files became in the repository.
      const stored = a.s3 ? null : await storedByKind(repo, record.id);
      await repo.codec.close();
      print({ ...record, moduleLoadMs, openMs, openCpuMs, workCpuMs, workPeakRssKb, maxRssKb, eventLoopDelayMs, stored, ...(a.s3 ? { requests } : {}) });
    } finally {
      await storage.close();
    }
  } else {
    // The CLI restores (offline) in its own process, its heap tuned (cli/heap-flags.ts); a backup runs in
    // the agent, in the host's process, with V8's defaults.
    await import('../cli/heap-flags.js');
    const a = JSON.parse(json) as RestoreArgs;
    const storage = await openStorage(a.repo, storageOptions(a.s3));
    try {
      const opening = performance.now();
      const openCpu = process.cpuUsage();
      const repo = await Repository.open(storage, { startThreads: true, ...keyOptions(a) });
      const openMs = performance.now() - opening;
      const openCpuMs = cpuMs(openCpu);
      const work = watchWork();
      // Without `concurrency`, the engine's default, as the CLI restores.
      const result = await restoreBackup({ repo, id: a.id, to: a.to, ...(a.concurrency !== undefined ? { concurrency: a.concurrency } : {}) });
      const { workCpuMs, workPeakRssKb } = work.stop();
      await repo.codec.close();
      print({ ...result, moduleLoadMs, openMs, openCpuMs, workCpuMs, workPeakRssKb, maxRssKb: process.resourceUsage().maxRSS, ...(a.s3 ? { requests } : {}) });
    } finally {
      await storage.close();
    }
  }
}

function keyOptions(a: KeyArgs): { password: ReturnType<typeof passwordSource>; insecureNoEncryption: boolean } {
  if (a.insecure && a.passwordFile) throw new Error('backup-run: an unencrypted repository takes no password');
  return { password: a.passwordFile ? passwordSource({ file: a.passwordFile }) : null, insecureNoEncryption: a.insecure === true };
}

/** CPU of every thread of the process since `since` (process.cpuUsage), in ms. */
function cpuMs(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}

/**
 * The backup's or restore's own cost, apart from the process's start and the key's unlocking (scrypt:
 * about half a second and 64 MiB, which an agent pays once, when it starts, and which the process's
 * peak RSS includes): its CPU, all threads, and its peak RSS, sampled every 20 ms.
 */
function watchWork(): { stop: () => { workCpuMs: number; workPeakRssKb: number } } {
  const cpu = process.cpuUsage();
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  return {
    stop: () => {
      clearInterval(timer);
      peak = Math.max(peak, process.memoryUsage.rss());
      return { workCpuMs: cpuMs(cpu), workPeakRssKb: Math.round(peak / 1024) };
    },
  };
}

/** Requests sent to the S3 server, by operation (PutObject, GetObject, ...). */
const requests: Record<string, number> = {};

function storageOptions(s3: S3Args | undefined): OpenStorageOptions {
  if (!s3) return {};
  return {
    s3: {
      endpoint: s3.endpoint,
      region: s3.region ?? 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      onRequest: (operation) => {
        requests[operation] = (requests[operation] ?? 0) + 1;
      },
    },
  };
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`backup-run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
