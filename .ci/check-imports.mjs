#!/usr/bin/env node
// The import rules, checked (part of `npm test`): dependencies point down, `cli/ -> shared/ <- agent/`.
//   shared/ imports nothing from agent/, cli/, bench/ or test/ (it is the contract both sides speak);
//   agent/ imports nothing from cli/, bench/ or test/; cli/ nothing from bench/ or test/;
//   and no import cycle anywhere among the sources (type-only imports included).
// Imports are read with TypeScript's own scanner (static, `export ... from`, dynamic `import()`).
// Usage: node .ci/check-imports.mjs [root]   exit 0 clean, 1 with one line per violation.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const root = path.resolve(process.argv[2] ?? path.join(path.dirname(new URL(import.meta.url).pathname), '..'));
const TOPS = ['shared', 'agent', 'cli', 'bench'];
/** What each top-level folder may not import from. */
const FORBIDDEN = {
  shared: ['agent', 'cli', 'bench', 'test'],
  agent: ['cli', 'bench', 'test'],
  cli: ['bench', 'test'],
  bench: ['test'],
};

function sources(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.(ts|mts)$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** A relative specifier (`./x.js`) as the source file it names, or null for packages and node: modules. */
function resolve(from, specifier) {
  if (!specifier.startsWith('.')) return null;
  const target = path.resolve(path.dirname(from), specifier);
  for (const candidate of [target.replace(/\.js$/, '.ts'), target.replace(/\.mjs$/, '.mts'), target, `${target}.ts`, path.join(target, 'index.ts')]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  }
  return target; // outside the sources (dist/, a missing file): still checked against the rules by its path
}

const rel = (p) => path.relative(root, p);
const top = (p) => rel(p).split(path.sep)[0];

const files = TOPS.flatMap((t) => sources(path.join(root, t)));
const graph = new Map();
const problems = new Set();
for (const file of files) {
  const info = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
  const targets = [];
  for (const { fileName } of info.importedFiles) {
    const target = resolve(file, fileName);
    if (target === null) continue;
    const forbidden = FORBIDDEN[top(file)] ?? [];
    if (forbidden.includes(top(target))) problems.add(`${rel(file)} imports ${fileName} (${top(file)}/ must not import from ${top(target)}/)`);
    if (graph.has(target) || files.includes(target)) targets.push(target);
  }
  graph.set(file, targets);
}

// Cycles: a depth-first search; each cycle is reported once, from its first file in path order.
const state = new Map();
const stack = [];
const seen = new Set();
function visit(file) {
  state.set(file, 'open');
  stack.push(file);
  for (const next of graph.get(file) ?? []) {
    if (state.get(next) === 'open') {
      const cycle = stack.slice(stack.indexOf(next)).map(rel);
      const key = [...cycle].sort().join(' ');
      if (!seen.has(key)) {
        seen.add(key);
        problems.add(`import cycle: ${[...cycle, rel(next)].join(' -> ')}`);
      }
    } else if (!state.has(next)) {
      visit(next);
    }
  }
  stack.pop();
  state.set(file, 'done');
}
for (const file of [...graph.keys()].sort()) if (!state.has(file)) visit(file);

if (problems.size > 0) {
  for (const p of problems) console.error(`check-imports: ${p}`);
  console.error(`check-imports: ${problems.size} problem${problems.size === 1 ? '' : 's'} in ${files.length} files`);
  process.exit(1);
}
console.log(`check-imports: ${files.length} files, no import against the rules, no cycle`);
