/**
 * JSON with every object's keys sorted: two values give the same text exactly when they are equal
 * as jsonb holds them (key order does not matter). Used to tell "the same body" apart, by the
 * provider simulator (a reused idempotency key) and by enqueue's input check.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
