import fs from 'node:fs';
import path from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';

/** One failure, as the closing lines name it: where, which test, and the first line of why. */
interface Failure {
  file: string;
  test: string;
  error: string;
}

/**
 * Prints the closing line CI reads: `N passed, N failed, N skipped`. A file that failed to load, or an
 * unhandled error, counts as a failure so that a broken suite can never look green. Each failure is named
 * again just above that line (file, test, first line of its error), since CI may keep only the end of a
 * long output. With NODE_ADMIN_SUMMARY_FILE set, the counts and the failures also go there as JSON
 * (.ci/run adds up its runs on each Node version into one closing line, and names every run's failures
 * above it).
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0;
    let skipped = 0;
    const failures: Failure[] = [];
    for (const m of testModules) {
      const file = path.relative(process.cwd(), m.moduleId);
      let tests = 0;
      for (const t of m.children.allTests()) {
        tests++;
        const result = t.result();
        if (result.state === 'passed') passed++;
        else if (result.state === 'failed') failures.push({ file, test: t.fullName, error: firstLine(result.errors?.[0]) });
        else skipped++;
      }
      const errors = m.errors();
      if (m.state() === 'failed' && tests === 0) failures.push({ file, test: '(the file)', error: firstLine(errors[0]) });
      else for (const e of errors) failures.push({ file, test: '(outside any test)', error: firstLine(e) });
    }
    for (const e of unhandledErrors) failures.push({ file: '(the run)', test: '(an unhandled error)', error: firstLine(e) });
    const failed = failures.length;
    const lines = failures.map((f) => `FAILED ${f.file} > ${f.test}: ${f.error}`);
    process.stdout.write(`\n${lines.map((l) => `${l}\n`).join('')}${passed} passed, ${failed} failed, ${skipped} skipped\n`);
    const file = process.env.NODE_ADMIN_SUMMARY_FILE;
    if (file) fs.writeFileSync(file, JSON.stringify({ passed, failed, skipped, failures: lines }));
  }
}

/** The first line of an error's message, at most 300 characters: enough to know it again, never a stack. */
export function firstLine(error: unknown): string {
  const message =
    typeof error === 'object' && error !== null && 'message' in error ? String((error as { message: unknown }).message) : String(error);
  const line = message.split('\n', 1)[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
