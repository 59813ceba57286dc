import { stopTracing } from '../tracing.js';

/**
 * Two-stage shutdown for long-running commands: the first SIGTERM/SIGINT runs `stop` (drain,
 * release); a second one exits at once.
 */
export function onShutdown(stop: (signal: NodeJS.Signals) => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      process.stderr.write(`bundlefleet: second ${signal}, exiting now\n`);
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(`bundlefleet: ${signal} received, draining (send it again to exit at once)\n`);
    stop(signal).then(stopTracing).then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`bundlefleet: shutdown failed: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
