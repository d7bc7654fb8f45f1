/**
 * The first option given more than once in `args` (`--to a --to b`, `--json --no-json`), by its long
 * name; null when none is. No option of the CLI takes several values, and which of two a user meant is
 * not ours to guess: the parser refuses the repeat rather than keep the last (yargs' switch for that,
 * `duplicate-arguments-array: false`, also kept only the last of a variadic positional, so
 * `backup copy A B` copied B alone). Arguments after `--` are not options.
 */
export function repeatedFlag(args: readonly string[]): string | null {
  const seen = new Set<string>();
  for (const arg of args) {
    if (arg === '--') break;
    if (!arg.startsWith('--')) continue;
    const name = kebab(arg.slice(2).split('=', 1)[0]!).replace(/^no-/, '');
    if (seen.has(name)) return name;
    seen.add(name);
  }
  return null;
}

/** yargs takes `--limitUpload` for `--limit-upload`: one option either way. */
function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
