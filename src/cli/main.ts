/** The `bundlefleet` command line. */
import { Command, CommanderError } from 'commander';
import { registerDbCommands } from './db-commands.js';
import { registerDevCommand } from './dev-command.js';
import { registerEnqueueCommand } from './enqueue-command.js';
import { registerProvidersCommand } from './providers-command.js';
import { registerReadCommands } from './read-commands.js';
import { registerSuperviseCommands } from './supervise-command.js';
import { registerServeCommand } from './serve-command.js';
import { registerWorkerCommand } from './worker-command.js';
import { registerOperatorCommands } from './operator-commands.js';
import { registerAckCommand } from './ack-command.js';
import { registerSignalCommand } from './signal-command.js';
import { EXIT, parseEnvSwitches, reportError, reportUsageError, requestJsonOutput } from './context.js';
import { flushTracing, startTracing } from '../tracing.js';
import { EXIT_CODES_HELP, commandPath, configureHelp, eachCommand } from './help.js';
import { addDatabaseUrlOption, addProvidersUrlOption, applySettings } from './settings.js';
import { setRootLogStream } from '../logger.js';
import { exitQuietlyOnClosedPipe } from './pipes.js';

/** Commands that run until stopped log to stdout like services; the rest keep stdout for their output. */
const LONG_RUNNING = new Set(['worker', 'serve', 'dev', 'providers']);
/** Commands without a database: the provider simulator, and groups that only hold subcommands. */
const NO_DATABASE = new Set(['providers', 'db']);
const USES_PROVIDERS = new Set(['worker', 'dev']);
/** The embedded server's own commands: they never open a session connection, so --session-database-url is not offered. */
const NO_SESSION_DATABASE = new Set(['db status', 'db url', 'db stop']);

/**
 * The command's options, with --database-url / --providers-url taken from the nearest command that
 * has a value: `alerts ack 7 --database-url U` is parsed by `alerts`, which knows the option too.
 */
function settingsOf(action: Command): Record<string, unknown> {
  const opts = { ...action.opts() };
  for (const key of ['databaseUrl', 'sessionDatabaseUrl', 'providersUrl']) {
    // A flag given on the command line wins over the variable, whichever command parsed it.
    for (let c: Command | null = action; c; c = c.parent) {
      if (c.getOptionValueSource(key) === 'cli') {
        opts[key] = c.opts()[key];
        break;
      }
    }
  }
  return opts;
}

export function buildProgram(): Command {
  const program = new Command('bundlefleet')
    .description('books VIP bundles (show tickets, flights, taxi) exactly once, with PostgreSQL as the only state store')
    .version('0.1.0')
    // A command's options belong to it: `alerts ack 7 --json` is ack's --json, not alerts'.
    .enablePositionalOptions()
    .exitOverride();
  registerDbCommands(program);
  registerEnqueueCommand(program);
  registerWorkerCommand(program);
  registerReadCommands(program);
  registerSuperviseCommands(program);
  registerOperatorCommands(program);
  registerAckCommand(program);
  registerSignalCommand(program);
  registerServeCommand(program);
  registerProvidersCommand(program);
  registerDevCommand(program);
  eachCommand(program, (cmd) => {
    const path = commandPath(cmd);
    if (!NO_DATABASE.has(path)) addDatabaseUrlOption(cmd, { session: !NO_SESSION_DATABASE.has(path) });
    if (USES_PROVIDERS.has(path)) addProvidersUrlOption(cmd);
  });
  configureHelp(program);
  program.addHelpText('after', `
Examples:
  $ bundlefleet dev                                  # everything, on an embedded PostgreSQL
  $ bundlefleet enqueue --file bundles.ndjson --json
  $ bundlefleet list --state dead --since 2h
  $ bundlefleet inspect <vip_bundle_id> --follow

Every setting is a flag with an environment fallback (see each command's --help).
Without --database-url / DATABASE_URL every command uses an embedded PostgreSQL under ./.bundlefleet/.
${EXIT_CODES_HELP}`);
  program.hook('preAction', (_program, action) => {
    const opts = settingsOf(action);
    const path = commandPath(action);
    const longRunning = LONG_RUNNING.has(path) || (path === 'supervise' && Boolean(opts.loop));
    // Set before the settings are checked, so a bad variable under --json is a JSON document too.
    requestJsonOutput(Boolean(opts.json) && !longRunning);
    setRootLogStream(longRunning ? 'stdout' : 'stderr');
    applySettings(opts, !NO_DATABASE.has(path));
    parseEnvSwitches(action);
  });
  return program;
}

/**
 * Whether `--json` is on the command line as a flag: not after `--`, and not as the value of an
 * option that takes one (`--idempotency-key --json`). Options are those of the command named so
 * far and the ones above it, as commander reads them: `-f` takes a value in `enqueue` (`--file`)
 * and none in `inspect` (`--follow`).
 */
function jsonFlagGiven(program: Command, args: string[]): boolean {
  const takesValue = new Set<string>();
  const collect = (c: Command) => {
    for (const o of c.options) if (o.required || o.optional) for (const flag of [o.long, o.short]) if (flag) takesValue.add(flag);
  };
  let command = program;
  collect(command);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') return false;
    if (arg === '--json') return true;
    const sub = arg.startsWith('-') ? undefined : command.commands.find((c) => c.name() === arg || c.aliases().includes(arg));
    if (sub) collect((command = sub));
    else if (takesValue.has(arg)) i++;
  }
  return false;
}

export async function main(argv = process.argv): Promise<void> {
  exitQuietlyOnClosedPipe();
  const program = buildProgram();
  // Until commander has parsed the command (and the hook above has read its own --json), a usage
  // error under --json is told by the word on the command line.
  requestJsonOutput(jsonFlagGiven(program, argv.slice(2)));
  let failed = false;
  try {
    // Loads the OpenTelemetry SDK only when OTEL_* asks for traces (tracing.ts); a bad OTEL value exits 2.
    await startTracing();
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed by commander.
      // `help <no such command>` prints the root help and ends as 'commander.help' with code 1.
      if (err.exitCode !== 0) reportUsageError(err.code === 'commander.help' ? "no such command: see 'bundlefleet --help'" : err.message);
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    process.exitCode = reportError(err);
    failed = true;
  } finally {
    // One-shot commands end here: export their spans before the process exits (long-running
    // ones return from their action at once and flush again at shutdown, signals.ts).
    await flushTracing();
  }
  if (failed) await exitSoonAfterFailure();
}

/**
 * A failed command has said why; it must not then sit waiting on a connection a library left open
 * (pg keeps the socket of a connection refused for a missing password until the server's
 * authentication_timeout, 60 s by default). Once its spans are exported and stdout and stderr
 * have taken all it wrote (a slow reader of a pipe still gets every line), it has 2 s to end on
 * its own; the timer is unref'd, so a process with nothing left open exits at once, as before.
 */
async function exitSoonAfterFailure(): Promise<void> {
  await Promise.all([process.stdout, process.stderr].map((s) => (s.writableLength > 0 ? new Promise((r) => s.once('drain', r)) : undefined)));
  setTimeout(() => process.exit(), 2_000).unref();
}

await main();
