import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './support/processes.js';
import { promtool } from './support/prometheus.js';
import { dashboardProblems, dashboardQueries, type Dashboard } from './support/grafana-dashboard.js';

/**
 * monitoring/: the alerting rules under Prometheus's own checker and unit-test runner (Debian's
 * promtool, installed by ensure-test-deps.sh), each alert proven both to fire and to stay quiet, and
 * the Grafana dashboard's structure. Its queries meet real data in monitoring-prometheus.test.ts.
 */

/**
 * promtool checks the rules and the README's configuration, not this project's code on a Node: CI runs
 * them on its first Node and sets NODE_ADMIN_PROMTOOL_DONE for the others (.ci/run).
 */
const PROMTOOL_DONE = process.env.NODE_ADMIN_PROMTOOL_DONE === '1';

const MONITORING = path.join(ROOT, 'monitoring');
const RULES = path.join(MONITORING, 'node-admin-alerts.yml');
const RULE_TESTS = path.join(MONITORING, 'node-admin-alerts.test.yml');
const DASHBOARD = path.join(MONITORING, 'grafana-dashboard.json');

const rulesText = fs.readFileSync(RULES, 'utf8');
const alertNames = [...rulesText.matchAll(/^\s*- alert: (\w+)\s*$/gm)].map((m) => m[1]!);
const recordNames = [...rulesText.matchAll(/^\s*- record: ([\w:]+)\s*$/gm)].map((m) => m[1]!);

/** The rules with every alert's expr replaced by `expr` (records untouched). */
function withEveryAlertExpr(text: string, expr: string): string {
  const lines = text.split('\n');
  const out: string[] = [];
  let inAlert = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*- alert: /.test(line)) inAlert = true;
    else if (/^\s*- record: /.test(line)) inAlert = false;
    const m = /^(\s*)expr:(.*)$/.exec(line);
    if (!inAlert || !m) {
      out.push(line);
      continue;
    }
    out.push(`${m[1]}expr: ${expr}`);
    if (m[2]!.trim() === '|') {
      // A block scalar: its lines are indented deeper than `expr:`.
      while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > m[1]!.length)) i++;
      out.push('');
    }
  }
  return out.join('\n');
}

