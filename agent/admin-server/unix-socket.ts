import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { AdminError, ErrorCodes } from '../../shared/errors.js';

/**
 * The socket's directory is the real gate (Node has no SO_PEERCRED): 0700, or 0750 with the operator
 * group. An existing directory is used only if it is ours and no looser than that; it is never
 * loosened beyond it (a socket in /tmp would otherwise chmod /tmp).
 */
export function prepareSocketDir(socketPath: string, group: number | null): void {
  const dir = path.dirname(socketPath);
  const mode = group === null ? 0o700 : 0o750;
  let created = false;
  try {
    fs.mkdirSync(dir, { mode });
    created = true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 });
      fs.mkdirSync(dir, { mode });
      created = true;
    } else if (code !== 'EEXIST') {
      throw err;
    }
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new AdminError(ErrorCodes.SOCKET_DIR_UNSAFE, `socket directory ${dir} is not a directory`);
  const uid = process.getuid?.() ?? st.uid;
  if (st.uid !== uid) {
    throw new AdminError(ErrorCodes.SOCKET_DIR_UNSAFE, `socket directory ${dir} belongs to uid ${st.uid}, not to this process (uid ${uid}); use a directory of its own`);
  }
  const perms = st.mode & 0o7777;
  if (!created && (perms & ~0o750) !== 0) {
    throw new AdminError(
      ErrorCodes.SOCKET_DIR_UNSAFE,
      `socket directory ${dir} has mode ${perms.toString(8).padStart(4, '0')}; it must be 0700 (or 0750 with a socket group): chmod it or use a directory of its own`,
    );
  }
  if (group !== null && st.gid !== group) fs.chownSync(dir, -1, group);
  // umask may have trimmed mkdir's mode; a group needs its r-x, nobody else gets anything.
  if (created || perms !== mode) fs.chmodSync(dir, mode);
}

/** Resolves a group name or number to a gid. */
export function resolveGroup(group: string | number | null): number | null {
  if (group === null || group === '') return null;
  if (typeof group === 'number') return group;
  if (/^\d+$/.test(group)) return Number(group);
  try {
    const out = execFileSync('getent', ['group', group], { encoding: 'utf8' });
    const gid = Number(out.split(':')[2]);
    if (Number.isInteger(gid)) return gid;
  } catch {
    // fall through
  }
  throw new AdminError(ErrorCodes.INVALID_ARGUMENT, `unknown group ${JSON.stringify(group)}`);
}

/**
 * Makes `socketPath` free for a new listener: a live agent there is SOCKET_IN_USE (never steal it);
 * a socket file nobody answers on (left by a kill -9) is removed; anything else is refused.
 */
export async function clearStaleSocket(socketPath: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new AdminError(ErrorCodes.SOCKET_IN_USE, `${socketPath} exists and is not a socket; refusing to replace it`);
  }
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new AdminError(ErrorCodes.SOCKET_IN_USE, `another agent is already listening on ${socketPath}`);
  fs.unlinkSync(socketPath);
}
