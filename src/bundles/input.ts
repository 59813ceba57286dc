/**
 * What a user may enqueue, validated with zod. The CLI (flags, JSON, NDJSON) and the HTTP API
 * share these schemas, so a field is refused the same way everywhere, with its name and reason.
 */
import { z } from 'zod';
import { BadInput } from '../errors.js';
import { WHOLE_NUMBER } from '../number-text.js';

/** Zod's error for a missing or mistyped field, worded as the product words it: `is required`, `must be a string`. */
export const required = (what: string) => ({ error: (issue: { input: unknown }) => (issue.input === undefined ? 'is required' : `must be ${what}`) });
const text = (max: number) => z.string(required('a string')).trim().min(1, 'must not be empty').max(max, `must be at most ${max} characters`);

/**
 * Bounds on every string, so nothing unbounded reaches the database, the logs or a provider
 * (README, "Enqueue"): an email address is at most 254 characters (RFC 5321's path limit),
 * a passenger name 100, an idempotency key and an active key 200; shows and flights are UUIDs.
 */
export const LIMITS = { email: 254, passengerName: 100, idempotencyKey: 200, activeKey: 200, passengers: 9, tickets: 20 } as const;

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A show or flight id: a UUID in its usual 8-4-4-4-12 hex form (stored lower case). */
const uuidField = z
  .string(required('a UUID'))
  .max(36, 'must be a UUID (36 characters), e.g. 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a')
  .regex(UUID_TEXT, 'must be a UUID, e.g. 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a')
  .transform((s) => s.toLowerCase());

export const vipBundleInput = z
  .object({
    customer_email: z.string(required('an email address')).max(LIMITS.email, `must be at most ${LIMITS.email} characters`).pipe(z.email('must be an email address')),
    show_id: uuidField,
    number_of_tickets: z.number(required('a whole number')).int(WHOLE_NUMBER).min(1, 'must be at least 1').max(LIMITS.tickets, `must be at most ${LIMITS.tickets}`),
    passengers: z.array(text(LIMITS.passengerName), required('an array of names')).min(1, 'needs at least one passenger').max(LIMITS.passengers, `at most ${LIMITS.passengers} passengers`),
    inbound_flight_id: uuidField,
    return_flight_id: uuidField,
    idempotency_key: text(LIMITS.idempotencyKey).optional(),
    /** At most one unfinished (or failed and unacknowledged) bundle per active key: bundles/active-keys.ts. */
    active_key: text(LIMITS.activeKey).optional(),
  })
  .strict();

export type VipBundleInput = z.infer<typeof vipBundleInput>;

/**
 * `customer_email: must be an email address` for each problem, prefixed with a location if given.
 * `names` renames top-level fields for where they came from (`id` → `--signal-id` on the command line).
 */
export function describeIssues(error: z.ZodError, where?: string, names: Record<string, string> = {}): string[] {
  return error.issues.map((issue) => {
    const [head, ...rest] = issue.path.map(String);
    const path = head === undefined ? '' : [names[head] ?? head, ...rest].join('.');
    const field = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : path || '(body)';
    const reason = issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message;
    return `${where ? `${where}: ` : ''}${field}: ${reason}`;
  });
}

/** `a number`, `a string`, `an array`, `null`: what a JSON value is, for a refusal to name. */
export function describeJsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return type === 'object' ? 'an object' : `a ${type}`;
}

const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

export function parseVipBundle(value: unknown, where?: string): VipBundleInput {
  // Not an object at all: say what a bundle is, not zod's "(body): Invalid input: expected object".
  if (!isObject(value)) {
    const issue = `${where ?? '(body)'}: expected a JSON object (a bundle), got ${describeJsonType(value)}`;
    throw new BadInput(issue, [issue]);
  }
  const result = vipBundleInput.safeParse(value);
  if (!result.success) {
    const issues = describeIssues(result.error, where);
    throw new BadInput(issues.join('; '), issues);
  }
  return result.data;
}

/**
 * Parses one JSON object, a JSON array of objects, or NDJSON (one object per line; blank lines
 * ignored). Every problem is collected, each naming its line and field, before anything is refused.
 */
export function parseBundleDocument(textInput: string): VipBundleInput[] {
  return parseBundleDocumentShaped(textInput).bundles;
}

/**
 * parseBundleDocument, also telling whether the document was one object (not an array or NDJSON)
 * and where each bundle came from (`line 3`, `item 2`; none for one object), for later refusals to name.
 */
export function parseBundleDocumentShaped(textInput: string): { bundles: VipBundleInput[]; single: boolean; where: Array<string | undefined> } {
  const trimmed = textInput.trim();
  if (!trimmed) throw new BadInput('input: no bundle given (empty input)');
  const whole = tryParse(trimmed);
  // One JSON value that is neither an object nor an array (`42`, `"x"`, `null`): no bundle at all.
  if (whole.ok && !Array.isArray(whole.value) && !isObject(whole.value)) {
    throw new BadInput(`input: expected a JSON object (a bundle), an array of them or NDJSON lines, got ${describeJsonType(whole.value)}`);
  }
  if (whole.ok) {
    const single = !Array.isArray(whole.value);
    const items = Array.isArray(whole.value) ? whole.value : [whole.value];
    if (!items.length) throw new BadInput('input: an empty array holds no bundle to enqueue');
    const where = items.map((_, i) => (single ? undefined : `item ${i + 1}`));
    return { single, where, bundles: collect(items.map((item, i) => () => parseVipBundle(item, where[i]))) };
  }
  const lines = textInput.split(/\r?\n/);
  const parsers: Array<() => VipBundleInput> = [];
  const where: string[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    where.push(`line ${i + 1}`);
    parsers.push(() => {
      const parsed = tryParse(line);
      if (!parsed.ok) throw new BadInput(`line ${i + 1}: not valid JSON (${parsed.error})`);
      return parseVipBundle(parsed.value, `line ${i + 1}`);
    });
  });
  return { single: false, where, bundles: collect(parsers) };
}

function collect(parsers: Array<() => VipBundleInput>): VipBundleInput[] {
  const out: VipBundleInput[] = [];
  const issues: string[] = [];
  for (const parse of parsers) {
    try {
      out.push(parse());
    } catch (err) {
      if (!(err instanceof BadInput)) throw err;
      issues.push(...err.issues);
    }
  }
  if (issues.length) {
    const shown = issues.slice(0, 20).join('\n');
    throw new BadInput(issues.length > 20 ? `${shown}\n… and ${issues.length - 20} more` : shown, issues);
  }
  return out;
}

function tryParse(s: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(s) };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A vip_bundle_id or booking_id must be a UUID; anything else is bad input (exit 2, HTTP 400). */
export function parseBundleId(value: string, field = 'id'): string {
  if (!uuidPattern.test(value.trim())) throw new BadInput(`${field}: must be a UUID (a vip_bundle_id or booking_id), got ${JSON.stringify(value)}`);
  return value.trim().toLowerCase();
}
