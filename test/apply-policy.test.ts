import { describe, it, expect } from 'vitest';
import type { PruneDecision, RetentionPolicy } from '../dist/shared/api.js';
import { AdminError, ErrorCodes } from '../dist/shared/errors.js';
import {
  DEFAULT_RETENTION,
  applyPolicy,
  parseRetention,
  type PolicyCheckpoint,
} from '../dist/agent/retention/apply-policy.js';
import { prng } from './support/prng.js';

type Reason = PruneDecision['reason'];

function cp(id: string, iso: string, opts: { pinned?: boolean; bytes?: number } = {}): PolicyCheckpoint {
  return { id, createdAt: new Date(iso), pinned: opts.pinned ?? false, exclusiveBytes: opts.bytes ?? 0 };
}

const pin = { pinned: true };
/** Every keep count at 0, so a case switches on only the rules it is about. */
const NONE: Partial<RetentionPolicy> = { keepLast: 0, keepHourly: 0, keepDaily: 0, keepWeekly: 0, keepMonthly: 0 };
const NOW = '2026-12-01T00:00:00Z';

interface Case {
  name: string;
  cps: PolicyCheckpoint[];
  policy: Partial<RetentionPolicy>;
  now?: string;
  disk?: number;
  keep: string[];
  remove: [string, Reason][];
}

