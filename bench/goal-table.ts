/** One line of a bench's table: what was measured, the figure, the goal ('-' for none), and whether it was met (null: no goal). */
export interface GoalRow {
  metric: string;
  value: string;
  goal: string;
  met: boolean | null;
}

/** The table a bench prints: a title line, then `metric | ours | goal | met?`, columns padded. */
export function goalTable(title: string, rows: readonly GoalRow[]): string {
  const w0 = Math.max(...rows.map((r) => r.metric.length));
  const w1 = Math.max(...rows.map((r) => r.value.length));
  const w2 = Math.max(...rows.map((r) => r.goal.length));
  return [
    '',
    title,
    `${'metric'.padEnd(w0)} | ${'ours'.padEnd(w1)} | ${'goal'.padEnd(w2)} | met?`,
    ...rows.map((r) => `${r.metric.padEnd(w0)} | ${r.value.padEnd(w1)} | ${r.goal.padEnd(w2)} | ${r.met === null ? '-' : r.met ? 'yes' : 'NO'}`),
    '',
  ].join('\n') + '\n';
}
