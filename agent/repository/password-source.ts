import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import type { PasswordSource } from './repository-keys.js';

/** The environment variable naming a password file, for the CLI and the example node alike. */
export const PASSWORD_FILE_ENV = 'NODE_ADMIN_PASSWORD_FILE';
/** The systemd credential's name (`LoadCredential=node-admin-password:/path`), read from $CREDENTIALS_DIRECTORY. */
export const PASSWORD_CREDENTIAL = 'node-admin-password';
/** A password longer than this is not one (a file named by mistake: a database, a log). */
const MAX_PASSWORD_BYTES = 4096;
/** A --password-command that has not answered by then is stopped. */
const COMMAND_TIMEOUT_MS = 60_000;

/** How an operator gives a repository's password: a file, or a command (a secrets manager) that prints it. */
export interface PasswordOptions {
  file?: string | null;
  command?: string | null;
}

/**
 * The password source an operator's flags and environment name, the first of: an explicit
 * `file` (--password-file), an explicit `command` (--password-command), the file named by
 * NODE_ADMIN_PASSWORD_FILE, the systemd credential `node-admin-password`. Null when none is given.
 * Nothing is read until the source is called (an unencrypted repository never asks).
 */
export function passwordSource(o: PasswordOptions, env: NodeJS.ProcessEnv = process.env): PasswordSource | null {
  if (o.file && o.command) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, 'give the password by a file or by a command, not both');
  if (o.file) return () => readPasswordFile(o.file!, '--password-file');
  if (o.command) return () => runPasswordCommand(o.command!);
  const fromEnv = env[PASSWORD_FILE_ENV];
  if (fromEnv) return () => readPasswordFile(fromEnv, PASSWORD_FILE_ENV);
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (credentials && fs.existsSync(path.join(credentials, PASSWORD_CREDENTIAL))) {
    return () => readPasswordFile(path.join(credentials, PASSWORD_CREDENTIAL), `the systemd credential ${PASSWORD_CREDENTIAL}`);
  }
  return null;
}

/** Where passwordSource would take the password from, for status and logs (never the password); null: nowhere. */
export function describePassword(o: PasswordOptions, env: NodeJS.ProcessEnv = process.env): string | null {
  if (o.file) return `file ${o.file}`;
  if (o.command) return 'command';
  if (env[PASSWORD_FILE_ENV]) return `file ${env[PASSWORD_FILE_ENV]} (${PASSWORD_FILE_ENV})`;
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (credentials && fs.existsSync(path.join(credentials, PASSWORD_CREDENTIAL))) return `systemd credential ${PASSWORD_CREDENTIAL}`;
  return null;
}

/** A password file's content without its one trailing newline. Never says what it holds. */
export async function readPasswordFile(file: string, what: string): Promise<Buffer> {
  let data: Buffer;
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${what}: ${file} is not a file`);
    if (st.size > MAX_PASSWORD_BYTES) throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `${what}: ${file} is ${st.size} bytes, longer than a password (${MAX_PASSWORD_BYTES})`);
    data = await fs.promises.readFile(file);
  } catch (err) {
    if (err instanceof AdminError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new AdminError(ErrorCodes.PASSWORD_REQUIRED, `${what}: cannot read ${file}${code ? ` (${code})` : ''}`);
  }
  return nonEmpty(trimNewline(data), `${what}: ${file} is empty`);
}

/** What `command` prints on stdout (run by /bin/sh), without its trailing newline. Its stderr goes to ours. */
export function runPasswordCommand(command: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    let size = 0;
    const fail = (why: string) => {
      child.kill('SIGKILL');
      reject(new AdminError(ErrorCodes.PASSWORD_REQUIRED, `--password-command ${why}`));
    };
    const timer = setTimeout(() => fail(`did not finish within ${COMMAND_TIMEOUT_MS / 1000} s`), COMMAND_TIMEOUT_MS);
    child.stdout.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_PASSWORD_BYTES) fail(`printed more than ${MAX_PASSWORD_BYTES} bytes`);
      else chunks.push(c);
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new AdminError(ErrorCodes.PASSWORD_REQUIRED, `--password-command could not run: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new AdminError(ErrorCodes.PASSWORD_REQUIRED, `--password-command failed (${signal ?? `exit ${code}`})`));
      try {
        resolve(nonEmpty(trimNewline(Buffer.concat(chunks)), '--password-command printed nothing'));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

function trimNewline(b: Buffer): Buffer {
  if (b.length > 0 && b[b.length - 1] === 0x0a) b = b.subarray(0, b.length - (b.length > 1 && b[b.length - 2] === 0x0d ? 2 : 1));
  return b;
}

function nonEmpty(b: Buffer, message: string): Buffer {
  if (b.length === 0) throw new AdminError(ErrorCodes.PASSWORD_REQUIRED, message);
  return b;
}