const cases: Case[] = [
  // --- defaults and keepLast
  {
    name: 'defaults keep the 3 newest',
    cps: [
      cp('a', '2026-11-22T10:00:00Z'),
      cp('b', '2026-11-22T11:00:00Z'),
      cp('c', '2026-11-22T12:00:00Z'),
      cp('d', '2026-11-22T13:00:00Z'),
      cp('e', '2026-11-22T14:00:00Z'),
    ],
    policy: {},
    keep: ['c', 'd', 'e'],
    remove: [['a', 'policy'], ['b', 'policy']],
  },
  {
    name: 'defaults with fewer than 3 keep everything',
    cps: [cp('a', '2026-11-22T10:00:00Z'), cp('b', '2026-11-22T11:00:00Z')],
    policy: {},
    keep: ['a', 'b'],
    remove: [],
  },
  { name: 'no checkpoints', cps: [], policy: {}, keep: [], remove: [] },
  {
    name: 'every count 0 removes all unpinned, keeps pinned',
    cps: [cp('a', '2026-11-22T10:00:00Z'), cp('b', '2026-11-22T11:00:00Z', pin), cp('c', '2026-11-22T12:00:00Z')],
    policy: NONE,
    keep: ['b'],
    remove: [['a', 'policy'], ['c', 'policy']],
  },
  {
    name: 'keepLast 1 keeps only the newest',
    cps: [cp('a', '2026-11-22T10:00:00Z'), cp('b', '2026-11-22T11:00:00Z'), cp('c', '2026-11-22T12:00:00Z')],
    policy: { ...NONE, keepLast: 1 },
    keep: ['c'],
    remove: [['a', 'policy'], ['b', 'policy']],
  },
  {
    name: 'keepLast larger than the count keeps all',
    cps: [cp('a', '2026-11-22T10:00:00Z'), cp('b', '2026-11-22T11:00:00Z'), cp('c', '2026-11-22T12:00:00Z')],
    policy: { ...NONE, keepLast: 10 },
    keep: ['a', 'b', 'c'],
    remove: [],
  },
  // --- pinned
  {
    name: 'pinned are kept and take no keepLast slot',
    cps: [
      cp('a', '2026-11-22T10:00:00Z', pin),
      cp('b', '2026-11-22T11:00:00Z'),
      cp('c', '2026-11-22T12:00:00Z'),
      cp('d', '2026-11-22T13:00:00Z'),
      cp('e', '2026-11-22T14:00:00Z', pin),
    ],
    policy: { ...NONE, keepLast: 2 },
    keep: ['a', 'c', 'd', 'e'],
    remove: [['b', 'policy']],
  },
  {
    name: 'all pinned, keepLast 0: nothing removed',
    cps: [cp('a', '2026-11-22T10:00:00Z', pin), cp('b', '2026-11-22T11:00:00Z', pin)],
    policy: NONE,
    keep: ['a', 'b'],
    remove: [],
  },
  {
    name: 'a pinned checkpoint does not fill an hourly bucket',
    cps: [cp('a', '2026-11-22T10:10:00Z'), cp('b', '2026-11-22T10:50:00Z', pin)],
    policy: { ...NONE, keepHourly: 1 },
    keep: ['a', 'b'],
    remove: [],
  },
  // --- hourly / daily / weekly buckets
  {
    name: 'hourly: newest per bucket, empty hours not counted',
    cps: [
      cp('h09', '2026-11-22T09:00:00Z'),
      cp('h10a', '2026-11-22T10:05:00Z'),
      cp('h10b', '2026-11-22T10:40:00Z'),
      cp('h11a', '2026-11-22T11:10:00Z'),
      cp('h11b', '2026-11-22T11:50:00Z'),
      cp('h13', '2026-11-22T13:00:00Z'),
    ],
    policy: { ...NONE, keepHourly: 3 },
    keep: ['h10b', 'h11b', 'h13'],
    remove: [['h09', 'policy'], ['h10a', 'policy'], ['h11a', 'policy']],
  },
  {
    name: 'hourly: more buckets asked than exist keeps the newest of each',
    cps: [
      cp('a', '2026-11-22T10:00:00Z'),
      cp('b', '2026-11-22T10:59:59.999Z'),
      cp('c', '2026-11-22T11:00:00Z'),
    ],
    policy: { ...NONE, keepHourly: 24 },
    keep: ['b', 'c'],
    remove: [['a', 'policy']],
  },
  {
    name: 'daily: several per day, newest wins',
    cps: [
      cp('d20', '2026-11-20T12:00:00Z'),
      cp('d21a', '2026-11-21T01:00:00Z'),
      cp('d21b', '2026-11-21T23:00:00Z'),
      cp('d22a', '2026-11-22T00:00:00Z'),
      cp('d22b', '2026-11-22T08:00:00Z'),
    ],
    policy: { ...NONE, keepDaily: 2 },
    keep: ['d21b', 'd22b'],
    remove: [['d20', 'policy'], ['d21a', 'policy'], ['d22a', 'policy']],
  },
  {
    name: 'daily buckets are UTC days, whatever the offset in the input',
    cps: [
      // 2026-11-21T23:00Z: still the 21st in UTC.
      cp('late21', '2026-11-22T01:00:00+02:00'),
      cp('early21', '2026-11-21T05:00:00Z'),
      cp('first22', '2026-11-22T00:00:00Z'),
    ],
    policy: { ...NONE, keepDaily: 2 },
    keep: ['late21', 'first22'],
    remove: [['early21', 'policy']],
  },
  {
    name: 'weekly: Sunday and Monday are different ISO weeks',
    cps: [
      cp('sat', '2026-11-21T12:00:00Z'),
      cp('sun', '2026-11-22T23:59:59Z'),
      cp('mon', '2026-11-23T00:00:00Z'),
    ],
    policy: { ...NONE, keepWeekly: 2 },
    keep: ['sun', 'mon'],
    remove: [['sat', 'policy']],
  },
  {
    name: 'monthly: UTC calendar months, newest of each wins, empty months not counted',
    cps: [
      cp('jan-a', '2026-01-03T00:00:00Z'),
      cp('jan-b', '2026-01-31T23:59:59Z'),
      cp('mar', '2026-03-01T00:00:00Z'),
      cp('apr-a', '2026-04-10T00:00:00Z'),
      cp('apr-b', '2026-04-30T12:00:00Z'),
    ],
    policy: { ...NONE, keepMonthly: 2 },
    keep: ['mar', 'apr-b'],
    remove: [['jan-a', 'policy'], ['jan-b', 'policy'], ['apr-a', 'policy']],
  },
  {
    name: 'monthly: December and the next January are different months',
    cps: [cp('dec', '2026-12-31T23:59:59Z'), cp('jan', '2027-01-01T00:00:00Z')],
    policy: { ...NONE, keepMonthly: 2 },
    now: '2027-01-02T00:00:00Z',
    keep: ['dec', 'jan'],
    remove: [],
  },
  {
    name: 'weekly: Monday to Sunday is one bucket, newest wins',
    cps: [
      cp('mon', '2026-11-23T00:00:00Z'),
      cp('wed', '2026-11-25T12:00:00Z'),
      cp('sun', '2026-11-29T23:59:59Z'),
    ],
    policy: { ...NONE, keepWeekly: 5 },
    keep: ['sun'],
    remove: [['mon', 'policy'], ['wed', 'policy']],
  },
  {
    name: 'weekly: 2026-12-31 and 2027-01-01 share ISO week 2026-W53',
    cps: [
      cp('dec27', '2026-12-27T12:00:00Z'), // Sunday, 2026-W52
      cp('dec31', '2026-12-31T12:00:00Z'), // Thursday, 2026-W53
      cp('jan01', '2027-01-01T12:00:00Z'), // Friday, 2026-W53
      cp('jan04', '2027-01-04T12:00:00Z'), // Monday, 2027-W01
    ],
    policy: { ...NONE, keepWeekly: 3 },
    now: '2027-01-05T00:00:00Z',
    keep: ['dec27', 'jan01', 'jan04'],
    remove: [['dec31', 'policy']],
  },
  {
    name: 'weekly: 2021-01-03 is in 2020-W53 with 2020-12-28',
    cps: [
      cp('dec27', '2020-12-27T12:00:00Z'), // Sunday, 2020-W52
      cp('dec28', '2020-12-28T12:00:00Z'), // Monday, 2020-W53
      cp('jan03', '2021-01-03T12:00:00Z'), // Sunday, 2020-W53
      cp('jan04', '2021-01-04T12:00:00Z'), // Monday, 2021-W01
    ],
    policy: { ...NONE, keepWeekly: 3 },
    now: '2021-01-05T00:00:00Z',
    keep: ['dec27', 'jan03', 'jan04'],
    remove: [['dec28', 'policy']],
  },
  // --- combinations
  {
    name: 'keepLast + daily: the union of both',
    cps: [
      cp('d19', '2026-11-19T12:00:00Z'),
      cp('d20', '2026-11-20T12:00:00Z'),
      cp('d21', '2026-11-21T12:00:00Z'),
      cp('d22a', '2026-11-22T10:00:00Z'),
      cp('d22b', '2026-11-22T11:00:00Z'),
      cp('d22c', '2026-11-22T12:00:00Z'),
    ],
    policy: { ...NONE, keepLast: 2, keepDaily: 3 },
    keep: ['d20', 'd21', 'd22b', 'd22c'],
    remove: [['d19', 'policy'], ['d22a', 'policy']],
  },
  {
    name: 'hourly + daily + weekly overlap',
    cps: [
      cp('w1', '2026-11-03T12:00:00Z'),
      cp('w2', '2026-11-12T12:00:00Z'),
      cp('d1', '2026-11-21T12:00:00Z'),
      cp('h1', '2026-11-22T10:00:00Z'),
      cp('h2', '2026-11-22T11:00:00Z'),
    ],
    policy: { ...NONE, keepHourly: 1, keepDaily: 2, keepWeekly: 3 },
    keep: ['w1', 'w2', 'd1', 'h2'],
    remove: [['h1', 'policy']],
  },
  // --- maxAge
  {
    name: 'maxAge overrides keepLast',
    cps: [cp('old', '2026-11-28T00:00:00Z'), cp('mid', '2026-11-30T06:00:00Z'), cp('new', '2026-11-30T18:00:00Z')],
    policy: { ...NONE, keepLast: 3, maxAgeMs: 86_400_000 },
    now: NOW,
    keep: ['mid', 'new'],
    remove: [['old', 'max-age']],
  },
  {
    name: 'maxAge never removes pinned',
    cps: [cp('oldpin', '2026-01-01T00:00:00Z', pin), cp('old', '2026-01-02T00:00:00Z'), cp('new', '2026-11-30T18:00:00Z')],
    policy: { ...NONE, keepLast: 3, maxAgeMs: 86_400_000 },
    now: NOW,
    keep: ['oldpin', 'new'],
    remove: [['old', 'max-age']],
  },
  {
    name: 'maxAge is strict: exactly maxAge old is kept',
    cps: [cp('edge', '2026-11-30T00:00:00Z'), cp('over', '2026-11-29T23:59:59.999Z')],
    policy: { ...NONE, keepLast: 5, maxAgeMs: 86_400_000 },
    now: NOW,
    keep: ['edge'],
    remove: [['over', 'max-age']],
  },
  {
    name: 'maxAge reason wins over policy reason; a future checkpoint is not too old',
    cps: [cp('ancient', '2026-10-01T00:00:00Z'), cp('mid', '2026-11-30T00:00:00Z'), cp('future', '2026-12-02T00:00:00Z')],
    policy: { ...NONE, keepLast: 1, maxAgeMs: 7 * 86_400_000 },
    now: NOW,
    keep: ['future'],
    remove: [['ancient', 'max-age'], ['mid', 'policy']],
  },
  // --- free-space guard
  {
    name: 'guard removes the oldest kept until enough is free',
    cps: [
      cp('a', '2026-11-22T10:00:00Z', { bytes: 200 }),
      cp('b', '2026-11-22T11:00:00Z', { bytes: 200 }),
      cp('c', '2026-11-22T12:00:00Z', { bytes: 200 }),
      cp('d', '2026-11-22T13:00:00Z', { bytes: 200 }),
    ],
    policy: { ...NONE, keepLast: 4, minFreeBytes: 500 },
    disk: 100,
    keep: ['c', 'd'],
    remove: [['a', 'free-space'], ['b', 'free-space']],
  },
  {
    name: 'guard counts what the policy already removes',
    cps: [
      cp('a', '2026-11-22T10:00:00Z', { bytes: 300 }),
      cp('b', '2026-11-22T11:00:00Z', { bytes: 50 }),
      cp('c', '2026-11-22T12:00:00Z', { bytes: 50 }),
    ],
    policy: { ...NONE, keepLast: 2, minFreeBytes: 400 },
    disk: 100,
    keep: ['b', 'c'],
    remove: [['a', 'policy']],
  },
  {
    name: 'guard never removes the newest checkpoint',
    cps: [
      cp('a', '2026-11-22T10:00:00Z', { bytes: 10 }),
      cp('b', '2026-11-22T11:00:00Z', { bytes: 10 }),
      cp('c', '2026-11-22T12:00:00Z', { bytes: 10_000 }),
    ],
    policy: { ...NONE, keepLast: 3, minFreeBytes: 1_000_000 },
    disk: 0,
    keep: ['c'],
    remove: [['a', 'free-space'], ['b', 'free-space']],
  },
  {
    name: 'guard with nothing removable: only pinned and the newest',
    cps: [
      cp('p1', '2026-11-22T10:00:00Z', { pinned: true, bytes: 500 }),
      cp('new', '2026-11-22T12:00:00Z', { bytes: 500 }),
    ],
    policy: { ...NONE, keepLast: 3, minFreeBytes: 1_000 },
    disk: 0,
    keep: ['p1', 'new'],
    remove: [],
  },
  {
    name: 'guard skips pinned; if the newest is pinned every unpinned is a candidate',
    cps: [
      cp('p1', '2026-11-22T09:00:00Z', { pinned: true, bytes: 500 }),
      cp('a', '2026-11-22T10:00:00Z', { bytes: 100 }),
      cp('b', '2026-11-22T11:00:00Z', { bytes: 100 }),
      cp('p2', '2026-11-22T12:00:00Z', { pinned: true, bytes: 500 }),
    ],
    policy: { ...NONE, keepLast: 3, minFreeBytes: 10_000 },
    disk: 0,
    keep: ['p1', 'p2'],
    remove: [['a', 'free-space'], ['b', 'free-space']],
  },
  {
    name: 'guard is off without disk information',
    cps: [cp('a', '2026-11-22T10:00:00Z', { bytes: 100 }), cp('b', '2026-11-22T11:00:00Z', { bytes: 100 })],
    policy: { ...NONE, keepLast: 3, minFreeBytes: 1_000 },
    keep: ['a', 'b'],
    remove: [],
  },
  {
    name: 'guard is off with minFreeBytes 0',
    cps: [cp('a', '2026-11-22T10:00:00Z', { bytes: 100 }), cp('b', '2026-11-22T11:00:00Z', { bytes: 100 })],
    policy: { ...NONE, keepLast: 3, minFreeBytes: 0 },
    disk: 0,
    keep: ['a', 'b'],
    remove: [],
  },
  {
    name: 'guard already satisfied removes nothing more',
    cps: [cp('a', '2026-11-22T10:00:00Z', { bytes: 100 }), cp('b', '2026-11-22T11:00:00Z', { bytes: 100 })],
    policy: { ...NONE, keepLast: 3, minFreeBytes: 1_000 },
    disk: 1_000,
    keep: ['a', 'b'],
    remove: [],
  },
  {
    name: 'mixed reasons come out oldest first',
    cps: [
      cp('aged', '2026-11-01T00:00:00Z', { bytes: 1 }),
      cp('x', '2026-11-30T01:00:00Z', { bytes: 1 }),
      cp('y', '2026-11-30T02:00:00Z', { bytes: 1 }),
      cp('z', '2026-11-30T03:00:00Z', { bytes: 1 }),
      cp('n', '2026-11-30T04:00:00Z', { bytes: 1 }),
    ],
    policy: { ...NONE, keepLast: 3, maxAgeMs: 7 * 86_400_000, minFreeBytes: 4 },
    now: NOW,
    disk: 1,
    keep: ['z', 'n'],
    remove: [['aged', 'max-age'], ['x', 'policy'], ['y', 'free-space']],
  },
  // --- ordering
  {
    name: 'unsorted input',
    cps: [
      cp('d', '2026-11-22T13:00:00Z'),
      cp('a', '2026-11-22T10:00:00Z'),
      cp('e', '2026-11-22T14:00:00Z'),
      cp('c', '2026-11-22T12:00:00Z'),
      cp('b', '2026-11-22T11:00:00Z'),
    ],
    policy: {},
    keep: ['c', 'd', 'e'],
    remove: [['a', 'policy'], ['b', 'policy']],
  },
  {
    name: 'ties on createdAt: the greater id counts as newer',
    cps: [cp('t2', '2026-11-22T10:00:00Z'), cp('t1', '2026-11-22T10:00:00Z'), cp('t3', '2026-11-22T10:00:00Z')],
    policy: { ...NONE, keepLast: 1 },
    keep: ['t3'],
    remove: [['t1', 'policy'], ['t2', 'policy']],
  },
  {
    name: 'ties inside an hourly bucket; the newest (by id) is never guarded away',
    cps: [
      cp('b', '2026-11-22T10:30:00Z', { bytes: 5 }),
      cp('a', '2026-11-22T10:30:00Z', { bytes: 5 }),
    ],
    policy: { ...NONE, keepLast: 2, keepHourly: 1, minFreeBytes: 100 },
    disk: 0,
    keep: ['b'],
    remove: [['a', 'free-space']],
  },
];

