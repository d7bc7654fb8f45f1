/**
 * Imported first by the CLI and the example node, before anything can touch libuv's thread pool: a restore or
 * verify keeps many reads, writes and fsyncs in flight, and the default pool of 4 threads would make
 * them queue behind each other. An operator's own UV_THREADPOOL_SIZE wins.
 */
process.env.UV_THREADPOOL_SIZE ??= '32';
