/**
 * The log archive's windows as data: what a listing of `wal/` (and the backups that exist) lets a
 * restore claim. Each case is a listing and the windows it must give; names go through the real
 * name parser, so the names the archiver writes are what is tested.
 */
import { describe, expect, it } from 'vitest';
import { baseName, parseWalName, segmentName, type WalObject } from '../dist/agent/log-archive/segment.js';
import { chooseBase, latestMoment, timelineWindows } from '../dist/agent/log-archive/timeline-windows.js';
import { toSecond, windowToSecond } from '../dist/cli/commands/backup-timeline.js';

const T1 = '20261123t100000000z-aaaa';
const T2 = '20261123t120000000z-bbbb';
const B1 = '20261123t100001000z-0001';
const B2 = '20261123t100501000z-0002';
const B3 = '20261123t120001000z-0003';

const seg = (timeline: string, first: number, last: number, from: number, to: number) => parseWalName(segmentName({ timeline, first, last, from, to }))!;
const base = (timeline: string, backup: string, sequence: number, from: number, to: number, last = sequence) => parseWalName(baseName({ timeline, backup, sequence, last, from, to }))!;

function windows(objects: WalObject[], backups = [B1, B2, B3]) {
  const w = timelineWindows(objects, new Set(backups));
  return {
    timelines: w.timelines.map((t) => ({ id: t.id, from: t.from, to: t.to, last: t.lastSequence, usable: t.bases.filter((b) => b.usable).map((b) => b.backup), brokenAfter: t.brokenAfter })),
    gaps: w.gaps,
    raw: w,
  };
}

