import { createHash } from 'node:crypto';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { canonicalJson } from '../repository/format.js';
import { batchHeader, batchLast } from './write-batch.js';

/**
 * The log archive's objects in a backup repository (docs/FORMAT.md, version 2):
 *
 *   wal/<timeline>/base/<backup id>-<seq>-<last>-<from>-<to>   BaseRecord (JSON): a base backup of the timeline
 *   wal/<timeline>/seg/<first>-<last>-<from>-<to>       a segment: batches first..last read in (from, to]
 *   wal/<timeline>/mark/<last>-<at>-<stop|resume>       MarkRecord (JSON): the timeline complete through `last` at `at`
 *
 * Names carry what the windows need, so a listing of `wal/` says them without reading any object.
 */

export const WAL_PREFIX = 'wal/';
export const SEGMENT_MAGIC = Buffer.from('NAWSEG01');
export const SEGMENT_VERSION = 1;
const DIGEST = 32;

/** Timeline ids look like backup ids (sortable by start time, lowercase). */
export const TIMELINE_ID_PATTERN = /^\d{8}t\d{9}z-[0-9a-f]{4}$/;

export interface SegmentBatch {
  seq: number;
  count: number;
  payload: Buffer;
  readAt: number;
}

export interface SegmentInfo {
  timeline: string;
  first: number;
  last: number;
  /** The segment holds every batch of the timeline read in (from, to], ms since the epoch. */
  from: number;
  to: number;
}

export interface BaseRecord {
  version: number;
  timeline: string;
  backup: string;
  /** The last sequence number in the backup: a restore of it opens with exactly this. */
  sequence: number;
  /** The base's checkpoint was complete at this time (ms): restorable from here on. */
  from: number;
  /** Every batch after `sequence` read by this time was in segments stored before this record... */
  to: number;
  /**
   * ...up to this sequence number: the record extends the window to `to` only while the segments reach
   * it (a lost last segment must not leave a window claiming moments it cannot restore). Records written
   * before it was named (`<backup id>-<seq>-<from>-<to>`) read as MAX_SAFE_INTEGER: they extend nothing.
   */
  last: number;
  /**
   * The base's last write batch (the one ending at `sequence`) as the archiver read it from the log, when
   * it did (written after the agent started, before the checkpoint): what the continuity proof compares
   * where no segment follows the base. Only in the record's body (never in its name), at most
   * MAX_TAIL_BYTES.
   */
  tail?: { readAt: number; batch: string };
}

/** A base record carries its last batch only up to this size. */
export const MAX_TAIL_BYTES = 1024 * 1024;

/**
 * A mark: every batch of the timeline read by `at` (ms) is in segments, up to `last`. `stop`: the
 * archiver stopped cleanly with everything it read stored. `resume`: an agent started on the database
 * and proved it still exactly the archived state (docs/FORMAT.md, "Continuity"), so the timeline goes on:
 * the database held no batch after `last` until `at`. Either extends the timeline's window to `at` while
 * the chain of segments reaches `last` without a gap.
 */
export interface MarkInfo {
  timeline: string;
  kind: 'stop' | 'resume';
  last: number;
  at: number;
}

