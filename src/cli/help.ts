/**
 * Help and usage errors for every command: the top-level help lists the exit codes, a usage
 * error prints the error and one line on where to look (not the whole help page), and the
 * commands registered in files of their own without examples get them here.
 */
import type { Command } from 'commander';

export const EXIT_CODES_HELP = `
Exit codes:
  0  ok
  1  not found, conflict or runtime failure (database unreachable, schema missing)
  2  bad usage, bad input or bad configuration (the message names the flag, field or variable)
  3  supervise --fail-on-alert found open alerts`;

/** Examples for commands whose own file does not add them (keyed by the command's path). */
const EXTRA_EXAMPLES: Record<string, string> = {
  migrate: `  $ bundlefleet migrate
  $ DATABASE_URL=postgres://app@db.internal/fleet bundlefleet migrate --json`,
  db: `  $ bundlefleet db status
  $ psql "$(bundlefleet db url)"`,
  'db status': `  $ bundlefleet db status --json`,
  'db url': `  $ psql "$(bundlefleet db url)"`,
  'db stop': `  $ bundlefleet db stop`,
};

export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export function eachCommand(cmd: Command, fn: (c: Command) => void): void {
  for (const sub of cmd.commands) {
    fn(sub);
    eachCommand(sub, fn);
  }
}

/** Usage errors name the command's help instead of printing it; examples for the commands listed above. */
export function configureHelp(program: Command): void {
  program.showHelpAfterError(`see 'bundlefleet --help'`);
  eachCommand(program, (cmd) => {
    const path = commandPath(cmd);
    cmd.showHelpAfterError(`see 'bundlefleet ${path} --help'`);
    cmd.exitOverride();
    const examples = EXTRA_EXAMPLES[path];
    if (examples) cmd.addHelpText('after', `\nExamples:\n${examples}`);
  });
}
