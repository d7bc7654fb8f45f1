/** A positive number from the environment (a benchmark setting), or the fallback when unset. */
export function envNumber(name: string, fallback: number, integer: boolean): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) throw new Error(`${name} must be a positive ${integer ? 'integer' : 'number'}, got ${raw}`);
  return v;
}
