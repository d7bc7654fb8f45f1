/*
 * The example node's entry. CommonJS on purpose: libuv sizes its thread pool once, at its first job,
 * from UV_THREADPOOL_SIZE, and on Node 20 the loader reads an ES module entry through that pool before
 * any of the module's code runs, so an ES module entry can no longer size it. A CommonJS entry is read
 * synchronously: the pool starts at the size set here, and an operator's own setting wins. 32 threads:
 * classic-level's reads and writes share the pool with a backup's, which takes a quarter of it
 * (backup-checkpoint.ts, defaultReaders).
 */
process.env.UV_THREADPOOL_SIZE ??= '32';
void import('./start.js');
