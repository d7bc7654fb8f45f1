/*
 * The example node's entry. CommonJS on purpose: libuv sizes its thread pool once, at its first job,
 * from UV_THREADPOOL_SIZE, and on Node 20 the loader reads an ES module entry through that pool before
 * any of the module's code runs, so an ES module entry can no longer size it. A CommonJS entry is read
 * synchronously: the pool starts at the size set here, and an operator's own setting wins. 32 threads:
 * classic-level's reads and writes share the pool with a backup's, which takes a quarter of it
 * (backup-checkpoint.ts, defaultReaders).
 */
process.env.UV_THREADPOOL_SIZE ??= '32';
/*
 * The AWS SDK's own notice that its releases after January 2027 need Node 22 or later: nine lines on
 * stderr at the first S3 request on Node 20, amid the node's JSON log lines. The SDK here is pinned
 * (README, "Dependencies"), so the notice asks nothing of the operator. An operator's own setting wins
 * (a host that embeds the agent keeps its own: only this example's process is set).
 */
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
void import('./start.js');
