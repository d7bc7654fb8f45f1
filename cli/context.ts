import { existsSync } from 'node:fs';
import type { CommandContext, GlobalArgs } from './command.js';
import type { Io } from './output.js';
import { invalidArgument } from './run-command.js';
import { resolveSocketPath, SOCKET_ENV } from './socket-path.js';

export interface CliIo extends Io {
  /** Environment for $NODE_ADMIN_SOCKET; process.env when absent. */
  env?: Record<string, string | undefined>;
}

export function makeContext(argv: GlobalArgs, io: CliIo): CommandContext {
  // Global flags are checked before any command does I/O.
  if (argv.socket !== undefined && argv.socket === '') throw invalidArgument('--socket needs a path');
  let timeoutMs: number | undefined;
  if (argv.timeout !== undefined) {
    if (!Number.isFinite(argv.timeout) || argv.timeout <= 0) throw invalidArgument('--timeout must be a positive number of seconds');
    timeoutMs = Math.ceil(argv.timeout * 1000);
  }
  const env = io.env ?? process.env;
  return {
    io,
    json: argv.json,
    async agent() {
      const socketPath = resolveSocketPath(argv.socket, env[SOCKET_ENV], existsSync);
      const { SocketClient } = await import('../shared/socket-client.js');
      return new SocketClient({ socketPath, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    },
  };
}

