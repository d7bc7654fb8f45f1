import { toAdminError } from '../../shared/errors.js';
import type { Repository } from '../repository/repository.js';
import { readWindows } from './restore-to-moment.js';
import { decodeSegment, segmentName } from './segment.js';

/** What `backup verify` found in the log archive. */
export interface ArchiveVerifyReport {
  /** Segments in the timelines' chains (read back, with readData). */
  segments: number;
  bytesRead: number;
  /** Each names the object (or the timeline) at fault. */
  errors: string[];
}

/**
 * Checks the log archive for `backup verify`: every timeline's chain of segments runs without a gap from
 * its bases (a gap is an error naming the sequence after which a segment is missing); with readData,
 * every segment of every chain is downloaded, opened (a sealed segment's every chunk authenticated) and
 * decoded whole (digest, header against its name, sequence numbers running on), and each follows the one
 * before it. A damaged segment is an error naming it; the check goes on with the next.
 */
export async function verifyArchive(repo: Repository, options: { readData: boolean }): Promise<ArchiveVerifyReport> {
  const windows = await readWindows(repo);
  const report: ArchiveVerifyReport = { segments: 0, bytesRead: 0, errors: [] };
  for (const t of windows.timelines) {
    if (t.brokenAfter !== null) report.errors.push(`timeline ${t.id}: a segment after sequence ${t.brokenAfter} is missing (nothing after it can be restored)`);
    for (const b of t.bases) if (!b.usable && t.from !== null) report.errors.push(`timeline ${t.id}: base ${b.backup} is not usable: ${b.problem}`);
    report.segments += t.segments.length;
    if (!options.readData) continue;
    for (const s of t.segments) {
      const name = segmentName(s);
      try {
        const data = await repo.getObject(name);
        report.bytesRead += data.length;
        await decodeSegment(name, s, data);
      } catch (err) {
        const message = toAdminError(err).message;
        report.errors.push(message.includes(name) ? message : `object ${name} is damaged: ${message}`);
      }
    }
  }
  return report;
}
