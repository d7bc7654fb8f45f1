/**
 * The restore's file writer alone (agent/backup/restore-file-writer.ts): runs written out of order, on and
 * off the page grid, with and without O_DIRECT, end as exactly the bytes they should be — no padding left
 * at a file's end, no neighbour overwritten — and a failure of a finish surfaces from settle().
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DIRECT_ALIGN, alignedBuffers } from '../dist/agent/fs/direct-io.js';
import { RestoreFileWriter } from '../dist/agent/backup/restore-file-writer.js';
import { tempDir } from './support/processes.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Cuts `size` bytes into runs at the given lengths (the last takes the rest). */
function runsOf(size: number, lengths: number[]): { start: number; length: number }[] {
  const runs: { start: number; length: number }[] = [];
  let start = 0;
  for (const l of lengths) {
    if (start >= size) break;
    runs.push({ start, length: Math.min(l, size - start) });
    start += l;
  }
  if (start < size) runs.push({ start, length: size - start });
  return runs;
}

async function restoreFile(directIo: boolean, size: number, lengths: number[], order: 'forward' | 'backward' | 'shuffled') {
  const dir = tempDir('restore-writer');
  dirs.push(dir);
  const content = crypto.randomBytes(size);
  const writer = new RestoreFileWriter(dir, directIo);
  const file = writer.file('000005.ldb', size);
  let runs = runsOf(size, lengths);
  file.remaining = runs.length;
  if (order === 'backward') runs = runs.reverse();
  if (order === 'shuffled') runs = runs.map((r) => [Math.random(), r] as const).sort((a, b) => a[0] - b[0]).map(([, r]) => r);
  const lanes = alignedBuffers(runs.length, Math.ceil(size / DIRECT_ALIGN) * DIRECT_ALIGN + DIRECT_ALIGN);
  // Concurrently, as the restore's workers do: each run read into (and written from) its own lane.
  await Promise.all(
    runs.map(async (r, i) => {
      const lane = lanes[i]!;
      content.copy(lane, 0, r.start, r.start + r.length);
      await writer.write(file, lane.subarray(0, r.length), lane, r.start);
      if (--file.remaining === 0) writer.finish(file);
    }),
  );
  expect(await writer.settle()).toBeNull();
  return { got: fs.readFileSync(path.join(dir, '000005.ldb')), content, file };
}

describe('RestoreFileWriter', () => {
  const P = DIRECT_ALIGN;
  const cases: [string, number, number[]][] = [
    ['whole pages', 8 * P, [2 * P, 2 * P, 2 * P]],
    ['a partial last page', 5 * P + 123, [2 * P, 2 * P]],
    ['runs off the page grid', 3 * P + 77, [P + 10, P - 10, 500]],
    ['one byte', 1, [1]],
    ['smaller than a page, two runs', 3000, [1000, 2000]],
  ];
  for (const directIo of [true, false]) {
    for (const [name, size, lengths] of cases) {
      for (const order of ['forward', 'backward', 'shuffled'] as const) {
        it(`${directIo ? 'direct' : 'ordinary'}: ${name}, ${order}`, async () => {
          const { got, content, file } = await restoreFile(directIo, size, lengths, order);
          // Exactly the content: the padding of a direct last page was cut away, and no run wrote over another.
          expect(got.length).toBe(size);
          expect(got.equals(content)).toBe(true);
          expect(file.handle).toBeNull();
          expect(file.plain).toBeNull();
          if (!directIo) expect(file.direct).toBe(false);
        });
      }
    }
  }

  it('the first write creates the file exclusively: a file already there is an error, not overwritten', async () => {
    const dir = tempDir('restore-writer');
    dirs.push(dir);
    fs.writeFileSync(path.join(dir, 'CURRENT'), 'keep me');
    const writer = new RestoreFileWriter(dir, false);
    const file = writer.file('CURRENT', 4);
    const [lane] = alignedBuffers(1, 2 * DIRECT_ALIGN);
    await expect(writer.write(file, lane!.subarray(0, 4), lane!, 0)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.readFileSync(path.join(dir, 'CURRENT'), 'utf8')).toBe('keep me');
  });

  it('a finish that fails surfaces from settle(); abandon() closes what is left and never throws', async () => {
    const dir = tempDir('restore-writer');
    dirs.push(dir);
    const writer = new RestoreFileWriter(dir, false);
    const file = writer.file('000007.ldb', 10);
    const [lane] = alignedBuffers(1, 2 * DIRECT_ALIGN);
    await writer.write(file, lane!.subarray(0, 10), lane!, 0);
    // The handle fails as a dying disk would: its finish (cut to size, close) then fails.
    await (await file.handle!).close();
    const failed = Promise.reject(Object.assign(new Error('input/output error'), { code: 'EIO' }));
    failed.catch(() => {});
    file.handle = failed;
    writer.finish(file);
    expect(await writer.settle()).toMatchObject({ code: 'EIO' });
    await expect(writer.abandon([file])).resolves.toBeUndefined();
  });
});
