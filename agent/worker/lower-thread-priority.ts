import fs from 'node:fs';
import os from 'node:os';

/**
 * The nice value of the backup's CPU threads (the crypto threads: content ids, AES-GCM, compression).
 * They share the host's cores with its event loop and libuv's pool, and on a busy node the kernel then
 * runs the node's threads first: at nice 10 a thread weighs ~1/10 of one at 0 (CFS's weights 110 and
 * 1024), so it takes what the node leaves and still gets about a tenth of a core when the node takes
 * every core (a backup on a saturated node slows but finishes: never 19, where it weighs ~1/70). On an
 * idle machine niceness changes nothing. RocksDB's BackupEngine lowers its threads' CPU priority the
 * same way.
 */
export const BACKGROUND_NICE = 10;

/**
 * Lowers the calling thread's CPU priority to `nice` (never raises it: a thread already nicer stays
 * so), for that thread alone: Linux keeps a nice value per thread, and /proc/thread-self names the
 * calling thread's id. Lowering needs no privilege. Returns whether the thread now runs at `nice` or
 * lower; false where it cannot be done (no /proc, a system that refuses), and the thread then runs at
 * the process's priority, as before.
 */
export function lowerThreadPriority(nice: number = BACKGROUND_NICE): boolean {
  try {
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return false;
    if (os.getPriority(tid) < nice) os.setPriority(tid, nice);
    return os.getPriority(tid) >= nice;
  } catch {
    return false;
  }
}
