import type { Argv, ArgumentsCamelCase } from 'yargs';
import { LABEL_MAX_LENGTH, parseCheckpointId, parseLabel } from '../shared/input-rules.js';
import type { SocketClient } from '../shared/socket-client.js';
import { invalidArgument } from './run-command.js';
import type { Io } from './output.js';

/** Options every command accepts. */
export interface GlobalArgs {
  socket: string | undefined;
  json: boolean;
  timeout: number | undefined;
}

/** What a command's run() gets besides its arguments. */
export interface CommandContext {
  io: Io;
  /** `--json`: print exactly one JSON document on stdout. */
  json: boolean;
  /** A client of the agent's socket (resolved from --socket / $NODE_ADMIN_SOCKET / defaults); loaded on first use. */
  agent(): Promise<SocketClient>;
}

export type CommandArgs<A> = ArgumentsCamelCase<A>;

export interface CommandSpec<A> {
  /** yargs command string, e.g. `show <id>`. */
  command: string;
  describe: string;
  builder: (y: Argv<GlobalArgs>) => Argv<A>;
  /** Validates (before any I/O), does the work, prints the result. Throws AdminError on failure. */
  run: (argv: CommandArgs<A>, ctx: CommandContext) => Promise<void>;
}

/** A command with its argument type erased, ready to hang on a yargs instance. */
export interface CliCommand {
  command: string;
  attach(y: Argv<GlobalArgs>, select: (run: (ctx: CommandContext) => Promise<void>) => void): Argv<GlobalArgs>;
  /** Runs the command with arguments parsed elsewhere, shaped as yargs would shape them (fast-path.ts). */
  run(argv: Record<string, unknown>, ctx: CommandContext): Promise<void>;
}

/**
 * Every command file exports `defineCommand({...})`. The yargs handler does no work: it only records which
 * command was chosen, so that parsing stays synchronous and the work runs inside runCommand.
 */
export function defineCommand<A>(spec: CommandSpec<A>): CliCommand {
  return {
    command: spec.command,
    attach: (y, select) =>
      y.command(spec.command, spec.describe, spec.builder, (argv) => {
        select((ctx) => spec.run(argv, ctx));
      }) as Argv<GlobalArgs>,
    run: (argv, ctx) => spec.run(argv as CommandArgs<A>, ctx),
  };
}

/** A command group (`checkpoint …`, `backup …`). Chosen without a subcommand, it selects null: the caller shows help (exit 2). */
export function defineGroup(name: string, describe: string, subcommands: readonly CliCommand[]) {
  return {
    command: name,
    attach(y: Argv<GlobalArgs>, select: (run: ((ctx: CommandContext) => Promise<void>) | null) => void): Argv<GlobalArgs> {
      return y.command(
        name,
        describe,
        (sub) => {
          let s = sub;
          for (const c of subcommands) s = c.attach(s, select);
          return s;
        },
        () => select(null),
      ) as Argv<GlobalArgs>;
    },
  };
}

// ---- validation at the edge, before any I/O ----

/** A checkpoint id given as the `<id>` argument. */
export function requireCheckpointId(value: unknown): string {
  return parseCheckpointId(value, 'the argument');
}

/** --label: the label rule (shared/input-rules.ts); given, it must not be empty (a flag is given for a reason). */
export function requireLabel(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (value === '') throw invalidArgument(`--label must not be empty (1 to ${LABEL_MAX_LENGTH} characters)`);
  return parseLabel(value, '--label') ?? undefined;
}

/** A directory flag given explicitly: must not be empty. */
export function requireDir(flag: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') throw invalidArgument(`--${flag} needs a directory`);
  return value;
}

/** Lazy: the offline functions pull in classic-level, which only offline commands need. */
export function loadOffline(): Promise<typeof import('../agent/offline.js')> {
  return import('../agent/offline.js');
}
