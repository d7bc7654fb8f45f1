// The CLI process, once main.cts has sized libuv's pool.
import './heap-flags.js'; // before the first allocation worth collecting
import { fastPath } from './fast-path.js';

// `node-admin checkpoint list | head`: a closed pipe is not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && !process.exitCode) process.exitCode = 1;
  });
}

// Never process.exit(): let stdout drain, then leave with the code.
const args = process.argv.slice(2);
const io = { stdout: process.stdout, stderr: process.stderr };
process.exitCode = (await fastPath(args, io)) ?? (await (await import('./cli.js')).main(args, io));
