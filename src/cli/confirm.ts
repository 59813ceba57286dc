/**
 * Asks before a bulk change. `--yes` skips the question; without a terminal on stdin there is
 * nobody to ask, so the command refuses (exit 2) and says to pass --yes, rather than guessing.
 */
import { createInterface } from 'node:readline/promises';
import { BadInput } from '../errors.js';

export interface ConfirmOptions {
  yes?: boolean;
  /** What would be done, for the refusal: "retry these 3 bundle(s)". */
  what: string;
  input?: NodeJS.ReadableStream & { isTTY?: boolean };
  output?: NodeJS.WritableStream;
}

export async function confirm(question: string, opts: ConfirmOptions): Promise<boolean> {
  if (opts.yes) return true;
  const input = opts.input ?? process.stdin;
  if (!input.isTTY) throw new BadInput(`--yes: stdin is not a terminal, so nobody can confirm: pass --yes to ${opts.what}`);
  const rl = createInterface({ input, output: opts.output ?? process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