/** A mark's body (what its name says, and how the proof went: shown, never needed by a reader). */
export interface MarkRecord extends MarkInfo {
  version: 1;
  /** resume: the window's end before the restart (the node was down from about then until `at`). */
  from?: number;
  /** resume: what was compared: archived batches and entries, and the entries found at their sequence numbers. */
  proof?: { batches: number; entries: number; found: number };
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

export function segmentName(s: SegmentInfo): string {
  return `${WAL_PREFIX}${s.timeline}/seg/${pad(s.first, 20)}-${pad(s.last, 20)}-${pad(s.from, 13)}-${pad(s.to, 13)}`;
}

export function baseName(b: Omit<BaseRecord, 'version'>): string {
  return `${WAL_PREFIX}${b.timeline}/base/${b.backup}-${pad(b.sequence, 20)}-${pad(b.last, 20)}-${pad(b.from, 13)}-${pad(b.to, 13)}`;
}

export function markName(m: MarkInfo): string {
  return `${WAL_PREFIX}${m.timeline}/mark/${pad(m.last, 20)}-${pad(m.at, 13)}-${m.kind}`;
}

export type WalObject =
  | { kind: 'segment'; name: string; segment: SegmentInfo }
  | { kind: 'base'; name: string; base: Omit<BaseRecord, 'version'> }
  | { kind: 'mark'; name: string; mark: MarkInfo };

/** The timeline a log archive object belongs to. */
export function walTimeline(o: WalObject): string {
  return o.kind === 'segment' ? o.segment.timeline : o.kind === 'base' ? o.base.timeline : o.mark.timeline;
}

/** What a name under `wal/` is, or null for anything else (left alone). */
export function parseWalName(name: string): WalObject | null {
  let m = /^wal\/([^/]+)\/seg\/(\d{20})-(\d{20})-(\d{13})-(\d{13})$/.exec(name);
  if (m && TIMELINE_ID_PATTERN.test(m[1]!)) {
    const segment = { timeline: m[1]!, first: Number(m[2]), last: Number(m[3]), from: Number(m[4]), to: Number(m[5]) };
    if (segment.first > segment.last || segment.from > segment.to) return null;
    return { kind: 'segment', name, segment };
  }
  m = /^wal\/([^/]+)\/base\/(\d{8}t\d{9}z-[0-9a-f]{4})-(\d{20})-(?:(\d{20})-)?(\d{13})-(\d{13})$/.exec(name);
  if (m && TIMELINE_ID_PATTERN.test(m[1]!)) {
    // `to` may be before `from`: the base is then restorable once a later shipment reaches `from`.
    const last = m[4] === undefined ? Number.MAX_SAFE_INTEGER : Number(m[4]);
    return { kind: 'base', name, base: { timeline: m[1]!, backup: m[2]!, sequence: Number(m[3]), last, from: Number(m[5]), to: Number(m[6]) } };
  }
  m = /^wal\/([^/]+)\/mark\/(\d{20})-(\d{13})-(stop|resume)$/.exec(name);
  if (m && TIMELINE_ID_PATTERN.test(m[1]!)) {
    return { kind: 'mark', name, mark: { timeline: m[1]!, last: Number(m[2]), at: Number(m[3]), kind: m[4] as MarkInfo['kind'] } };
  }
  return null;
}

/** SHA-256 of some bytes. The agent's runs in its archive worker, off the host's event loop. */
export type Sha256 = (data: Uint8Array) => Promise<Buffer>;

/** SHA-256 in this thread: for the offline restore, which has no host to keep responsive. */
export const sha256Here: Sha256 = async (data) => createHash('sha256').update(data).digest();

/**
 * A segment's bytes: magic, header length (u32 LE), canonical-JSON header, then per batch readAt (u64 LE,
 * ms), payload length (u32 LE) and payload, then the SHA-256 of everything before it (by `sha256`).
 */
export async function encodeSegment(info: SegmentInfo, batches: readonly SegmentBatch[], sha256: Sha256 = sha256Here): Promise<Buffer> {
  const header = Buffer.from(
    canonicalJson({ batches: batches.length, first: info.first, from: info.from, last: info.last, timeline: info.timeline, to: info.to, version: SEGMENT_VERSION }),
  );
  let length = SEGMENT_MAGIC.length + 4 + header.length + DIGEST;
  for (const b of batches) length += 12 + b.payload.length;
  const sealed = Buffer.allocUnsafe(length);
  let at = SEGMENT_MAGIC.copy(sealed, 0);
  at = sealed.writeUInt32LE(header.length, at);
  at += header.copy(sealed, at);
  for (const b of batches) {
    at = sealed.writeBigUInt64LE(BigInt(b.readAt), at);
    at = sealed.writeUInt32LE(b.payload.length, at);
    at += b.payload.copy(sealed, at);
  }
  (await sha256(sealed.subarray(0, at))).copy(sealed, at);
  return sealed;
}

/**
 * Checks a segment whole before any of it is used: the digest, the header against the name it was read
 * under, every batch's sequence numbers (contiguous, first..last) and read time (within (from, to]).
 * Throws CORRUPT naming the object.
 */
export async function decodeSegment(name: string, expected: SegmentInfo, data: Buffer, sha256: Sha256 = sha256Here): Promise<SegmentBatch[]> {
  const bad = (why: string) => new AdminError(ErrorCodes.CORRUPT, `archived log segment ${name} is damaged: ${why}`);
  if (data.length < SEGMENT_MAGIC.length + 4 + DIGEST || !data.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) throw bad('not a segment');
  const body = data.subarray(0, data.length - DIGEST);
  if (!(await sha256(body)).equals(data.subarray(body.length))) throw bad('checksum mismatch');
  const headerLength = body.readUInt32LE(SEGMENT_MAGIC.length);
  let at = SEGMENT_MAGIC.length + 4 + headerLength;
  if (at > body.length) throw bad('header runs past the end');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(body.subarray(SEGMENT_MAGIC.length + 4, at).toString('utf8')) as Record<string, unknown>;
  } catch {
    throw bad('header is not JSON');
  }
  for (const key of ['timeline', 'first', 'last', 'from', 'to'] as const) {
    if (header[key] !== expected[key]) throw bad(`header's ${key} ${JSON.stringify(header[key])} is not the name's ${JSON.stringify(expected[key])}`);
  }
  if (header.version !== SEGMENT_VERSION) throw bad(`version ${String(header.version)} is not ${SEGMENT_VERSION}`);
  const batches: SegmentBatch[] = [];
  let next = expected.first;
  while (at < body.length) {
    if (at + 12 > body.length) throw bad('batch header runs past the end');
    const readAt = Number(body.readBigUInt64LE(at));
    const length = body.readUInt32LE(at + 8);
    at += 12;
    if (at + length > body.length) throw bad('batch runs past the end');
    const payload = body.subarray(at, at + length);
    at += length;
    let h;
    try {
      h = batchHeader(payload);
    } catch (err) {
      throw bad((err as Error).message);
    }
    if (h.seq !== next) throw bad(`batch at sequence ${h.seq} where ${next} was expected`);
    if (readAt > expected.to) throw bad(`batch read at ${readAt}, after the segment's end ${expected.to}`);
    next = batchLast(h) + 1;
    batches.push({ seq: h.seq, count: h.count, payload, readAt });
  }
  if (batches.length !== header.batches) throw bad(`${batches.length} batches, the header says ${String(header.batches)}`);
  if (next - 1 !== expected.last) throw bad(`batches end at sequence ${next - 1}, not ${expected.last}`);
  return batches;
}

/**
 * The first batches of `batches` that make whole passes (a pass's batches share their readAt: a segment
 * never cuts one, so its `to` is a pass's end) of at most `maxBytes` of payload, or the first pass if it
 * alone is larger. At least one batch when there is one.
 */
export function wholePasses<T extends SegmentBatch>(batches: readonly T[], maxBytes: number): T[] {
  let n = 0;
  let bytes = 0;
  while (n < batches.length) {
    const readAt = batches[n]!.readAt;
    let end = n;
    let passBytes = 0;
    while (end < batches.length && batches[end]!.readAt === readAt) passBytes += batches[end++]!.payload.length;
    if (n > 0 && bytes + passBytes > maxBytes) break;
    bytes += passBytes;
    n = end;
  }
  return batches.slice(0, n);
}
