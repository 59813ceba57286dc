#!/usr/bin/env node
/**
 * Summarises a V8 CPU profile (node --cpu-prof): self time by where the code lives (our src/,
 * pg, pino, undici/http, node internals, GC, idle) and the top functions by self time.
 *   node bench/profile-summary.mjs bench/results/tmp/prof/CPU.*.cpuprofile
 */
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile\n');
  process.exit(2);
}
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i] ?? 0));
const total = [...self.values()].reduce((a, b) => a + b, 0);

function area(cf) {
  const u = cf.url || '';
  if (cf.functionName === '(garbage collector)') return 'GC';
  if (cf.functionName === '(idle)') return 'idle';
  if (cf.functionName === '(program)') return '(program: native, outside JS)';
  if (u.includes('/node_modules/pg') || u.includes('/node_modules/pg-protocol')) return 'pg driver';
  if (u.includes('/node_modules/pino') || u.includes('thread-stream') || u.includes('sonic-boom')) return 'pino';
  if (u.includes('/node_modules/tsx') || u.includes('esbuild')) return 'tsx loader';
  if (u.includes('/node_modules/')) return `other packages (${u.split('/node_modules/').pop().split('/')[0]})`;
  if (u.includes('/src/providers/')) return 'src/providers (HTTP client/simulator)';
  if (u.includes('/src/')) return `src/${u.split('/src/')[1].split('/')[0]}`;
  if (u.includes('/bench/')) return 'bench harness';
  if (u.startsWith('node:internal/deps/undici') || u.includes('undici')) return 'undici (fetch)';
  if (u.startsWith('node:internal/http') || u.startsWith('node:_http') || u.includes('_http_')) return 'node http';
  if (u.startsWith('node:') || u === '') return 'node internals / builtins';
  return 'other';
}

const areas = new Map();
const fns = new Map();
for (const [id, t] of self) {
  const n = byId.get(id);
  const a = area(n.callFrame);
  areas.set(a, (areas.get(a) ?? 0) + t);
  const key = `${n.callFrame.functionName || '(anonymous)'} ${(n.callFrame.url || '').replace(/^.*\/(node_modules|src|bench)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
  fns.set(key, (fns.get(key) ?? 0) + t);
}
const pct = (t) => `${((100 * t) / total).toFixed(1)} %`;
console.log(`profile ${file}: ${(total / 1e6).toFixed(2)} s sampled\n`);
console.log('| where | self time | share |\n|---|---|---|');
for (const [a, t] of [...areas].sort((x, y) => y[1] - x[1])) console.log(`| ${a} | ${(t / 1e3).toFixed(0)} ms | ${pct(t)} |`);
console.log('\n| function | self time | share |\n|---|---|---|');
for (const [f, t] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, 25)) console.log(`| \`${f}\` | ${(t / 1e3).toFixed(0)} ms | ${pct(t)} |`);
