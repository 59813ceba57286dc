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
import { EXIT, reportError } from './context.js';
import { flushTracing, startTracing } from '../tracing.js';

export function buildProgram(): Command {
  const program = new Command('bundlefleet')
    .description('books VIP bundles (show tickets, flights, taxi) exactly once, with PostgreSQL as the only state store')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  registerDbCommands(program);
  registerEnqueueCommand(program);
  registerWorkerCommand(program);
  registerReadCommands(program);
  registerSuperviseCommands(program);
  registerServeCommand(program);
  registerProvidersCommand(program);
  registerDevCommand(program);
  program.addHelpText('after', `
Without DATABASE_URL every command uses an embedded PostgreSQL under ./.bundlefleet/.
Exit codes: 0 ok, 1 not found or runtime failure, 2 bad usage or bad input.`);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

export async function main(argv = process.argv): Promise<void> {
  const program = buildProgram();
  try {
    // Loads the OpenTelemetry SDK only when OTEL_* asks for traces (tracing.ts); a bad OTEL value exits 2.
    await startTracing();
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed by commander.
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    process.exitCode = reportError(err);
  } finally {
    // One-shot commands end here: export their spans before the process exits (long-running
    // ones return from their action at once and flush again at shutdown, signals.ts).
    await flushTracing();
  }
}

await main();
