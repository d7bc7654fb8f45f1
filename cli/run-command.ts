import { AdminError, ErrorCodes, exitCodeFor, toAdminError } from '../shared/errors.js';
import type { Io } from './output.js';

/**
 * The one place where the CLI catches errors. Whatever `fn` throws becomes one line on stderr,
 * `node-admin: <message> (<CODE>)` (or `{"error":{"code":...,"message":...}}` with --json), and the exit
 * code of its class (exitCodeFor). Never a stack trace; anything that is not an AdminError is INTERNAL.
 * `fn` resolves with an exit code of its own, or nothing for success.
 */
export async function runCommand(io: Io, json: boolean, fn: () => Promise<number | void>): Promise<number> {
  try {
    return (await fn()) ?? 0;
  } catch (err) {
    return reportError(io, json, err);
  }
}

/** Prints the error line for `err` and returns the exit code. Never throws. */
export function reportError(io: Io, json: boolean, err: unknown): number {
  let e: AdminError;
  try {
    e = toAdminError(err);
  } catch {
    e = new AdminError(ErrorCodes.INTERNAL, 'unexpected failure');
  }
  try {
    io.stderr.write(json ? `${JSON.stringify(e.toJSON())}\n` : `node-admin: ${e.message} (${e.code})\n`);
  } catch {
    // Nowhere left to report to; the exit code still tells.
  }
  return exitCodeFor(e.code);
}

/** A usage error: malformed flags or arguments (exit 2). */
export function invalidArgument(message: string): AdminError {
  return new AdminError(ErrorCodes.INVALID_ARGUMENT, message);
}
