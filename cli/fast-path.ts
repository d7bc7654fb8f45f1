import { parseArgs } from 'node:util';
import type { CliCommand } from './command.js';
import { makeContext, type CliIo } from './context.js';
import { repeatedFlag } from './repeated-flag.js';
import { runCommand } from './run-command.js';

/**
 * The commands that hooks, cron and scripts run most (`status`, `metrics`, `checkpoint list|show|create` through
 * the agent), parsed with node:util instead of yargs: importing yargs costs ~200 ms of every start
 * (cliui's Unicode tables), which is most of a pre-upgrade hook's budget. Returns null for anything it
 * does not take exactly — help, version, unknown or malformed flags, offline mode — and the full parser
 * (cli.ts) handles it, with every usage message. The commands themselves are the same code.
 */
export async function fastPath(args: readonly string[], io: CliIo): Promise<number | null> {
  if (args.some((a) => a === '--' || a === '-h' || a === '--help' || a === '--version') || repeatedFlag(args) !== null) return null;
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: [...args], options: OPTIONS, allowPositionals: true, strict: true });
  } catch {
    return null;
  }
  const { values, positionals } = parsed;
  const route = pick(positionals);
  if (!route) return null;
  const extra = positionals.slice(route.words);
  if (extra.length !== route.positionals.length) return null;
  for (const flag of Object.keys(values)) if (!GLOBAL.has(flag) && !route.flags.includes(flag)) return null;
  if (values.timeout !== undefined && !/^\d+(\.\d+)?$/.test(values.timeout)) return null;
  const json = values.json === true;
  const argv: Record<string, unknown> = {
    _: positionals.slice(0, route.words),
    $0: 'node-admin',
    json,
    socket: values.socket,
    timeout: values.timeout === undefined ? undefined : Number(values.timeout),
    ...(route.flags.includes('label') ? { label: values.label } : {}),
    ...(route.flags.includes('pin') ? { pin: values.pin === true } : {}),
  };
  route.positionals.forEach((name, i) => (argv[name] = extra[i]));
  const command = await route.load();
  return runCommand(io, json, async () => {
    await command.run(argv, makeContext(argv as { socket: string | undefined; json: boolean; timeout: number | undefined }, io));
  });
}

const OPTIONS = {
  json: { type: 'boolean' },
  socket: { type: 'string' },
  timeout: { type: 'string' },
  label: { type: 'string' },
  pin: { type: 'boolean' },
} as const;

const GLOBAL = new Set(['json', 'socket', 'timeout']);

interface Route {
  words: number;
  positionals: string[];
  flags: string[];
  load: () => Promise<CliCommand>;
}

function pick(words: readonly string[]): Route | null {
  if (words[0] === 'status') return { words: 1, positionals: [], flags: [], load: async () => (await import('./commands/status.js')).statusCommand };
  if (words[0] === 'metrics') return { words: 1, positionals: [], flags: [], load: async () => (await import('./commands/metrics.js')).metricsCommand };
  if (words[0] !== 'checkpoint') return null;
  switch (words[1]) {
    case 'list':
      return { words: 2, positionals: [], flags: [], load: async () => (await import('./commands/checkpoint-list.js')).checkpointListCommand };
    case 'show':
      return { words: 2, positionals: ['id'], flags: [], load: async () => (await import('./commands/checkpoint-show.js')).checkpointShowCommand };
    case 'create':
      return { words: 2, positionals: [], flags: ['label', 'pin'], load: async () => (await import('./commands/checkpoint-create.js')).checkpointCreateCommand };
    default:
      return null;
  }
}
