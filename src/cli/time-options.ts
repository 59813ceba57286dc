/**
 * Time flags: `--since` takes an ISO 8601 time (2026-11-24, 2026-11-24T08:00:00Z) or a duration
 * meaning "that long ago" (90s, 30m, 2h, 7d, 1w); `--older-than` takes a duration. Both say the
 * same bound on a duration, and `--since` refuses a date the calendar lacks.
 */
import { z } from 'zod';

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
const DURATION = /^(\d+(?:\.\d+)?)(s|m|h|d|w)$/;
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
const TEN_YEARS = 10 * 365 * 86_400;
const DURATION_BOUND = 'more than 0 and at most 10 years';

/**
 * A duration in seconds; `{ error }` when it is shaped like one but out of bounds (so the refusal
 * can say the bound rather than the expected form); undefined when it is no duration at all.
 */
function readDuration(text: string): { seconds: number } | { error: string } | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  const seconds = Number(m[1]) * UNIT_SECONDS[m[2]!]!;
  return seconds > 0 && seconds <= TEN_YEARS ? { seconds } : { error: `must be a duration ${DURATION_BOUND}, got ${JSON.stringify(text)}` };
}

export const durationOption = z.string().transform((text, ctx) => {
  const d = readDuration(text) ?? { error: `must be a duration such as 90s, 30m, 2h, 7d or 1w (${DURATION_BOUND}), got ${JSON.stringify(text)}` };
  if ('seconds' in d) return d.seconds;
  ctx.addIssue({ code: 'custom', message: d.error });
  return z.NEVER;
});

/**
 * An ISO 8601 time in ms, or why not. Date.parse rolls an impossible day over (2026-02-30 is
 * 2 March), so the date's fields are checked against the calendar first.
 */
function readIsoTime(text: string): number | string {
  const expected = `must be an ISO 8601 time (2026-11-24T08:00:00Z) or a duration ago (30m, 2h, 7d; ${DURATION_BOUND}), got ${JSON.stringify(text)}`;
  const m = ISO_TIME.exec(text);
  if (!m) return expected;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day); // not Date.UTC, which reads years 0-99 as 1900-1999
  if (date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) return `must be a real date: ${m[1]}-${m[2]}-${m[3]} does not exist (got ${JSON.stringify(text)})`;
  const t = Date.parse(text);
  return Number.isNaN(t) ? expected : t;
}

/** A point in the past: an ISO 8601 time, or a duration ago from `now`. */
export const sinceOption = (now = () => Date.now()) =>
  z.string().transform((text, ctx) => {
    const d = readDuration(text);
    if (d && 'seconds' in d) return new Date(now() - d.seconds * 1000);
    const t = d ?? readIsoTime(text.trim());
    if (typeof t !== 'number') {
      ctx.addIssue({ code: 'custom', message: typeof t === 'string' ? t : t.error });
      return z.NEVER;
    }
    if (t > now()) {
      ctx.addIssue({ code: 'custom', message: 'must not be in the future' });
      return z.NEVER;
    }
    return new Date(t);
  });
