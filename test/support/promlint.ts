/**
 * A parser and linter for the Prometheus text exposition format, applying the checks of
 * `promtool check metrics` that matter for our /metrics (so `npm test` needs only Node):
 *
 * - parsing: valid metric and label names, quoted label values, numeric values, one HELP and one
 *   TYPE per family before its samples, every sample belonging to a declared family, families not
 *   interleaved, no duplicate series, histograms with a `+Inf` bucket, a final newline;
 * - promlint's rules: HELP present; counters end in `_total` and nothing else does; base units
 *   (`seconds`, not `milliseconds`); no abbreviated units (`_ms`, `_sec`...); no type in the name;
 *   no `:`; snake_case metric and label names; `_bucket`/`_count`/`_sum` and the `le`/`quantile`
 *   labels only on histograms and summaries.
 */

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help?: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

/** As Go's strconv.ParseFloat, which promtool uses: NaN and Inf in any case (prom-client writes `Nan`). */
function parseValue(text: string): number {
  const special = /^([-+]?)(inf|infinity|nan)$/i.exec(text);
  if (special) return special[2]!.toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`expected float as value, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** `{a="x",b="y\"z"}` → labels; returns the labels and the index after `}`. */
function parseLabels(line: string, start: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  while (line[i] !== '}') {
    const nameMatch = /^[^=]*/.exec(line.slice(i))![0];
    const name = nameMatch.trim();
    if (!LABEL_NAME.test(name)) throw new Error(`invalid label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`duplicate label ${name}`);
    i += nameMatch.length;
    if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`expected ="…" after label ${name}`);
    i += 2;
    let value = '';
    for (; i < line.length && line[i] !== '"'; i++) {
      if (line[i] === '\\') {
        const next = line[++i];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`invalid escape \\${next} in label ${name}`);
      } else value += line[i];
    }
    if (line[i] !== '"') throw new Error(`unterminated value of label ${name}`);
    labels[name] = value;
    i++;
    if (line[i] === ',') i++;
    else if (line[i] !== '}') throw new Error(`expected , or } after label ${name}`);
  }
  return { labels, end: i + 1 };
}

