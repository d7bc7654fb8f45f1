/**
 * A replica without the log archive: the example node (a real process) with `--log-archive off` and
 * `--backup-replica <dir>` backs every snapshot up into the replica as well; the built CLI, through the
 * socket, sees it in `status` and the metrics (every replica series but the lag, which belongs to the log
 * archive), and restores it from the replica alone, byte for byte as its checkpoint. Negative control:
 * the same comparison against a later checkpoint fails.
 *
 * The replica the agent makes has the primary's keys (its packs are the primary's bytes, and the
 * primary's master opens it); a second replica, made before with a master of its own (as agents did
 * before), still receives the snapshot, through the password. Negative control: that one does not
 * seal like the primary.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { AgentStatus, BackupRecord, CheckpointRecord } from '../dist/shared/api.js';
import { Repository } from '../dist/agent/repository/repository.js';
import { openStorage } from '../dist/agent/storage/open-storage.js';
import { kv, runCli, startExampleNode, tempDir, until, type CliResult } from './support/processes.js';
import { TEST_REPO } from './support/test-password.js';
import { parseExposition, sampleValue } from './support/exposition.js';
import { files, treeDifference } from './support/file-trees.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function parsed<T>(r: CliResult): T {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

/** The repository at `url`, opened (or made, with its own master) with the tests' password, for `use`. */
async function withRepo(url: string, create: boolean, use: (repo: Repository) => Promise<void>): Promise<void> {
  const storage = await openStorage(url, {});
  try {
    const repo = await Repository.open(storage, { ...TEST_REPO, create, cryptoThreads: 0 });
    try {
      await use(repo);
    } finally {
      await repo.codec.close();
    }
  } finally {
    await storage.close();
  }
}

describe('a replica without the log archive', () => {
  it('receives every snapshot, shows in status and the metrics, and restores from itself alone', async () => {
    const d = tempDir('replica-snapshots-only');
    dirs.push(d);
    const replicaDir = path.join(d, 'replica');
    const replicaUrl = pathToFileURL(replicaDir).href;
    const ownKeyUrl = pathToFileURL(path.join(d, 'replica-own-key')).href;
    await withRepo(ownKeyUrl, true, async () => {}); // made before the agent, with a master of its own
    const node = await startExampleNode(d, ['--log-archive', 'off', '--backup-replica', replicaUrl, '--backup-replica', ownKeyUrl]);
    const cli = (...args: string[]) => runCli([...args, '--socket', node.socketPath]);
    let first: { checkpoint: CheckpointRecord; backup: BackupRecord };
    let later: CheckpointRecord;
    try {
      for (let i = 0; i < 20; i++) expect((await kv(node.port, 'PUT', `a${i}`, `value ${i} `.repeat(100))).status).toBeLessThan(300);
      const checkpoint = parsed<CheckpointRecord>(await cli('checkpoint', 'create', '--pin', '--json'));
      const backup = parsed<BackupRecord>(await cli('backup', 'create', '--checkpoint', checkpoint.id, '--json'));
      first = { checkpoint, backup };
      for (const url of [replicaUrl, ownKeyUrl]) {
        await until(`${url} holds ${backup.id}`, async () => {
          const r = parsed<AgentStatus>(await cli('status', '--json')).backup?.replicas?.find((x) => x.name === url);
          return r?.newestSnapshot?.id === backup.id && r.pending.length === 0 && r.copying === null;
        });
      }
      const primaryUrl = pathToFileURL(path.join(d, 'backups')).href;
      await withRepo(primaryUrl, false, async (primary) => {
        await withRepo(replicaUrl, false, async (replica) => {
          expect(replica.sealsLike(primary)).toBe(true);
          expect(replica.config.id).not.toBe(primary.config.id);
        });
        await withRepo(ownKeyUrl, false, async (own) => {
          expect(own.sealsLike(primary)).toBe(false);
          expect((await own.listSnapshots()).map((x) => x.id)).toContain(backup.id);
        });
      });
      const status = parsed<AgentStatus>(await cli('status', '--json'));
      expect(status.logArchive ?? null).toBeNull();
      const text = await cli('status');
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(new RegExp(`snapshots:\\s+idle; newest snapshot ${backup.id}, made `));

      const scrape = await cli('metrics');
      expect(scrape.code, scrape.stderr).toBe(0);
      const samples = parseExposition(scrape.stdout);
      const replica = { replica: replicaUrl };
      expect(sampleValue(samples, 'node_admin_backup_replica_newest_snapshot_timestamp_seconds', replica)).toBe(Date.parse(backup.createdAt) / 1000);
      expect(sampleValue(samples, 'node_admin_backup_replica_snapshots_pending', replica)).toBe(0);
      expect(sampleValue(samples, 'node_admin_backup_replica_last_success_timestamp_seconds', replica)).toBeGreaterThan(0);
      // The lag is the log archive's: no series without it (a 0 would claim an up-to-date archive).
      expect(sampleValue(samples, 'node_admin_backup_replica_lag_seconds', replica)).toBeUndefined();
      expect(samples.some((s) => s.name.startsWith('node_admin_log_archive_'))).toBe(false);

      for (let i = 0; i < 20; i++) expect((await kv(node.port, 'PUT', `b${i}`, `later ${i} `.repeat(100))).status).toBeLessThan(300);
      later = parsed<CheckpointRecord>(await cli('checkpoint', 'create', '--pin', '--json'));
      const want = files(first.checkpoint.path);
      const restored = path.join(d, 'restored');
      const r = await runCli(['backup', 'restore', first.backup.id, '--repo', replicaUrl, '--to', restored, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const got = files(restored);
      expect(treeDifference(got, want)).toBeNull();
      // Negative control: the later checkpoint holds the writes of 'b', which the restored backup lacks.
      expect(treeDifference(got, files(later.path))).not.toBeNull();
    } finally {
      await node.stop();
    }
  }, 180_000);
});
