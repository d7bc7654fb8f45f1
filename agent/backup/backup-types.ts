/** What a backup reports while it runs (one NDJSON line each over the socket). */
export interface BackupProgress {
  phase: 'uploading' | 'finishing';
  filesDone: number;
  filesTotal: number;
  /** Bytes of the checkpoint accounted for (read and hashed, or known from the hash cache). */
  bytesDone: number;
  bytesTotal: number;
  /** Bytes actually read from disk (unchanged tables are not read). */
  bytesRead: number;
  /** Bytes stored in the repository (packs). */
  bytesUploaded: number;
  bytesPerSecond: number;
}

/** A backup as listed and returned: the snapshot plus what this run cost. */
export interface BackupRecord {
  id: string;
  createdAt: string;
  pinned: boolean;
  checkpoint: { id: string; label: string | null; createdAt: string; trigger: string };
  files: number;
  bytes: number;
  bytesRead?: number;
  bytesUploaded?: number;
  blobsUploaded?: number;
  packsUploaded?: number;
  durationMs?: number;
}
