import fs from 'node:fs';
import path from 'node:path';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { parseDbFileName } from './file-names.js';
import { parseLog } from './log-reader.js';
import { checkTableSync } from './table-check.js';

export interface FileCheck {
  tables: number;
  blocks: number;
  logs: number;
  bytes: number;
}

/**
 * Checks every checksum in a (closed) database directory: each table block, each MANIFEST and WAL
 * record (a WAL or MANIFEST cut at its end is whole, as LevelDB reads it). Read-only.
 * Throws CORRUPT naming the file.
 */
export function checkDbFilesSync(dir: string): FileCheck {
  const result: FileCheck = { tables: 0, blocks: 0, logs: 0, bytes: 0 };
  for (const name of fs.readdirSync(dir).sort()) {
    const kind = parseDbFileName(name)?.kind;
    const file = path.join(dir, name);
    try {
      if (kind === 'table') {
        result.blocks += checkTableSync(file);
        result.tables++;
      } else if (kind === 'log' || kind === 'manifest') {
        parseLog(fs.readFileSync(file));
        if (kind === 'log') result.logs++;
      } else {
        continue;
      }
    } catch (err) {
      if (err instanceof AdminError) throw err;
      const message = (err as Error).message;
      throw new AdminError(ErrorCodes.CORRUPT, message.startsWith(file) ? message : `${file}: ${message}`);
    }
    result.bytes += fs.statSync(file).size;
  }
  return result;
}
