/** LevelDB's file names (db/filename.cc). One counter numbers every file of a database. */
export type DbFileKind = 'table' | 'log' | 'manifest' | 'current' | 'lock' | 'info-log' | 'temp';

export interface DbFileName {
  kind: DbFileKind;
  number: number | null;
}

export function parseDbFileName(name: string): DbFileName | null {
  let m: RegExpExecArray | null;
  if ((m = /^(\d+)\.(ldb|sst)$/.exec(name))) return { kind: 'table', number: Number(m[1]) };
  if ((m = /^(\d+)\.log$/.exec(name))) return { kind: 'log', number: Number(m[1]) };
  if ((m = /^MANIFEST-(\d+)$/.exec(name))) return { kind: 'manifest', number: Number(m[1]) };
  if ((m = /^(\d+)\.dbtmp$/.exec(name))) return { kind: 'temp', number: Number(m[1]) };
  if (name === 'CURRENT') return { kind: 'current', number: null };
  if (name === 'LOCK') return { kind: 'lock', number: null };
  if (name === 'LOG' || name === 'LOG.old') return { kind: 'info-log', number: null };
  return null;
}

export function tableFileNames(number: number): [string, string] {
  const n = String(number).padStart(6, '0');
  return [`${n}.ldb`, `${n}.sst`];
}

export function logFileName(number: number): string {
  return `${String(number).padStart(6, '0')}.log`;
}
