import type { CheckpointRecord } from '../../shared/api.js';
import { clean, formatBytes, formatKeyValues, formatTable, formatTime } from '../output.js';
import type { Column } from '../output.js';

/** Shared by the checkpoint commands: how a record looks to a human. */

const columns: Column<CheckpointRecord>[] = [
  { header: 'ID', value: (r) => r.id },
  { header: 'CREATED', value: (r) => formatTime(r.createdAt) },
  { header: 'TRIGGER', value: (r) => r.trigger },
  { header: 'PINNED', value: (r) => (r.pinned ? 'yes' : 'no') },
  { header: 'FILES', value: (r) => String(r.files), align: 'right' },
  { header: 'SIZE', value: (r) => formatBytes(r.bytes), align: 'right' },
  { header: 'EXCLUSIVE', value: (r) => formatBytes(r.exclusiveBytes), align: 'right' },
  { header: 'LABEL', value: (r) => r.label ?? '-' },
];

export function formatCheckpointTable(records: readonly CheckpointRecord[]): string[] {
  if (records.length === 0) return ['no checkpoints'];
  return formatTable(columns, records);
}

export function formatCheckpoint(r: CheckpointRecord): string[] {
  return formatKeyValues([
    ['id', clean(r.id)],
    ['created', formatTime(r.createdAt)],
    ['label', r.label !== null ? clean(r.label) : '-'],
    ['pinned', r.pinned ? 'yes' : 'no'],
    ['trigger', clean(r.trigger)],
    ['path', clean(r.path)],
    ['files', String(r.files)],
    ['size', `${formatBytes(r.bytes)} (${r.bytes} bytes)`],
    ['exclusive', `${formatBytes(r.exclusiveBytes)} (${r.exclusiveBytes} bytes)`],
  ]);
}