describe('applyPolicy: table', () => {
  it('has enough cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(25);
  });

  it.each(cases)('$name', (c) => {
    const disk = c.disk === undefined ? undefined : { freeBytes: c.disk };
    const out = applyPolicy(c.cps, parseRetention(c.policy), new Date(c.now ?? NOW), disk);
    expect(out.keep).toEqual(c.keep);
    expect(out.remove).toEqual(c.remove.map(([id, reason]) => ({ id, reason })));
  });
});

describe('applyPolicy: input checks', () => {
  it('rejects duplicate ids', () => {
    const cps = [cp('a', '2026-11-22T10:00:00Z'), cp('a', '2026-11-22T11:00:00Z')];
    expect(() => applyPolicy(cps, DEFAULT_RETENTION, new Date(NOW))).toThrow(AdminError);
  });

  it('rejects invalid dates', () => {
    expect(() => applyPolicy([cp('a', 'not a date')], DEFAULT_RETENTION, new Date(NOW))).toThrow(AdminError);
  });

  it('does not mutate its input', () => {
    const cps = [cp('b', '2026-11-22T11:00:00Z'), cp('a', '2026-11-22T10:00:00Z')];
    const before = cps.map((c) => c.id);
    applyPolicy(cps, DEFAULT_RETENTION, new Date(NOW));
    expect(cps.map((c) => c.id)).toEqual(before);
  });
});

