// Loaded with `node --import`: records every module the process loads, one URL a line, in the file
// $RECORD_IMPORTS names. The offline-imports test reads it to see what a command pulled in.
import { register } from 'node:module';

register(new URL('./record-imports-hooks.mjs', import.meta.url), { data: { file: process.env.RECORD_IMPORTS } });
