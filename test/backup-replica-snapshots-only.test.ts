/**
 * A replica without the log archive: the example node (a real process) with `--log-archive off` and
 * `--backup-replica <dir>` backs every snapshot up into the replica as well; the built CLI, through the
 * socket, sees it in `status` and the metrics (every replica series but the lag, which belongs to the log
 * archive), and restores it from the replica alone, byte for byte as its checkpoint. Negative control:
 * the same comparison against a later checkpoint fails.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { AgentStatus, BackupRecord, CheckpointRecord } from '../dist/shared/api.js';
import { kv, runCli, startExampleNode, tempDir, until, type CliResult } from './support/processes.js';
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

describe('a replica without the log archive', () => {
  it('receives every snapshot, shows in status and the metrics, and restores from itself alone', async () => {
    const d = tempDir('replica-snapshots-only');
    dirs.push(d);
    const replicaDir = path.join(d, 'replica');
    const replicaUrl = pathToFileURL(replicaDir).href;
    const node = await startExampleNode(d, ['--log-archive', 'off', '--backup-replica', replicaUrl]);
    const cli = (...args: string[]) => runCli([...args, '--socket', node.socketPath]);
    let first: { checkpoint: CheckpointRecord; backup: BackupRecord };
    let later: CheckpointRecord;
    try {
      for (let i = 0; i < 20; i++) expect((await kv(node.port, 'PUT', `a${i}`, `value ${i} `.repeat(100))).status).toBeLessThan(300);
      const checkpoint = parsed<CheckpointRecord>(await cli('checkpoint', 'create', '--pin', '--json'));
      const backup = parsed<BackupRecord>(await cli('backup', 'create', '--checkpoint', checkpoint.id, '--json'));
      first = { checkpoint, backup };
      await until(`the replica holds ${backup.id}`, async () => {
        const r = parsed<AgentStatus>(await cli('status', '--json')).backup?.replicas?.find((x) => x.name === replicaUrl);
        return r?.newestSnapshot?.id === backup.id && r.pending.length === 0 && r.copying === null;
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