// --- property tests


function int(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

function shuffle<T>(rand: () => number, xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = int(rand, 0, i);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

const NOW_MS = Date.parse(NOW);

function randomCheckpoints(rand: () => number): PolicyCheckpoint[] {
  const n = int(rand, 0, 20);
  const out: PolicyCheckpoint[] = [];
  for (let i = 0; i < n; i++) {
    // Coarse times half the time, so that ties and shared buckets are common.
    const back = rand() < 0.5 ? int(rand, 0, 40) * 3_600_000 : int(rand, 0, 60 * 86_400_000);
    out.push({
      id: `cp${String(i).padStart(2, '0')}`,
      createdAt: new Date(NOW_MS - back),
      pinned: rand() < 0.2,
      exclusiveBytes: int(rand, 0, 1_000),
    });
  }
  return out;
}

function randomPolicy(rand: () => number): RetentionPolicy {
  return parseRetention({
    keepLast: int(rand, 0, 6),
    keepHourly: int(rand, 0, 4),
    keepDaily: int(rand, 0, 4),
    keepWeekly: int(rand, 0, 3),
    maxAgeMs: rand() < 0.5 ? null : int(rand, 1, 40) * 86_400_000,
    minFreeBytes: rand() < 0.5 ? 0 : int(rand, 1, 8_000),
  });
}

function byAge(a: PolicyCheckpoint, b: PolicyCheckpoint): number {
  return a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

const ITERATIONS = 500;

describe('applyPolicy: properties', () => {
  it('partitions the input; pinned never removed; both lists oldest first', () => {
    const rand = prng(1);
    for (let i = 0; i < ITERATIONS; i++) {
      const cps = randomCheckpoints(rand);
      const disk = rand() < 0.5 ? undefined : { freeBytes: int(rand, 0, 5_000) };
      const out = applyPolicy(cps, randomPolicy(rand), new Date(NOW), disk);
      const removed = out.remove.map((d) => d.id);
      expect(new Set([...out.keep, ...removed]).size).toBe(out.keep.length + removed.length);
      expect([...out.keep, ...removed].sort()).toEqual(cps.map((c) => c.id).sort());
      const pinned = new Set(cps.filter((c) => c.pinned).map((c) => c.id));
      expect(removed.filter((id) => pinned.has(id))).toEqual([]);
      const order = [...cps].sort(byAge).map((c) => c.id);
      expect(out.keep).toEqual(order.filter((id) => out.keep.includes(id)));
      expect(removed).toEqual(order.filter((id) => removed.includes(id)));
      const newest = order.at(-1);
      expect(out.remove.filter((d) => d.id === newest && d.reason === 'free-space')).toEqual([]);
    }
  });

  it('does not depend on input order', () => {
    const rand = prng(2);
    for (let i = 0; i < ITERATIONS; i++) {
      const cps = randomCheckpoints(rand);
      const policy = randomPolicy(rand);
      const disk = rand() < 0.5 ? undefined : { freeBytes: int(rand, 0, 5_000) };
      const now = new Date(NOW);
      expect(applyPolicy(shuffle(rand, cps), policy, now, disk)).toEqual(applyPolicy(cps, policy, now, disk));
    }
  });

  it('keepLast alone keeps exactly the min(N, unpinned) newest unpinned', () => {
    const rand = prng(3);
    for (let i = 0; i < ITERATIONS; i++) {
      const cps = randomCheckpoints(rand);
      const n = int(rand, 0, 25);
      const out = applyPolicy(cps, parseRetention({ ...NONE, keepLast: n }), new Date(NOW));
      const unpinned = cps.filter((c) => !c.pinned).sort(byAge);
      const expected = unpinned.slice(Math.max(0, unpinned.length - n)).map((c) => c.id);
      const pinned = new Set(cps.filter((c) => c.pinned).map((c) => c.id));
      expect(out.keep.filter((id) => !pinned.has(id))).toEqual(expected);
      expect(out.remove.every((d) => d.reason === 'policy')).toBe(true);
    }
  });

  it('the guard stops as soon as enough is free, or when nothing is left to remove', () => {
    const rand = prng(4);
    for (let i = 0; i < ITERATIONS; i++) {
      const cps = randomCheckpoints(rand);
      const policy = { ...randomPolicy(rand), minFreeBytes: int(rand, 1, 8_000) };
      const disk = { freeBytes: int(rand, 0, 5_000) };
      const out = applyPolicy(cps, policy, new Date(NOW), disk);
      const bytes = new Map(cps.map((c) => [c.id, c.exclusiveBytes]));
      const freed = out.remove.reduce((sum, d) => sum + (bytes.get(d.id) ?? 0), 0);
      const guarded = out.remove.filter((d) => d.reason === 'free-space');
      const lastGuarded = guarded.at(-1);
      if (lastGuarded !== undefined) {
        // Without its last removal the guard was still short.
        expect(disk.freeBytes + freed - (bytes.get(lastGuarded.id) ?? 0)).toBeLessThan(policy.minFreeBytes);
      }
      if (disk.freeBytes + freed < policy.minFreeBytes) {
        const newest = [...cps].sort(byAge).at(-1);
        const pinned = new Set(cps.filter((c) => c.pinned).map((c) => c.id));
        expect(out.keep.filter((id) => !pinned.has(id) && id !== newest?.id)).toEqual([]);
      }
    }
  });
});

describe('parseRetention', () => {
  it('returns the defaults for an empty input', () => {
    expect(parseRetention({})).toEqual(DEFAULT_RETENTION);
    expect(DEFAULT_RETENTION).toEqual({
      keepLast: 3,
      keepHourly: 0,
      keepDaily: 0,
      keepWeekly: 0,
      keepMonthly: 0,
      maxAgeMs: null,
      minFreeBytes: 0,
    });
  });

  it('merges over the defaults; undefined means default', () => {
    expect(parseRetention({ keepDaily: 7, keepLast: undefined, maxAgeMs: 3_600_000 })).toEqual({
      ...DEFAULT_RETENTION,
      keepDaily: 7,
      maxAgeMs: 3_600_000,
    });
    expect(parseRetention({ maxAgeMs: 5, keepLast: 0 }).keepLast).toBe(0);
    expect(parseRetention({ maxAgeMs: null }).maxAgeMs).toBeNull();
  });

  const bad: [string, unknown][] = [
    ['keepLast', -1],
    ['keepLast', 1.5],
    ['keepLast', Number.NaN],
    ['keepHourly', Number.POSITIVE_INFINITY],
    ['keepDaily', '3'],
    ['keepWeekly', null],
    ['minFreeBytes', -100],
    ['maxAgeMs', 0],
    ['maxAgeMs', -1],
    ['maxAgeMs', Number.NaN],
    ['maxAgeMs', '1h'],
  ];

  it.each(bad)('rejects %s = %s', (key, value) => {
    const input = { [key]: value } as Partial<RetentionPolicy>;
    let caught: unknown;
    try {
      parseRetention(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(AdminError);
    const e = caught as AdminError;
    expect(e.code).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(e.message).toContain(key);
    expect(e.message).not.toContain('\n');
  });

  it('rejects a non-object', () => {
    expect(() => parseRetention(null as unknown as Partial<RetentionPolicy>)).toThrow(AdminError);
  });
});
