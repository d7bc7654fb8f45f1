/**
 * Imported first by the benchmarks' runners that host an agent: a backup or restore keeps many reads,
 * writes and fsyncs in flight, and libuv's default pool of 4 threads would make them queue behind each
 * other and behind the host's own I/O. An operator's own UV_THREADPOOL_SIZE wins.
 *
 * It works on Node 22 and later only: Node 20's loader reads an ES module entry through the pool, which
 * starts it at its size then, before any of the module's code runs. The CLI and the example node have
 * CommonJS entries for that reason (cli/main.cts, agent/example-node/main.cts), and `npm run bench`
 * sets the variable before each runner starts.
 */
process.env.UV_THREADPOOL_SIZE ??= '32';
