/**
 * Every error node-admin shows a user, in one place.
 *
 * Each error has a stable string `code` (scripts match on it; never rename one), a one-line human
 * message, an HTTP status for the admin socket and an exit code for the CLI. Both mappings live here
 * and nowhere else.
 */

export const ErrorCodes = {
  /** A request or flag is malformed: bad id, bad JSON, a value out of range. */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** The request body is not valid JSON. */
  INVALID_JSON: 'INVALID_JSON',
  /** The request body is larger than the admin socket accepts. */
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  /** No such route (or an unknown API version). */
  ROUTE_NOT_FOUND: 'ROUTE_NOT_FOUND',
  /** The route exists but not with this method. */
  METHOD_NOT_ALLOWED: 'METHOD_NOT_ALLOWED',
  /** No checkpoint (or database, or directory) by that name. */
  NOT_FOUND: 'NOT_FOUND',
  /** The checkpoint is pinned; deleting it needs force. */
  CHECKPOINT_PINNED: 'CHECKPOINT_PINNED',
  /** The database is open by a running process (its LevelDB LOCK is held). */
  DATABASE_LOCKED: 'DATABASE_LOCKED',
  /** Too many checkpoint requests are already queued. */
  BUSY: 'BUSY',
  /** The operation was cancelled before it finished; nothing was kept. */
  CANCELLED: 'CANCELLED',
  /** Not enough free space on the checkpoint filesystem (the free-space guard, or ENOSPC). */
  INSUFFICIENT_SPACE: 'INSUFFICIENT_SPACE',
  /** A checkpoint or database failed verification. */
  CORRUPT: 'CORRUPT',
  /** Another live agent already serves this socket path. */
  SOCKET_IN_USE: 'SOCKET_IN_USE',
  /** The socket's directory is not safe (wrong owner or too permissive). */
  SOCKET_DIR_UNSAFE: 'SOCKET_DIR_UNSAFE',
  /** The CLI could not reach the agent (not running, wrong --socket). */
  AGENT_UNAVAILABLE: 'AGENT_UNAVAILABLE',
  /** The agent is stopping and takes no new work. */
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  /** The client was too slow to send its request. */
  REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  /** The agent answered something the CLI does not understand. */
  PROTOCOL_ERROR: 'PROTOCOL_ERROR',
  /** The backup storage did not answer usably (5xx, throttling, resets, timeouts), even after retries: try later. */
  STORAGE_UNAVAILABLE: 'STORAGE_UNAVAILABLE',
  /**
   * The backup storage refused the request and retrying will not help: access denied, bad credentials, no
   * such bucket, a request it does not accept. Almost always configuration.
   */
  STORAGE_REFUSED: 'STORAGE_REFUSED',
  /** No backup repository at that URL. */
  REPOSITORY_NOT_FOUND: 'REPOSITORY_NOT_FOUND',
  /** Another operation holds a conflicting lock on the backup repository. */
  REPOSITORY_LOCKED: 'REPOSITORY_LOCKED',
  /** A backup operation was asked of an agent that has no backup repository configured. */
  BACKUP_NOT_CONFIGURED: 'BACKUP_NOT_CONFIGURED',
  /**
   * A restore to a moment asked for one the log archive cannot restore exactly: before its first base,
   * in a gap between timelines, after the last archived batch, or there is no log archive at all.
   */
  MOMENT_NOT_RESTORABLE: 'MOMENT_NOT_RESTORABLE',
  /**
   * The backup repository is encrypted (or a new one would be) and no password was given: `--password-file`,
   * `--password-command`, NODE_ADMIN_PASSWORD_FILE, a systemd credential, or the agent's backup.password.
   */
  PASSWORD_REQUIRED: 'PASSWORD_REQUIRED',
  /** No key of the backup repository opens with the password given (a wrong password, or damaged keys). */
  WRONG_PASSWORD: 'WRONG_PASSWORD',
  /**
   * New data would go unencrypted and that was not said explicitly: a repository made with
   * `--insecure-no-encryption`, or one of format 2, written without the flag that allows it.
   */
  PLAINTEXT_REFUSED: 'PLAINTEXT_REFUSED',
  /** A bug or an unexpected failure of the system. */
  INTERNAL: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const httpStatusByCode: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  INVALID_JSON: 400,
  PAYLOAD_TOO_LARGE: 413,
  ROUTE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  NOT_FOUND: 404,
  CHECKPOINT_PINNED: 409,
  DATABASE_LOCKED: 409,
  BUSY: 503,
  CANCELLED: 409,
  INSUFFICIENT_SPACE: 507,
  CORRUPT: 422,
  SOCKET_IN_USE: 409,
  SOCKET_DIR_UNSAFE: 500,
  AGENT_UNAVAILABLE: 503,
  SHUTTING_DOWN: 503,
  REQUEST_TIMEOUT: 408,
  PROTOCOL_ERROR: 502,
  STORAGE_UNAVAILABLE: 503,
  STORAGE_REFUSED: 502,
  REPOSITORY_NOT_FOUND: 404,
  REPOSITORY_LOCKED: 409,
  BACKUP_NOT_CONFIGURED: 409,
  MOMENT_NOT_RESTORABLE: 404,
  PASSWORD_REQUIRED: 401,
  WRONG_PASSWORD: 403,
  PLAINTEXT_REFUSED: 409,
  INTERNAL: 500,
};