describe('timelineWindows', () => {
  it('names round-trip through the parser, and foreign names are left alone', () => {
    expect(seg(T1, 1, 20, 5, 9)).toMatchObject({ kind: 'segment', segment: { timeline: T1, first: 1, last: 20, from: 5, to: 9 } });
    expect(seg(T1, 1, 20, 5, 9)).not.toHaveProperty('base');
    expect(base(T1, B1, 10, 5, 9)).toMatchObject({ kind: 'base', base: { timeline: T1, backup: B1, sequence: 10, from: 5, to: 9 } });
    expect(parseWalName('wal/readme')).toBeNull();
    expect(parseWalName(`wal/${T1}/seg/1-2-3-4`)).toBeNull();
    expect(parseWalName(`wal/not-a-timeline/base/${B1}-00000000000000000001-0000000000001-0000000000002`)).toBeNull();
  });

  it('a base and a chain of segments: from the base to the end of the chain', () => {
    const w = windows([base(T1, B1, 10, 1000, 1000), seg(T1, 11, 20, 900, 2000), seg(T1, 21, 30, 2000, 3000)]);
    expect(w.timelines).toEqual([{ id: T1, from: 1000, to: 3000, last: 30, usable: [B1], brokenAfter: null }]);
    expect(w.gaps).toEqual([]);
    expect(chooseBase(w.raw, 999)).toBeNull();
    expect(chooseBase(w.raw, 1000)?.base.backup).toBe(B1);
    expect(chooseBase(w.raw, 3000)?.base.backup).toBe(B1);
    expect(chooseBase(w.raw, 3001)).toBeNull();
    expect(latestMoment(w.raw)).toBe(3000);
  });

  it('a base record says everything read until its `to` was shipped: an idle node keeps its window', () => {
    const w = windows([base(T1, B1, 10, 1000, 5000)]);
    expect(w.timelines[0]).toMatchObject({ from: 1000, to: 5000, last: 10 });
  });

  it('a base record extends the window only while the segments reach the sequence it says was stored', () => {
    // The record says: by 5000, everything read was in segments up to 30. The segment 21..30 is lost.
    const whole = windows([base(T1, B1, 10, 1000, 5000, 30), seg(T1, 11, 20, 900, 2000), seg(T1, 21, 30, 2000, 3000)]);
    expect(whole.timelines[0]).toMatchObject({ from: 1000, to: 5000, last: 30 });
    const lost = windows([base(T1, B1, 10, 1000, 5000, 30), seg(T1, 11, 20, 900, 2000)]);
    expect(lost.timelines[0]).toMatchObject({ from: 1000, to: 2000, last: 20 });
    // A record named before `last` was (…-<seq>-<from>-<to>) extends nothing; it still is a base.
    const old = parseWalName(`wal/${T1}/base/${B1}-00000000000000000010-0000000001000-0000000005000`)!;
    expect(old).toMatchObject({ kind: 'base', base: { sequence: 10, from: 1000, to: 5000 } });
    expect(windows([old, seg(T1, 11, 20, 900, 2000)]).timelines[0]).toMatchObject({ from: 1000, to: 2000, usable: [B1] });
  });

  it('a base whose record ends before its checkpoint is not restorable until a shipment reaches it', () => {
    expect(windows([base(T1, B1, 10, 1000, 900)]).timelines[0]).toMatchObject({ from: null, to: null, usable: [] });
    expect(windows([base(T1, B1, 10, 1000, 900), seg(T1, 11, 12, 900, 1500)]).timelines[0]).toMatchObject({ from: 1000, to: 1500, usable: [B1] });
  });

  it('a missing segment cuts the timeline: nothing after the gap is claimed', () => {
    const w = windows([base(T1, B1, 10, 1000, 1000), seg(T1, 11, 20, 900, 2000), seg(T1, 31, 40, 3000, 4000), base(T1, B2, 35, 3500, 4000)]);
    expect(w.timelines[0]).toEqual({ id: T1, from: 1000, to: 2000, last: 20, usable: [B1], brokenAfter: 20 });
  });

  it('a base whose backup was pruned is not usable; the next base still is', () => {
    const objects = [base(T1, B1, 10, 1000, 1000), seg(T1, 11, 20, 900, 2000), base(T1, B2, 15, 1800, 2000), seg(T1, 21, 30, 2000, 3000)];
    expect(windows(objects, [B2]).timelines[0]).toMatchObject({ from: 1800, to: 3000, usable: [B2] });
    const both = windows(objects);
    expect(chooseBase(both.raw, 1799)?.base.backup).toBe(B1);
    expect(chooseBase(both.raw, 1800)?.base.backup).toBe(B2);
  });

  it('a base before the archive begins cannot be used', () => {
    expect(windows([base(T1, B1, 5, 1000, 1000), seg(T1, 11, 20, 900, 2000)]).timelines[0]).toMatchObject({ from: null, usable: [] });
  });

  it('two timelines: the gap between them is named, moments in it refused', () => {
    const w = windows([base(T1, B1, 10, 1000, 1000), seg(T1, 11, 20, 900, 2000), base(T2, B3, 25, 5000, 5000), seg(T2, 26, 30, 4900, 6000)]);
    expect(w.timelines.map((t) => [t.from, t.to])).toEqual([
      [1000, 2000],
      [5000, 6000],
    ]);
    expect(w.gaps).toEqual([{ from: 2000, to: 5000 }]);
    expect(chooseBase(w.raw, 3000)).toBeNull();
    expect(chooseBase(w.raw, 5500)?.timeline.id).toBe(T2);
    expect(latestMoment(w.raw)).toBe(6000);
  });
});

describe('backup timeline to the second', () => {
  it('rounds a window inwards and a gap outwards, so every printed second of a window is restorable', () => {
    const cases: [string, 'up' | 'down', string][] = [
      ['2026-11-24T00:41:07.000Z', 'up', '2026-11-24T00:41:07Z'],
      ['2026-11-24T00:41:07.000Z', 'down', '2026-11-24T00:41:07Z'],
      ['2026-11-24T00:41:07.001Z', 'up', '2026-11-24T00:41:08Z'],
      ['2026-11-24T00:41:07.999Z', 'down', '2026-11-24T00:41:07Z'],
      ['2026-11-24T23:59:59.500Z', 'up', '2026-11-25T00:00:00Z'],
    ];
    for (const [iso, round, want] of cases) expect(toSecond(iso, round), `${iso} ${round}`).toBe(want);
    expect(windowToSecond('2026-11-24T00:41:07.200Z', '2026-11-24T00:45:00.900Z')).toBe('2026-11-24T00:41:08Z to 2026-11-24T00:45:00Z');
    // No whole second inside: said in milliseconds rather than claimed wider.
    expect(windowToSecond('2026-11-24T00:41:07.200Z', '2026-11-24T00:41:07.900Z')).toBe('2026-11-24T00:41:07.200Z to 2026-11-24T00:41:07.900Z');
  });
});
