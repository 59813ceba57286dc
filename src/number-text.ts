/**
 * Numbers as text: command-line flags, environment variables and HTTP query strings all carry
 * them as strings. Number() and z.coerce.number() read far more than a person means by a number:
 * "0x10" is 16, "1e3" is 1000, "" and "  " are 0, "1.0" is the whole number 1. So every numeric
 * setting goes through this one module, which takes plain decimal spellings only (blanks around
 * them are ignored, as a copied value often carries them) and words every refusal the same way.
 */
import { z } from 'zod';

const INTEGER = /^[-+]?\d+$/;
const DECIMAL = /^[-+]?(\d+\.?\d*|\.\d+)$/;

export const WHOLE_NUMBER = 'must be a whole number';
export const A_NUMBER = 'must be a number';

/** The integer `text` spells in decimal digits (an optional sign, blanks around ignored); undefined for anything else. */
export function parseIntegerText(text: string): number | undefined {
  const trimmed = text.trim();
  return INTEGER.test(trimmed) ? Number(trimmed) : undefined;
}

const bounded = (schema: z.ZodNumber, min?: number, max?: number) => {
  let out = schema;
  if (min !== undefined) out = out.min(min, `must be at least ${min}`);
  if (max !== undefined) out = out.max(max, `must be at most ${max}`);
  return out;
};

/** A whole number written in decimal digits, within [min, max] when given. */
export const integerText = (min?: number, max?: number) =>
  z
    .string({ error: WHOLE_NUMBER })
    .trim()
    .regex(INTEGER, WHOLE_NUMBER)
    .transform(Number)
    .pipe(bounded(z.number(), min, max));

/** A decimal number (no exponent, no hex, never empty), within [min, max] when given. */
export const decimalText = (min?: number, max?: number) =>
  z
    .string({ error: A_NUMBER })
    .trim()
    .regex(DECIMAL, A_NUMBER)
    .transform(Number)
    .pipe(bounded(z.number(), min, max));
