/**
 * Per-kind settings written `kind=value,kind=value` (--provider-concurrency, --provider-rate,
 * --wait-timeout). One parser, so that every such flag refuses an unknown kind, a kind given twice
 * and a malformed item alike, naming the accepted kinds: a typo in a kind would otherwise be a
 * setting that silently applies to nothing.
 */
import { parseIntegerText, WHOLE_NUMBER } from '../number-text.js';

export interface KindListSpec<K extends string> {
  /** What the kinds are, for the message: `provider kind`, `bundle kind`. */
  what: string;
  kinds: readonly K[];
  /** A well-formed value, e.g. `tickets=20,flights=10`. */
  example: string;
  /** The value of one item, or why it is refused. */
  value: (text: string) => number | string;
}

/** An item's value that is a whole number of `unit` within [min, max], e.g. `flights=10`. */
export const wholeNumberValue = (unit: string, example: string, min: number, max: number, maxText = `${max}`) => (text: string): number | string => {
  const n = parseIntegerText(text);
  if (n === undefined) return `${WHOLE_NUMBER} of ${unit}, like ${example}`;
  return n >= min && n <= max ? n : `must be between ${min} and ${maxText}`;
};

/** The values by kind, or every problem found (each without the flag's name, which the caller adds). */
export function parseKindList<K extends string>(raw: string, spec: KindListSpec<K>): { values: Map<K, number>; issues: string[] } {
  const values = new Map<K, number>();
  const issues: string[] = [];
  for (const item of raw.split(',').map((i) => i.trim())) {
    const [kind, text, ...rest] = item.split('=').map((p) => p.trim());
    if (!kind || text === undefined || rest.length) {
      issues.push(`${JSON.stringify(item)} must look like ${spec.example}`);
      continue;
    }
    if (!spec.kinds.includes(kind as K)) {
      issues.push(`unknown ${spec.what} ${JSON.stringify(kind)} (one of ${spec.kinds.join(', ')})`);
      continue;
    }
    if (values.has(kind as K)) {
      issues.push(`${kind} given twice`);
      continue;
    }
    const v = spec.value(text);
    if (typeof v === 'string') issues.push(`${kind}: ${v} (got ${JSON.stringify(text)})`);
    else values.set(kind as K, v);
  }
  return { values, issues };
}