/**
 * CLI exit codes, one per class of error so that hooks and cron can branch on them.
 * 0 success; 1 internal; 2 usage / bad input (including storage refusing the configured credentials or
 * bucket); 3 not found; 4 conflict (pinned, locked, in use); 5 agent or storage unavailable or busy (try
 * again later); 6 out of space; 7 corrupt; 8 a password is missing or wrong; 130 cancelled.
 */
export const ExitCodes = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  CONFLICT: 4,
  UNAVAILABLE: 5,
  NO_SPACE: 6,
  CORRUPT: 7,
  PASSWORD: 8,
  CANCELLED: 130,
} as const;

const exitCodeByCode: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: ExitCodes.USAGE,
  INVALID_JSON: ExitCodes.USAGE,
  PAYLOAD_TOO_LARGE: ExitCodes.USAGE,
  ROUTE_NOT_FOUND: ExitCodes.USAGE,
  METHOD_NOT_ALLOWED: ExitCodes.USAGE,
  NOT_FOUND: ExitCodes.NOT_FOUND,
  CHECKPOINT_PINNED: ExitCodes.CONFLICT,
  DATABASE_LOCKED: ExitCodes.CONFLICT,
  SOCKET_IN_USE: ExitCodes.CONFLICT,
  SOCKET_DIR_UNSAFE: ExitCodes.CONFLICT,
  BUSY: ExitCodes.UNAVAILABLE,
  AGENT_UNAVAILABLE: ExitCodes.UNAVAILABLE,
  SHUTTING_DOWN: ExitCodes.UNAVAILABLE,
  REQUEST_TIMEOUT: ExitCodes.UNAVAILABLE,
  STORAGE_UNAVAILABLE: ExitCodes.UNAVAILABLE,
  STORAGE_REFUSED: ExitCodes.USAGE,
  INSUFFICIENT_SPACE: ExitCodes.NO_SPACE,
  CORRUPT: ExitCodes.CORRUPT,
  CANCELLED: ExitCodes.CANCELLED,
  PROTOCOL_ERROR: ExitCodes.INTERNAL,
  REPOSITORY_NOT_FOUND: ExitCodes.NOT_FOUND,
  REPOSITORY_LOCKED: ExitCodes.CONFLICT,
  BACKUP_NOT_CONFIGURED: ExitCodes.CONFLICT,
  MOMENT_NOT_RESTORABLE: ExitCodes.NOT_FOUND,
  PASSWORD_REQUIRED: ExitCodes.PASSWORD,
  WRONG_PASSWORD: ExitCodes.PASSWORD,
  PLAINTEXT_REFUSED: ExitCodes.CONFLICT,
  INTERNAL: ExitCodes.INTERNAL,
};

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(httpStatusByCode, value);
}

export function httpStatusFor(code: ErrorCode): number {
  return httpStatusByCode[code];
}

export function exitCodeFor(code: ErrorCode): number {
  return exitCodeByCode[code];
}

/** The one error type that crosses the socket and reaches a user. `message` is one line. */
export class AdminError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(oneLine(message), options);
    this.name = 'AdminError';
    this.code = code;
  }
  toJSON(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

/** The JSON body of every error answer on the admin socket. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * Turns anything thrown into an AdminError. Known system errors get their own code; anything else is
 * INTERNAL with its message (never its stack).
 */
export function toAdminError(err: unknown): AdminError {
  if (err instanceof AdminError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  const message = e && typeof e.message === 'string' ? e.message : String(err);
  switch (e?.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new AdminError(ErrorCodes.INSUFFICIENT_SPACE, `no space left on device: ${message}`, { cause: err });
    case 'LEVEL_LOCKED':
      return new AdminError(ErrorCodes.DATABASE_LOCKED, `database is locked by another process: ${message}`, { cause: err });
    default:
      return new AdminError(ErrorCodes.INTERNAL, message, { cause: err });
  }
}
