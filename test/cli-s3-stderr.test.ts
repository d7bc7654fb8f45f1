import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from './support/processes.js';
import { s3ProcessEnv, s3Server } from './support/s3-server.js';

/**
 * An S3 command of the CLI says on stderr only what node-admin says. The AWS SDK prints a notice of its
 * own (nine lines) at the first request on Node 20, that its releases after January 2027 need Node 22;
 * the CLI turns it off (cli/main.cts), unless the operator set AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED.
 * The control: with that variable set otherwise, the notice is there on Node 20 (on Node 22 and later the
 * SDK has nothing to say, and the control does not run).
 */

const NOTICE = 'NodeVersionSupportWarning';
const nodeMajor = Number(process.versions.node.split('.')[0]);

describe('the CLI on S3 prints none of the SDK notices', () => {
  const dir = tempDir('cli-s3-stderr');
  const passwordFile = path.join(dir, 'password');
  fs.writeFileSync(passwordFile, 'cli s3 stderr test password\n', { mode: 0o600 });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const init = (env: NodeJS.ProcessEnv = {}) => {
    const server = s3Server();
    const repo = `s3://${server.bucket}/cli-s3-stderr-${randomBytes(4).toString('hex')}`;
    return runCli(['backup', 'init', '--repo', repo, '--s3-path-style', '--password-file', passwordFile], {
      env: { ...s3ProcessEnv(server), ...env },
    });
  };

  it('backup init on S3: exit 0, nothing on stderr', async () => {
    // The variable unset in the child, whatever the test runner's environment holds.
    const r = await init({ AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: undefined });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  }, 60_000);

  it.runIf(nodeMajor < 22)("control: the operator's own setting wins, and the SDK's notice is then printed", async () => {
    const r = await init({ AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'false' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(NOTICE);
  }, 60_000);
});
