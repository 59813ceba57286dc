/**
 * Time flags: `--since` takes an ISO 8601 time (2026-11-24, 2026-11-24T08:00:00Z) or a duration
 * meaning "that long ago" (90s, 30m, 2h, 7d, 1w); `--older-than` takes a duration.
 */
import { z } from 'zod';

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
const DURATION = /^(\d+(?:\.\d+)?)(s|m|h|d|w)$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
const TEN_YEARS = 10 * 365 * 86_400;

export function parseDurationSeconds(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  const seconds = Number(m[1]) * UNIT_SECONDS[m[2]!]!;
  return seconds > 0 && seconds <= TEN_YEARS ? seconds : undefined;
}

export const durationOption = z.string().transform((text, ctx) => {
  const seconds = parseDurationSeconds(text);
  if (seconds === undefined) {
    ctx.addIssue({ code: 'custom', message: `must be a duration such as 90s, 30m, 2h, 7d or 1w (at most 10 years), got ${JSON.stringify(text)}` });
    return z.NEVER;
  }
  return seconds;
});

/** A point in the past: an ISO 8601 time, or a duration ago from `now`. */
export const sinceOption = (now = () => Date.now()) =>
  z.string().transform((text, ctx) => {
    const seconds = parseDurationSeconds(text);
    if (seconds !== undefined) return new Date(now() - seconds * 1000);
    const t = ISO_TIME.test(text.trim()) ? Date.parse(text.trim()) : NaN;
    if (Number.isNaN(t)) {
      ctx.addIssue({ code: 'custom', message: `must be an ISO 8601 time (2026-11-24T08:00:00Z) or a duration ago (30m, 2h, 7d), got ${JSON.stringify(text)}` });
      return z.NEVER;
    }
    if (t > now()) {
      ctx.addIssue({ code: 'custom', message: 'must not be in the future' });
      return z.NEVER;
    }
    return new Date(t);
  });