describe.skipIf(PROMTOOL_DONE)('alerting rules (promtool)', () => {
  const dir = tempDir('rules');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** The rule tests run against `rules` in a scratch directory (the test file names its rules relatively). */
  async function testRulesWith(rules: string): Promise<{ code: number; output: string }> {
    const sub = fs.mkdtempSync(path.join(dir, 'case-'));
    fs.writeFileSync(path.join(sub, 'node-admin-alerts.yml'), rules);
    fs.copyFileSync(RULE_TESTS, path.join(sub, 'node-admin-alerts.test.yml'));
    const r = await promtool(['test', 'rules', path.join(sub, 'node-admin-alerts.test.yml')]);
    return { code: r.code, output: r.stdout + r.stderr };
  }

  it('are valid: promtool check rules', async () => {
    expect(alertNames.length).toBeGreaterThanOrEqual(10);
    const r = await promtool(['check', 'rules', RULES]);
    expect(r.stdout + r.stderr, r.stdout + r.stderr).toContain(`SUCCESS: ${alertNames.length + recordNames.length} rules found`);
    expect(r.code).toBe(0);
  });

  it('cover what the issue asks to alert on', () => {
    for (const name of [
      'NodeAdminBackupTooOld',
      'NodeAdminCheckpointTooOld',
      'NodeAdminCheckpointFailing',
      'NodeAdminBackupFailing',
      'NodeAdminFreeSpaceNearGuard',
      'NodeAdminLogArchiveLagging',
      'NodeAdminLogArchiveTimelineBroken',
      'NodeAdminBackupUnencrypted',
      'NodeAdminBackupReplicaLagging',
      'NodeAdminBackupReplicaSnapshotTooOld',
      'NodeAdminBackupReplicaSnapshotsDropped',
    ]) {
      expect(alertNames).toContain(name);
    }
  });

  it('pass their unit tests: promtool test rules', async () => {
    const r = await promtool(['test', 'rules', RULE_TESTS]);
    expect(r.stdout + r.stderr).toContain('SUCCESS');
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('negative control: a broken rule fails check rules, naming the problem', async () => {
    const broken = rulesText.replace('expr: up{job="node-admin"} == 0', 'expr: up{job="node-admin"} == (0');
    expect(broken).not.toBe(rulesText);
    const file = path.join(dir, 'broken.yml');
    fs.writeFileSync(file, broken);
    const r = await promtool(['check', 'rules', file]);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/FAILED|parse error/);
  });

  it('negative control: a threshold off by an hour fails the unit tests, naming the alert', async () => {
    const shifted = rulesText.replace(
      'time() - node_admin_backup_last_success_timestamp_seconds > 26 * 3600',
      'time() - node_admin_backup_last_success_timestamp_seconds > 27 * 3600',
    );
    expect(shifted).not.toBe(rulesText);
    const r = await testRulesWith(shifted);
    expect(r.code).not.toBe(0);
    expect(r.output).toContain('alertname: NodeAdminBackupTooOld,');
    expect(r.output).not.toContain('alertname: NodeAdminCheckpointTooOld,');
  });

  // Mutation testing of the unit tests themselves: if an alert had no "quiet" case, making it always
  // true would pass; with no "firing" case, making it never true would. Every alert must fail both.
  it('show every alert staying quiet: with each one always true, the tests fail for each', async () => {
    const r = await testRulesWith(withEveryAlertExpr(rulesText, 'vector(1)'));
    expect(r.code).not.toBe(0);
    const missed = alertNames.filter((name) => !r.output.includes(`alertname: ${name},`));
    expect(missed, r.output).toEqual([]);
  });

  it('show every alert firing: with each one never true, the tests fail for each', async () => {
    const r = await testRulesWith(withEveryAlertExpr(rulesText, 'vector(1) < 0'));
    expect(r.code).not.toBe(0);
    const missed = alertNames.filter((name) => !r.output.includes(`alertname: ${name},`));
    expect(missed, r.output).toEqual([]);
  });

  it('the mutation is what it claims: every alert expr replaced, records kept, still valid rules', async () => {
    const mutated = withEveryAlertExpr(rulesText, 'vector(1)');
    expect([...mutated.matchAll(/^\s*expr: vector\(1\)$/gm)]).toHaveLength(alertNames.length);
    for (const name of [...alertNames, ...recordNames]) expect(mutated).toContain(name);
    const file = path.join(dir, 'mutated.yml');
    fs.writeFileSync(file, mutated);
    const r = await promtool(['check', 'rules', file]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });
});

describe.skipIf(PROMTOOL_DONE)("the README's Prometheus configuration", () => {
  it('is valid for promtool check config, and loads the rules from monitoring/', async () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Monitoring'));
    const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(block).toContain('127.0.0.1:7070');
    expect(block).toContain('job_name: node-admin');
    const dir = tempDir('readme-config');
    try {
      const file = path.join(dir, 'prometheus.yml');
      fs.writeFileSync(file, block!.replace('/path/to/node-admin/monitoring/', `${MONITORING}/`));
      const r = await promtool(['check', 'config', file]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`SUCCESS: ${alertNames.length + recordNames.length} rules found`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Grafana dashboard (structure)', () => {
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as Dashboard;

  it('is importable: schemaVersion, a datasource variable every panel uses, ids, a grid without overlaps', () => {
    expect(dashboardProblems(dashboard)).toEqual([]);
  });

  it('has the panels an operator looks at first', () => {
    const queries = dashboardQueries(dashboard);
    const panelOf = (re: RegExp) => queries.filter((q) => re.test(q.expr)).map((q) => q.panel);
    // Time since the last checkpoint, backup and archived write.
    expect(panelOf(/time\(\) - node_admin_checkpoint_last_success_timestamp_seconds/)).not.toEqual([]);
    expect(panelOf(/time\(\) - node_admin_backup_last_success_timestamp_seconds/)).not.toEqual([]);
    expect(panelOf(/time\(\) - node_admin_log_archive_last_shipped_timestamp_seconds/)).not.toEqual([]);
    // Durations, bytes, failures by code, free space.
    expect(panelOf(/node_admin_operation_duration_seconds_(bucket|sum)/)).not.toEqual([]);
    expect(panelOf(/node_admin_backup_uploaded_bytes_total/)).not.toEqual([]);
    expect(panelOf(/node_admin_checkpoint_bytes/)).not.toEqual([]);
    expect(panelOf(/by \([^)]*\bcode\b[^)]*\)[\s\S]*node_admin_operation_failures_total/)).not.toEqual([]);
    expect(panelOf(/node_admin_checkpoint_filesystem_free_bytes/)).not.toEqual([]);
  });

  it('negative control: the checker names planted faults', () => {
    const planted = JSON.parse(JSON.stringify(dashboard)) as Dashboard;
    const [first, second] = planted.panels!.filter((p) => p.type !== 'row');
    first!.datasource = { type: 'prometheus', uid: 'my-prometheus' };
    second!.gridPos = { ...first!.gridPos };
    second!.targets![0]!.expr = 'node_admin_backups{instance=~"$node"}';
    planted.templating!.list = planted.templating!.list!.filter((v) => v.type !== 'datasource');
    planted.schemaVersion = '39';
    const problems = dashboardProblems(planted).join('\n');
    expect(problems).toContain(`${String(first!.title)}: datasource is not \${datasource}`);
    expect(problems).toContain(`${String(second!.title)}: overlaps ${String(first!.title)}`);
    expect(problems).toContain('unknown variable $node');
    expect(problems).toContain('no datasource variable');
    expect(problems).toContain('schemaVersion must be a number');
  });
});
