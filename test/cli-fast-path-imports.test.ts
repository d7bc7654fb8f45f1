/**
 * The commands hooks and cron run most (cli/fast-path.ts: status, metrics, checkpoint list|show|create)
 * load neither yargs nor Node's undici: each is start-up time on every run. From Node 24 on, importing
 * node:http as an ES module loads undici (behind its lazy WebSocket exports), about 100 ms of CPU, which
 * is why shared/socket-client.ts takes the module through process.getBuiltinModule. Each command runs as
 * a real process with the loader hook of support/recorded-run.ts, which also writes down the built-ins
 * Node loaded; negative controls: the full parser (--version) loads yargs, and a script that touches
 * `Headers` loads undici, on every Node.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, tempDir } from './support/processes.js';
import { runRecorded } from './support/recorded-run.js';

const UNDICI = 'node:internal/deps/undici/undici';
const dir = tempDir('fast-path-imports');

const yargs = (modules: string[]) => modules.filter((m) => m.includes('node_modules/yargs/'));

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the fast path loads only what it uses', () => {
  it('status through the socket: the socket client, no yargs, no undici', () => {
    const r = runRecorded(dir, CLI, ['status', '--socket', path.join(dir, 'no-agent.sock')]);
    // Nothing listens there: AGENT_UNAVAILABLE, after the socket client tried.
    expect(r.code).toBe(5);
    expect(r.stderr).toContain('AGENT_UNAVAILABLE');
    expect(r.modules).toContain('dist/cli/fast-path.js');
    expect(r.modules).toContain('dist/shared/socket-client.js');
    expect(r.modules.some((m) => m.startsWith('node:internal/'))).toBe(true); // the built-ins are recorded
    expect(yargs(r.modules)).toEqual([]);
    expect(r.modules).not.toContain(UNDICI);
  });

  it('negative controls: the full parser loads yargs; touching Headers loads undici', () => {
    const full = runRecorded(dir, CLI, ['--version']);
    expect(full.code).toBe(0);
    expect(yargs(full.modules).length).toBeGreaterThan(0);

    const script = path.join(dir, 'headers.mjs');
    fs.writeFileSync(script, 'void globalThis.Headers.name;\n');
    const headers = runRecorded(dir, script, []);
    expect(headers.code).toBe(0);
    expect(headers.modules).toContain(UNDICI);
  });
});
