// Loaded with `node --import`: records every module the process loads, one URL a line, in the file
// $RECORD_IMPORTS names: the modules resolved through the loader, and at exit the built-in modules
// Node loaded for the process (as `node:internal/...`: they never pass the loader, e.g. undici behind a
// lazy export). The import tests (support/recorded-run.ts) read it to see what a command pulled in.
import { appendFileSync } from 'node:fs';
import module from 'node:module';

const file = process.env.RECORD_IMPORTS;

/**
 * @typedef {{ url: string }} Resolved
 * @typedef {{ registerHooks?: (hooks: { resolve: (specifier: string, context: unknown, next: (specifier: string, context: unknown) => Resolved) => Resolved }) => unknown }} WithRegisterHooks
 */
const withHooks = /** @type {WithRegisterHooks} */ (/** @type {unknown} */ (module));
if (withHooks.registerHooks) {
  // Node 22.15 and later: hooks on this thread. Node 26 deprecates register() with a warning on stderr,
  // which the tests that read stderr would take for the command's.
  withHooks.registerHooks({
    resolve(specifier, context, next) {
      const result = next(specifier, context);
      if (file) appendFileSync(file, `${result.url}\n`);
      return result;
    },
  });
} else {
  module.register(new URL('./record-imports-hooks.mjs', import.meta.url), { data: { file } });
}

if (file) {
  // process.moduleLoadList is Node's own record (undocumented, there since Node's first releases); the
  // fast-path test checks that it is still there.
  const loaded = /** @type {{ moduleLoadList?: string[] }} */ (/** @type {unknown} */ (process));
  process.on('exit', () => {
    const builtins = (loaded.moduleLoadList ?? []).filter((m) => m.startsWith('NativeModule ')).map((m) => `node:${m.slice('NativeModule '.length)}\n`);
    appendFileSync(file, builtins.join(''));
  });
}
