import fs from 'node:fs/promises';

export interface DiskSpace {
  freeBytes: number;
  totalBytes: number;
}

/** Space on the filesystem holding `p`, as an unprivileged writer sees it (bavail, not bfree). */
export async function diskSpace(p: string): Promise<DiskSpace> {
  const s = await fs.statfs(p);
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
}
