import { timeCommand } from './command-timer.js';
import { progress } from './progress.js';
import { summarize, type Summary } from './stats.js';

/**
 * `node-admin checkpoint list` end to end against a running node, next to what bounds it from below:
 * `node-admin --version` (Node startup plus loading the CLI, no socket), `node -e ''` (Node startup
 * alone) and curl on the socket (the agent's answer without any Node client).
 */
export interface CliLatencyResult {
  runs: number;
  checkpointsListed: number;
  /** The three creates through the CLI that set the stage (informational). */
  createMs: number[];
  listMs: Summary;
  versionMs: Summary;
  nodeEmptyMs: Summary;
  curlMs: Summary;
  /**
   * When NODE_EXTRA_CA_CERTS is set (as on some build machines), Node parses that bundle at every
   * start; these series run without it, as on a typical production host.
   */
  withoutExtraCaCerts: { listMs: Summary; versionMs: Summary; nodeEmptyMs: Summary } | null;
}

export function measureCliLatency(options: { cli: string; socketPath: string; runs: number; creates: number }): CliLatencyResult {
  // The socket is always given: a stray $NODE_ADMIN_SOCKET must not point the CLI elsewhere.
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_ADMIN_SOCKET: '' };
  const withCa = Boolean(env.NODE_EXTRA_CA_CERTS);
  const noCaEnv = { ...env };
  delete noCaEnv.NODE_EXTRA_CA_CERTS;
  const node = process.execPath;
  const socket = ['--socket', options.socketPath];

  const createMs: number[] = [];
  for (let i = 0; i < options.creates; i++) {
    const r = timeCommand(node, [options.cli, 'checkpoint', 'create', '--label', `bench ${i + 1}`, ...socket], env);
    createMs.push(r.ms);
    progress(`  ${r.stdout.trim()} in ${r.ms.toFixed(0)} ms`);
  }

  const list = () => timeCommand(node, [options.cli, 'checkpoint', 'list', ...socket], env);
  const version = () => timeCommand(node, [options.cli, '--version'], env);
  const nodeEmpty = () => timeCommand(node, ['-e', ''], env);
  const listNoCa = () => timeCommand(node, [options.cli, 'checkpoint', 'list', ...socket], noCaEnv);
  const versionNoCa = () => timeCommand(node, [options.cli, '--version'], noCaEnv);
  const nodeEmptyNoCa = () => timeCommand(node, ['-e', ''], noCaEnv);
  const curl = () => timeCommand('curl', ['-sS', '--fail', '--unix-socket', options.socketPath, '-o', '/dev/null', 'http://localhost/v1/checkpoints'], env);

  // One unmeasured round: the first run pays for cold file caches of dist/ and node_modules.
  const listed = list().stdout;
  version();
  nodeEmpty();
  curl();
  const checkpointsListed = (listed.match(/\d{8}T\d{9}Z-[0-9a-f]{4}/g) ?? []).length;

  const listMs: number[] = [];
  const versionMs: number[] = [];
  const nodeEmptyMs: number[] = [];
  const curlMs: number[] = [];
  const noCa = { listMs: [] as number[], versionMs: [] as number[], nodeEmptyMs: [] as number[] };
  // Interleaved, so that a burst of background work on the machine hits every series alike.
  for (let i = 0; i < options.runs; i++) {
    listMs.push(list().ms);
    versionMs.push(version().ms);
    nodeEmptyMs.push(nodeEmpty().ms);
    curlMs.push(curl().ms);
    if (withCa) {
      noCa.listMs.push(listNoCa().ms);
      noCa.versionMs.push(versionNoCa().ms);
      noCa.nodeEmptyMs.push(nodeEmptyNoCa().ms);
    }
  }
  return {
    runs: options.runs,
    checkpointsListed,
    createMs,
    listMs: summarize(listMs),
    versionMs: summarize(versionMs),
    nodeEmptyMs: summarize(nodeEmptyMs),
    curlMs: summarize(curlMs),
    withoutExtraCaCerts: withCa
      ? { listMs: summarize(noCa.listMs), versionMs: summarize(noCa.versionMs), nodeEmptyMs: summarize(noCa.nodeEmptyMs) }
      : null,
  };
}
