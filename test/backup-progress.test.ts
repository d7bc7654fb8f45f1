import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ProgressReporter } from '../dist/agent/backup/backup-progress.js';
import type { BackupProgress } from '../dist/shared/api.js';

/** A backup's progress reports alone (backup-progress.ts), on vitest's fake clock. */

const fresh = (): BackupProgress => ({
  phase: 'uploading',
  filesDone: 0,
  filesTotal: 10,
  bytesDone: 0,
  bytesTotal: 1000,
  bytesRead: 0,
  bytesUploaded: 0,
  bytesPerSecond: 0,
});

describe('backup progress', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date('2026-11-23T00:00:00Z'));
  });
  afterEach(() => vi.useRealTimers());

  it('sends at most one report per 200 ms, and the one held back when the time is up, with the latest state', () => {
    const sent: BackupProgress[] = [];
    const started = Date.now();
    const reporter = new ProgressReporter(fresh(), started, (p) => sent.push(p));
    vi.advanceTimersByTime(1000);
    reporter.progress.bytesDone = 100;
    reporter.report();
    expect(sent.map((p) => p.bytesDone)).toEqual([100]);
    expect(sent[0]!.bytesPerSecond).toBe(100); // 100 bytes in the first second

    vi.advanceTimersByTime(50);
    reporter.progress.bytesDone = 150;
    reporter.report();
    reporter.progress.bytesDone = 170;
    reporter.report();
    expect(sent).toHaveLength(1);
    vi.advanceTimersByTime(149);
    expect(sent).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(sent.map((p) => p.bytesDone)).toEqual([100, 170]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('sends a forced report at once, in place of one held back; each report is a copy', () => {
    const sent: BackupProgress[] = [];
    const reporter = new ProgressReporter(fresh(), Date.now(), (p) => sent.push(p));
    reporter.report();
    reporter.progress.filesDone = 1;
    reporter.report();
    expect(vi.getTimerCount()).toBe(1);
    reporter.progress.phase = 'finishing';
    reporter.report(true);
    expect(sent.map((p) => [p.phase, p.filesDone])).toEqual([
      ['uploading', 0],
      ['finishing', 1],
    ]);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(1000);
    expect(sent).toHaveLength(2);
    expect(sent[1]).not.toBe(reporter.progress);
  });

  it('leaves no timer behind after stop, and sets none without a listener', () => {
    const sent: BackupProgress[] = [];
    const reporter = new ProgressReporter(fresh(), Date.now(), (p) => sent.push(p));
    reporter.report();
    reporter.report();
    expect(vi.getTimerCount()).toBe(1);
    reporter.stop();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(1000);
    expect(sent).toHaveLength(1);

    const silent = new ProgressReporter(fresh(), Date.now(), undefined);
    silent.report();
    silent.report();
    expect(vi.getTimerCount()).toBe(0);
  });
});
