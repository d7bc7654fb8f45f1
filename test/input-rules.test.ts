/** The input rules (shared/input-rules.ts) as a table: the one definition CLI, socket and agent all parse with. */
import { describe, expect, it } from 'vitest';
import {
  AdminError,
  KEEP_RULES,
  parseBackupId,
  parseCheckpointId,
  parseCount,
  parseKeepCounts,
  parseLabel,
} from '../dist/shared/index.js';

function code(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    expect(err).toBeInstanceOf(AdminError);
    expect((err as AdminError).message).not.toContain('\n');
    return (err as AdminError).code;
  }
}

describe('parseLabel', () => {
  const table: [string, unknown, string | null | 'error'][] = [
    ['absent', undefined, null],
    ['null', null, null],
    ['empty', '', null],
    ['plain', 'before upgrade', 'before upgrade'],
    ['200 ASCII characters', 'x'.repeat(200), 'x'.repeat(200)],
    ['150 emoji (300 UTF-16 units, 150 characters)', '🚀'.repeat(150), '🚀'.repeat(150)],
    ['200 emoji', '🚀'.repeat(200), '🚀'.repeat(200)],
    ['201 characters', 'x'.repeat(201), 'error'],
    ['201 emoji', '🚀'.repeat(201), 'error'],
    ['a newline', 'two\nlines', 'error'],
    ['BEL (C0)', 'a\u0007b', 'error'],
    ['DEL', 'a\u007fb', 'error'],
    ['NEL (C1)', 'a\u0085b', 'error'],
    ['CSI (C1)', 'a\u009bb', 'error'],
    ['a number', 42, 'error'],
  ];
  it.each(table)('%s', (_name, value, expected) => {
    if (expected === 'error') expect(code(() => parseLabel(value))).toBe('INVALID_ARGUMENT');
    else expect(parseLabel(value)).toBe(expected);
  });
});

describe('ids', () => {
  const table: [string, (v: unknown) => string, unknown, boolean][] = [
    ['checkpoint id', parseCheckpointId, '20261122T210045123Z-a1b2', true],
    ['checkpoint id, lowercase', parseCheckpointId, '20261122t210045123z-a1b2', false],
    ['checkpoint id with a slash', parseCheckpointId, '20261122T210045123Z-a1b2/x', false],
    ['dot-dot', parseCheckpointId, '..', false],
    ['not a string', parseCheckpointId, 20261122, false],
    ['backup id', parseBackupId, '20261122t213525139z-8dd2', true],
    ['backup id, uppercase', parseBackupId, '20261122T213525139Z-8dd2', false],
    ['empty', parseBackupId, '', false],
  ];
  it.each(table)('%s', (_name, parse, value, ok) => {
    if (ok) expect(parse(value)).toBe(value);
    else expect(code(() => parse(value))).toBe('INVALID_ARGUMENT');
  });

  it('the message names what was given, what it is, and what an id looks like', () => {
    expect(() => parseCheckpointId('../etc', 'the argument')).toThrow('not a checkpoint id: the argument is "../etc" (expected an id like 20261122T210045123Z-a1b2)');
    expect(() => parseBackupId(undefined)).toThrow('not a backup id: backup id is nothing');
  });
});

describe('retention counts', () => {
  it('every keep rule has its key, flag and text', () => {
    expect(KEEP_RULES.map((r) => r.key)).toEqual(['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly']);
    for (const r of KEEP_RULES) expect(r.flag).toBe(r.key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
  });

  it.each([0, 1, 365])('accepts %s', (n) => expect(parseCount(n, 'x')).toBe(n));
  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3', null])('refuses %s', (v) => expect(code(() => parseCount(v, 'x'))).toBe('INVALID_ARGUMENT'));

  it('parseKeepCounts keeps given keys only and names a bad one', () => {
    expect(parseKeepCounts({ keepLast: 2, keepMonthly: 0, other: 'ignored' }, 'r')).toEqual({ keepLast: 2, keepMonthly: 0 });
    expect(parseKeepCounts(undefined, 'r')).toEqual({});
    expect(() => parseKeepCounts({ keepDaily: -1 }, 'backup.retention')).toThrow('backup.retention.keepDaily');
  });
});
