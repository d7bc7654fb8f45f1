#!/usr/bin/env node
import { main } from './cli.js';

// `node-admin checkpoint list | head`: a closed pipe is not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && !process.exitCode) process.exitCode = 1;
  });
}

// Never process.exit(): let stdout drain, then leave with the code.
process.exitCode = await main(process.argv.slice(2));
