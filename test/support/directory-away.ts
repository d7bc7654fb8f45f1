import fs from 'node:fs';

/**
 * A storage outage without root or a network: the directory `d` swapped for a plain file, so that every
 * request under it fails (ENOTDIR), whoever the process is; the returned function puts it back as it was.
 */
export function directoryAway(d: string): () => void {
  fs.renameSync(d, `${d}.away`);
  fs.writeFileSync(d, 'away');
  return () => {
    fs.rmSync(d);
    fs.renameSync(`${d}.away`, d);
  };
}
