/** Writes latest.json, latest.md (the table) and latest.svg (a hand-written bar chart). */
import type { ScenarioResult } from './scenarios.js';

export interface Report {
  generated_at: string;
  mode: 'quick' | 'full';
  command: string;
  duration_seconds: number;
  machine: Record<string, unknown>;
  postgres: Record<string, unknown>;
  versions: Record<string, string>;
  load: { start: number[]; end: number[]; note: string };
  config: Record<string, unknown>;
  scenarios: ScenarioResult[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const cell = (s: string) => s.replace(/\|/g, '\\|');
const fmt = (n: number) => (Math.abs(n) >= 100 ? Math.round(n).toLocaleString('en-US') : n.toLocaleString('en-US', { maximumFractionDigits: 2 }));

export function markdown(r: Report): string {
  const m = r.machine as Record<string, string | number>;
  const lines = [
    `# bundlefleet benchmark (${r.mode}${r.mode === 'quick' ? ': small sizes, not for comparison' : ''})`,
    '',
    `${r.generated_at} · \`${r.command}\` · ${Math.round(r.duration_seconds)} s`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, ${m.os}, Node ${m.node}. ` +
      `PostgreSQL ${String(r.postgres.server_version)} (${r.postgres.embedded ? 'embedded' : 'DATABASE_URL'}; fsync ${r.postgres.fsync}, synchronous_commit ${r.postgres.synchronous_commit}, shared_buffers ${r.postgres.shared_buffers}, data_checksums ${r.postgres.data_checksums}), same machine, loopback. ` +
      `pg-boss ${r.versions['pg-boss']}, graphile-worker ${r.versions['graphile-worker']}, DBOS Transact ${r.versions['@dbos-inc/dbos-sdk'] ?? '—'}. Load average at start ${r.load.start.join(' ')}, at end ${r.load.end.join(' ')}.`,
    '',
    '| scenario | bundlefleet | pg-boss | graphile-worker | DBOS Transact | ratio | target | met |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const s of r.scenarios) {
    const ratio = s.ratio === null ? '—' : `${s.ratio.toFixed(2)} (${s.ratioNote})`;
    const met = s.met === null ? '—' : s.met ? 'yes' : '**no**';
    lines.push(`| ${cell(`${s.id}. ${s.name}`)} | ${cell(s.bundlefleet.text)} | ${cell(s.pgboss?.text ?? '—')} | ${cell(s.graphile?.text ?? '—')} | ${cell(s.dbos?.text ?? '—')} | ${cell(ratio)} | ${cell(s.target)} | ${met} |`);
  }
  const notes = r.scenarios.flatMap((s) => (s.notes ?? []).map((n) => `- ${s.id}: ${n}`));
  lines.push('', `Method: ../shared/BENCHMARKING.md (fresh database per system and run, bulk APIs, untimed ANALYZE before processing, time from just before the worker starts until the database shows all finished, medians, nearest-rank percentiles). ${r.load.note}`);
  if (notes.length) lines.push('', ...notes);
  return `${lines.join('\n')}\n`;
}

const COLORS: Record<string, string> = { bundlefleet: '#2b6cb0', 'pg-boss': '#c05621', 'graphile-worker': '#2f855a', 'DBOS Transact': '#6b46c1', floor: '#4a5568', reference: '#a0aec0' };

export function svg(r: Report): string {
  const width = 860;
  const labelW = 250;
  const barMax = width - labelW - 140;
  const barH = 18;
  const gap = 6;
  let y = 40;
  const parts: string[] = [];
  parts.push(`<text x="16" y="24" font-size="16" font-weight="bold">bundlefleet vs pg-boss ${esc(r.versions['pg-boss'] ?? '')} vs graphile-worker ${esc(r.versions['graphile-worker'] ?? '')} vs DBOS Transact ${esc(r.versions['@dbos-inc/dbos-sdk'] ?? '')} (${r.mode}, ${esc(r.generated_at.slice(0, 10))})</text>`);
  for (const s of r.scenarios) {
    const title = `${s.id}. ${s.name} — ${s.unit}, ${s.better} is better; target ${s.target}${s.met === null ? '' : s.met ? ' (met)' : ' (missed)'}`;
    parts.push(`<text x="16" y="${y + 14}" font-size="12" font-weight="bold">${esc(title)}</text>`);
    y += 22;
    const values = s.bars.map((b) => b.value).filter((v) => Number.isFinite(v) && v > 0);
    const spread = values.length ? Math.max(...values) / Math.max(Math.min(...values), 1e-9) : 1;
    const logScale = spread > 200; // recovery: seconds vs hours
    // Scenario 6's target is a ratio, not a value on its bars' axis.
    const tv = s.id === '6' ? null : s.targetValue;
    const top = Math.max(...values, tv ?? 0, 1e-9);
    const scale = (v: number) => (logScale ? (Math.log10(1 + v) / Math.log10(1 + top)) * barMax : (v / top) * barMax);
    for (const b of s.bars) {
      const w = Number.isFinite(b.value) ? Math.max(1, scale(b.value)) : 0;
      parts.push(`<text x="${labelW - 8}" y="${y + 13}" font-size="11" text-anchor="end">${esc(b.label)}</text>`);
      parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[b.system]}"/>`);
      parts.push(`<text x="${labelW + w + 6}" y="${y + 13}" font-size="11">${esc(fmt(b.value))} ${esc(s.unit)}</text>`);
      y += barH + gap;
    }
    if (tv !== null) {
      const x = labelW + scale(tv);
      parts.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${y - s.bars.length * (barH + gap) - 2}" y2="${y - gap + 2}" stroke="#e53e3e" stroke-dasharray="4 3"/>`);
    }
    if (logScale) parts.push(`<text x="${labelW}" y="${y + 8}" font-size="10" fill="#718096">log scale</text>`);
    y += 18;
  }
  const legend = Object.entries(COLORS).map(([k, c], i) => `<rect x="${16 + i * 170}" y="${y}" width="12" height="12" fill="${c}"/><text x="${32 + i * 170}" y="${y + 10}" font-size="11">${esc(k)}</text>`);
  parts.push(...legend, `<text x="16" y="${y + 30}" font-size="10" fill="#718096">Dashed red line: target. ${esc(String((r.machine as Record<string, unknown>).cpu))}, ${(r.machine as Record<string, unknown>).cores} cores; load ${r.load.start.join(' ')} → ${r.load.end.join(' ')}.</text>`);
  y += 44;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}
