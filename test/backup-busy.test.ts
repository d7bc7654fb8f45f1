import { describe, expect, it } from 'vitest';
import { busyMessage, type BackupRequester } from '../dist/agent/backup/backup-manager.js';
import type { BackupInProgress } from '../dist/shared/index.js';

/** What a backup request is told while another backup holds the agent's one slot. */
describe('busyMessage', () => {
  const state = (over: Partial<BackupInProgress>): BackupInProgress => ({
    phase: 'uploading',
    checkpointId: '20261205T120000000Z-ab12',
    startedAt: '2026-12-05T12:00:01.000Z',
    filesDone: 3,
    filesTotal: 9,
    bytesDone: 512 * 1024 * 1024,
    bytesTotal: 1024 * 1024 * 1024,
    bytesRead: 0,
    bytesUploaded: 0,
    bytesPerSecond: 0,
    ...over,
  });
  const cases: [string, BackupRequester, Partial<BackupInProgress>, string][] = [
    ['a manual backup, halfway', 'manual', {}, 'a backup of checkpoint 20261205T120000000Z-ab12 is running (since 2026-12-05T12:00:01.000Z, 512 MiB of 1 GiB done)'],
    ["the log archive's base", 'log-archive', {}, "the log archive's base backup of checkpoint 20261205T120000000Z-ab12 is running (since 2026-12-05T12:00:01.000Z, 512 MiB of 1 GiB done)"],
    ['a scheduled one, its checkpoint still being taken', 'scheduled', { checkpointId: null, phase: 'checkpointing', bytesDone: 0, bytesTotal: 0 }, 'a scheduled backup is running (since 2026-12-05T12:00:01.000Z, checkpointing)'],
  ];
  it.each(cases)('%s', (_what, by, over, begins) => {
    const m = busyMessage({ by, state: state(over) });
    expect(m.startsWith(begins), m).toBe(true);
    expect(m).toMatch(/; try again when it ends \(node-admin status shows its progress\) or cancel it$/);
    expect(m).not.toContain('\n');
  });
});