/** The families of a scrape, in order; throws on the first parse error (as promtool does). */
export function parseExposition(text: string): Family[] {
  if (text.length && !text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  const series = new Set<string>();
  let current: Family | undefined;
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
      f = { name, type: 'untyped', samples: [] };
      families.set(name, f);
    }
    if (current !== f) {
      if (closed.has(name)) throw new Error(`metric family ${name} appears in two places`);
      if (current) closed.add(current.name);
      current = f;
    }
    return f;
  };
  text.split('\n').forEach((line, index) => {
    const where = `line ${index + 1}`;
    try {
      if (line.trim() === '') return;
      const meta = /^#\s*(HELP|TYPE)\s+(\S+)\s*(.*)$/.exec(line);
      if (meta) {
        const [, kind, name, rest] = meta as unknown as [string, 'HELP' | 'TYPE', string, string];
        const f = family(name);
        if (kind === 'HELP') {
          if (f.help !== undefined) throw new Error(`second HELP line for ${name}`);
          f.help = rest;
        } else {
          if (!TYPES.includes(rest)) throw new Error(`unknown type ${JSON.stringify(rest)} for ${name}`);
          if (f.samples.length || (f as { typed?: boolean }).typed) throw new Error(`TYPE of ${name} after its samples or twice`);
          f.type = rest as Family['type'];
          (f as { typed?: boolean }).typed = true;
        }
        return;
      }
      if (line.startsWith('#')) return;
      const name = /^[^\s{]+/.exec(line)?.[0] ?? '';
      if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
      let labels: Record<string, string> = {};
      let i = name.length;
      if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i));
      const parts = line.slice(i).trim().split(/\s+/);
      if (parts.length < 1 || parts.length > 2 || parts[0] === '') throw new Error('expected a value (and an optional timestamp)');
      const value = parseValue(parts[0]!);
      // A histogram's or summary's samples carry suffixes; they belong to the family without them.
      const base = [...families.values()].find((f) => (f.type === 'histogram' && [`${f.name}_bucket`, `${f.name}_sum`, `${f.name}_count`].includes(name)) || (f.type === 'summary' && [`${f.name}_sum`, `${f.name}_count`].includes(name)));
      const f = family(base?.name ?? name);
      if (f.type === 'histogram' && name === `${f.name}_bucket` && labels.le === undefined) throw new Error(`${name} without an le label`);
      const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
      if (series.has(key)) throw new Error(`duplicate series ${name}${JSON.stringify(labels)}`);
      series.add(key);
      f.samples.push({ name, labels, value });
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}: ${line}`);
    }
  });
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const groups = new Map<string, boolean>();
    for (const s of f.samples.filter((s) => s.name === `${f.name}_bucket`)) {
      const { le, ...rest } = s.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      groups.set(key, (groups.get(key) ?? false) || le === '+Inf');
    }
    for (const [key, hasInf] of groups) if (!hasInf) throw new Error(`histogram ${f.name}${key} has no +Inf bucket`);
  }
  return [...families.values()];
}

const UNITS: Record<string, string> = {
  amperes: 'amperes', bytes: 'bytes', celsius: 'celsius', grams: 'grams', joules: 'joules', kelvin: 'kelvin', meters: 'meters', metres: 'metres', seconds: 'seconds', volts: 'volts',
  minutes: 'seconds', hours: 'seconds', days: 'seconds', weeks: 'seconds', kelvins: 'kelvin', fahrenheit: 'celsius', rankine: 'celsius',
  inches: 'meters', yards: 'meters', miles: 'meters', bits: 'bytes', calories: 'joules', pounds: 'grams', ounces: 'grams',
};
const PREFIXES = ['pico', 'nano', 'micro', 'milli', 'centi', 'deci', 'deca', 'hecto', 'kilo', 'kibi', 'mega', 'mibi', 'giga', 'gibi', 'tera', 'tebi', 'peta', 'pebi'];
const ABBREVIATIONS = ['s', 'ms', 'us', 'ns', 'sec', 'b', 'kb', 'mb', 'gb', 'tb', 'pb', 'm', 'h', 'd'];
const CAMEL = /[a-z][A-Z]/;

const hasPart = (name: string, part: string) => name.includes(`_${part}_`) || name.endsWith(`_${part}`);

/** promlint's problems for one family, as `name message` lines like promtool prints them. */
function lintFamily(f: Family): string[] {
  const problems: string[] = [];
  const add = (message: string) => problems.push(`${f.name} ${message}`);
  const lower = f.name.toLowerCase();
  if (!f.help) add('no help text');
  for (const part of f.name.split('_')) {
    const unit = UNITS[part] !== undefined ? part : undefined;
    const prefixed = PREFIXES.map((p) => (part.startsWith(p) && UNITS[part.slice(p.length)] ? part : undefined)).find(Boolean);
    const found = unit ?? prefixed;
    if (found) {
      const base = UNITS[found] ?? UNITS[PREFIXES.reduce((s, p) => (s.startsWith(p) ? s.slice(p.length) : s), found)]!;
      if (found !== base) add(`use base unit "${base}" instead of "${found}"`);
      break;
    }
  }
  if (f.type === 'counter' && !f.name.endsWith('_total')) add('counter metrics should have "_total" suffix');
  if (f.type !== 'counter' && f.type !== 'untyped' && f.name.endsWith('_total')) add('non-counter metrics should not have "_total" suffix');
  if (f.type !== 'untyped') {
    const histogram = f.type === 'histogram';
    const summary = f.type === 'summary';
    if (!histogram && f.name.endsWith('_bucket')) add('non-histogram metrics should not have "_bucket" suffix');
    if (!histogram && !summary && f.name.endsWith('_count')) add('non-histogram and non-summary metrics should not have "_count" suffix');
    if (!histogram && !summary && f.name.endsWith('_sum')) add('non-histogram and non-summary metrics should not have "_sum" suffix');
    for (const s of f.samples) {
      if (!histogram && 'le' in s.labels) add('non-histogram metrics should not have "le" label');
      if (!summary && 'quantile' in s.labels) add('non-summary metrics should not have "quantile" label');
    }
  }
  for (const type of ['counter', 'gauge', 'histogram', 'summary']) if (hasPart(lower, type)) add(`metric name should not include type '${type}'`);
  if (f.name.includes(':')) add("metric names should not contain ':'");
  if (CAMEL.test(f.name)) add("metric names should be written in 'snake_case' not 'camelCase'");
  for (const s of f.samples) for (const label of Object.keys(s.labels)) if (CAMEL.test(label)) add("label names should be written in 'snake_case' not 'camelCase'");
  for (const abbreviation of ABBREVIATIONS) if (hasPart(lower, abbreviation)) add('metric names should not contain abbreviated units');
  return [...new Set(problems)];
}

/** Every problem promtool would report for this scrape; a parse error is one problem. */
export function lintExposition(text: string): string[] {
  let families: Family[];
  try {
    families = parseExposition(text);
  } catch (err) {
    return [`error while linting: ${(err as Error).message}`];
  }
  return families.flatMap(lintFamily);
}
