/**
 * Grafana is not packaged for Debian: the dashboard's JSON is checked here for what an import needs
 * (the structure Grafana's importer reads), and its queries are run against a real Prometheus by
 * test/monitoring-prometheus.test.ts.
 */

/** The parts of a dashboard model these checks read. */
export interface DashboardPanel {
  id?: unknown;
  type?: unknown;
  title?: unknown;
  description?: unknown;
  datasource?: unknown;
  gridPos?: { x?: unknown; y?: unknown; w?: unknown; h?: unknown };
  fieldConfig?: { defaults?: { unit?: unknown } };
  targets?: { refId?: unknown; expr?: unknown; datasource?: unknown; legendFormat?: unknown }[];
  panels?: unknown[];
}

export interface Dashboard {
  uid?: unknown;
  title?: unknown;
  schemaVersion?: unknown;
  templating?: { list?: { name?: unknown; type?: unknown; query?: unknown; datasource?: unknown }[] };
  panels?: DashboardPanel[];
}

export interface PanelQuery {
  panel: string;
  refId: string;
  expr: string;
}

const PANEL_TYPES = new Set(['row', 'stat', 'timeseries', 'bargauge', 'gauge', 'table', 'text']);
/** Variables Grafana itself defines for every query. */
const BUILTIN_VARIABLES = new Set(['__rate_interval', '__interval', '__range', '__range_s']);
const DATASOURCE_REF = { type: 'prometheus', uid: '${datasource}' };

/**
 * Everything in the dashboard that would make an import fail or a panel come up empty or broken, one
 * line per problem; [] when none.
 */
export function dashboardProblems(d: Dashboard): string[] {
  const problems: string[] = [];
  if (typeof d.uid !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(d.uid)) problems.push(`uid must be 1-40 of [A-Za-z0-9_-]: ${String(d.uid)}`);
  if (typeof d.title !== 'string' || d.title === '') problems.push('no title');
  if (typeof d.schemaVersion !== 'number' || d.schemaVersion < 36) problems.push(`schemaVersion must be a number >= 36 (Grafana 9+): ${String(d.schemaVersion)}`);

  const variables = d.templating?.list ?? [];
  const dsVar = variables.find((v) => v.type === 'datasource');
  if (!dsVar || dsVar.name !== 'datasource' || dsVar.query !== 'prometheus') {
    problems.push('no datasource variable {name: "datasource", type: "datasource", query: "prometheus"}');
  }
  const names = new Set(variables.map((v) => String(v.name)));
  for (const v of variables) {
    if (v.type === 'query' && !sameRef(v.datasource, DATASOURCE_REF)) problems.push(`variable ${String(v.name)}: datasource is not \${datasource}`);
  }

  const panels = d.panels ?? [];
  if (panels.length === 0) problems.push('no panels');
  const ids = new Set<unknown>();
  const boxes: { title: string; x: number; y: number; w: number; h: number }[] = [];
  for (const p of panels) {
    const title = typeof p.title === 'string' && p.title !== '' ? p.title : `panel ${String(p.id)}`;
    if (typeof p.title !== 'string' || p.title === '') problems.push(`${title}: no title`);
    if (!Number.isInteger(p.id)) problems.push(`${title}: id must be an integer`);
    else if (ids.has(p.id)) problems.push(`${title}: id ${String(p.id)} used twice`);
    ids.add(p.id);
    if (typeof p.type !== 'string' || !PANEL_TYPES.has(p.type)) problems.push(`${title}: unknown panel type ${String(p.type)}`);
    const g = p.gridPos ?? {};
    const [x, y, w, h] = [g.x, g.y, g.w, g.h];
    if (![x, y, w, h].every((n) => Number.isInteger(n)) || (x as number) < 0 || (y as number) < 0 || (w as number) < 1 || (h as number) < 1 || (x as number) + (w as number) > 24) {
      problems.push(`${title}: gridPos must be integers inside the 24-column grid: ${JSON.stringify(g)}`);
    } else {
      const box = { title, x: x as number, y: y as number, w: w as number, h: h as number };
      for (const other of boxes) {
        if (box.x < other.x + other.w && other.x < box.x + box.w && box.y < other.y + other.h && other.y < box.y + box.h) {
          problems.push(`${title}: overlaps ${other.title}`);
        }
      }
      boxes.push(box);
    }
    if (p.type === 'row') {
      if ((p.targets ?? []).length > 0) problems.push(`${title}: a row has no queries`);
      continue;
    }
    if (typeof p.description !== 'string' || p.description === '') problems.push(`${title}: no description (what the operator reads it for)`);
    if (!sameRef(p.datasource, DATASOURCE_REF)) problems.push(`${title}: datasource is not \${datasource}`);
    if (typeof p.fieldConfig?.defaults?.unit !== 'string') problems.push(`${title}: no unit`);
    const targets = p.targets ?? [];
    if (targets.length === 0) problems.push(`${title}: no queries`);
    const refIds = new Set<unknown>();
    for (const t of targets) {
      if (typeof t.refId !== 'string' || t.refId === '' || refIds.has(t.refId)) problems.push(`${title}: refId missing or repeated: ${String(t.refId)}`);
      refIds.add(t.refId);
      if (typeof t.expr !== 'string' || t.expr.trim() === '') {
        problems.push(`${title} ${String(t.refId)}: no expr`);
        continue;
      }
      if (!sameRef(t.datasource, DATASOURCE_REF)) problems.push(`${title} ${String(t.refId)}: datasource is not \${datasource}`);
      for (const m of t.expr.matchAll(/\$\{?(\w+)/g)) {
        const name = m[1]!;
        if (!names.has(name) && !BUILTIN_VARIABLES.has(name)) problems.push(`${title} ${String(t.refId)}: unknown variable $${name}`);
      }
    }
  }
  return problems;
}

function sameRef(a: unknown, b: { type: string; uid: string }): boolean {
  return typeof a === 'object' && a !== null && (a as { type?: unknown }).type === b.type && (a as { uid?: unknown }).uid === b.uid;
}

/** Every query of every panel, in order. */
export function dashboardQueries(d: Dashboard): PanelQuery[] {
  const out: PanelQuery[] = [];
  for (const p of d.panels ?? []) {
    for (const t of p.targets ?? []) {
      if (typeof t.expr === 'string') out.push({ panel: String(p.title), refId: String(t.refId), expr: t.expr });
    }
  }
  return out;
}

/**
 * A query as Grafana would send it with every node selected: `$instance` is the variable's "All"
 * value, and `$__rate_interval` is what Grafana computes for a 1 s scrape interval on a short range.
 */
export function expandVariables(expr: string, values: Record<string, string> = {}): string {
  const all: Record<string, string> = { instance: '.+', __rate_interval: '1m', __interval: '15s', __range: '1h', __range_s: '3600', ...values };
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => all[name] ?? whole);
}
