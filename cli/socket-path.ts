import { DEFAULT_SOCKET_PATH, SYSTEM_SOCKET_PATH } from '../shared/api.js';

/** The variable that names the socket when `--socket` is not given. */
export const SOCKET_ENV = 'NODE_ADMIN_SOCKET';

/**
 * Which admin socket the CLI talks to:
 * `--socket` > `$NODE_ADMIN_SOCKET` > the first of DEFAULT_SOCKET_PATH (relative to the working directory,
 * where the example node puts it) and SYSTEM_SOCKET_PATH (the systemd unit's) that exists > DEFAULT_SOCKET_PATH.
 * Empty values count as not given. `exists` is injected so this stays testable without a filesystem.
 */
export function resolveSocketPath(
  flag: string | undefined,
  env: string | undefined,
  exists: (path: string) => boolean,
): string {
  if (flag !== undefined && flag !== '') return flag;
  if (env !== undefined && env !== '') return env;
  for (const candidate of [DEFAULT_SOCKET_PATH, SYSTEM_SOCKET_PATH]) {
    if (exists(candidate)) return candidate;
  }
  return DEFAULT_SOCKET_PATH;
}
