/** node-admin's library: embed the checkpoint manager in a node with createAgent(). */
export { createAgent, AGENT_VERSION, REDACT_PATHS } from './agent.js';
export type { Agent, AgentOptions, BackupOptions, ScheduleOptions } from './agent-types.js';
export { METRIC_NAMES, METRIC_OPERATIONS, type MetricOperation } from './metrics/agent-metrics.js';
export { LOG_ARCHIVE_METRIC_NAMES } from './metrics/log-archive-metrics.js';
export { applyPolicy, parseRetention, DEFAULT_RETENTION } from './retention/apply-policy.js';
export {
  createOfflineCheckpoint,
  restoreCheckpoint,
  listCheckpointsOffline,
  verifyCheckpointOffline,
} from './offline.js';
// A copy between repositories, offline: both ends opened and locked once (copy-session.ts), then each
// kind of copy run under those locks (snapshots now; the log archive's later).
export { openCopyDestination, withCopyLocks, type CopyEnds } from './backup/copy-session.js';
export { copySnapshots, selectSnapshots, type CopySnapshotsOptions, type CopySnapshotsResult } from './backup/copy-snapshots.js';
export * from '../shared/api.js';
export type { AdminApi, Operation } from '../shared/admin-api.js';
export * from '../shared/input-rules.js';
export { AdminError, ErrorCodes, type ErrorCode } from '../shared/errors.js';
