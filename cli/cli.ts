import { readFileSync } from 'node:fs';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { AdminError, ErrorCodes } from '../shared/errors.js';
import type { CommandContext, GlobalArgs } from './command.js';
import { backupGroup } from './commands/backup.js';
import { checkpointGroup } from './commands/checkpoint.js';
import { metricsCommand } from './commands/metrics.js';
import { statusCommand } from './commands/status.js';
import type { Writer } from './output.js';
import { repeatedFlag } from './repeated-flag.js';
import { invalidArgument, runCommand } from './run-command.js';
import { SOCKET_ENV } from './socket-path.js';
import { makeContext, type CliIo } from './context.js';

export type { CliIo } from './context.js';

type Selected = ((ctx: CommandContext) => Promise<void>) | null;

interface Parsed {
  argv: GlobalArgs | undefined;
  /** The chosen command's work; null when a group was given without subcommand; undefined when none ran. */
  selected: Selected | undefined;
  /** What yargs printed itself (--help, --version). */
  output: string;
}

/**
 * Runs the CLI for `args` (process.argv.slice(2)) and resolves with the exit code; never rejects,
 * never exits the process. Exit codes: 0 ok, 2 usage, else exitCodeFor(error code) (shared/errors.ts).
 */
export async function main(args: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  // Before parsing we do not know --json yet, but a usage error must already be printed in the right shape.
  const json = wantsJson(args);
  return runCommand(io, json, async () => {
    const repeated = repeatedFlag(args);
    if (repeated !== null) throw invalidArgument(`--${repeated} is given more than once; give it once`);
    const parsed = parse(args);
    if (parsed.selected === undefined) {
      if (parsed.output !== '') {
        // --help or --version.
        writeText(io.stdout, parsed.output);
        return 0;
      }
      return showHelpForUsage(args, io.stderr);
    }
    if (parsed.selected === null) return showHelpForUsage(args, io.stderr);
    const argv = parsed.argv;
    if (argv === undefined) throw new AdminError(ErrorCodes.INTERNAL, 'arguments were not parsed');
    const ctx = makeContext(argv, io);
    await parsed.selected(ctx);
    return 0;
  });
}

function build(onSelect: (run: Selected) => void): Argv<GlobalArgs> {
  let y: Argv<GlobalArgs> = yargs()
    .scriptName('node-admin')
    .usage('$0 <command> [options]\n\nAdmin CLI of a node\'s checkpoint agent (talks to its admin socket) and its remote backups.')
    .option('socket', {
      type: 'string',
      describe: `Admin socket (default: $${SOCKET_ENV}, else ./var/run/admin.sock or /run/node-admin/admin.sock)`,
      global: true,
    })
    .option('json', { type: 'boolean', default: false, describe: 'Print one JSON document on stdout; errors as JSON on stderr', global: true })
    .option('timeout', { type: 'number', describe: 'Give up on the agent after this many seconds', global: true })
    .strict()
    .strictCommands()
    .exitProcess(false)
    .fail((msg, err) => {
      // yargs' own failures (unknown command/flag, missing argument): one line, exit 2.
      if (err instanceof AdminError) throw err;
      throw invalidArgument(`${msg || err?.message || 'invalid arguments'}; see node-admin --help`);
    })
    .help()
    .alias('help', 'h')
    .version(readVersion())
    .epilogue(
      'Exit codes: 0 ok, 1 internal error, 2 usage, 3 not found, 4 conflict (pinned, locked, backups not configured), ' +
        '5 agent or storage unavailable or busy, 6 out of space, 7 corrupt, 130 cancelled.',
    ) as unknown as Argv<GlobalArgs>;
  y = statusCommand.attach(y, onSelect);
  y = checkpointGroup.attach(y, onSelect);
  y = backupGroup.attach(y, onSelect);
  y = metricsCommand.attach(y, onSelect);
  return y;
}

function parse(args: readonly string[]): Parsed {
  let selected: Selected | undefined;
  let output = '';
  let parseError: unknown;
  const y = build((run) => {
    selected = run;
  });
  const argv = y.parse([...args], {}, (err, _argv, out) => {
    parseError = err ?? undefined;
    output = out;
  }) as GlobalArgs;
  if (parseError !== undefined) throw parseError;
  return { argv, selected, output };
}

/** A command group (or nothing) given without a command: its help on stderr, exit 2. */
function showHelpForUsage(args: readonly string[], stderr: Writer): number {
  const positionals = args.filter((a) => !a.startsWith('-'));
  const { output } = parse([...positionals, '--help']);
  writeText(stderr, output);
  return 2;
}

function writeText(out: Writer, text: string): void {
  out.write(text.endsWith('\n') ? text : `${text}\n`);
}

function wantsJson(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') break;
    if (a === '--json' || a === '--json=true') return true;
  }
  return false;
}

let version: string | undefined;

/** The package's version, from the package.json above this file (dist/cli/ or cli/ when run from source). */
function readVersion(): string {
  if (version !== undefined) return version;
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'node-admin' && typeof pkg.version === 'string') return (version = pkg.version);
    } catch {
      // try the next one
    }
  }
  return (version = 'unknown');
}
