import fs from 'node:fs';

const CLK_TCK = 100; // Linux's USER_HZ: /proc's tick counts

/** The fields of a /proc stat line after the command name (which may hold spaces): [0] is the state; null where it cannot be read (a thread that ended). */
export function statFields(file: string): string[] | null {
  let line: string;
  try {
    line = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  return line.slice(line.lastIndexOf(')') + 2).split(' ');
}

/** CPU seconds (user + system) in statFields' fields. */
export function cpuSecondsOf(fields: readonly string[]): number {
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** CPU seconds so far of each thread of this process, by thread id (a thread that ended is absent). */
export function threadCpuSeconds(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    const f = statFields(`/proc/self/task/${tid}/stat`);
    if (f) out.set(Number(tid), cpuSecondsOf(f));
  }
  return out;
}
