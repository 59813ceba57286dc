/**
 * `bundlefleet inspect … | head -1`: once the reader has gone, writing to stdout fails with
 * EPIPE. That is the reader's choice, not a failure: exit at once, quietly, with the exit code
 * the command had so far (0 unless something already failed).
 */
export function exitQuietlyOnClosedPipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw err;
  });
  // Nothing useful can be said about a closed stderr; never crash on it.
  process.stderr.on('error', () => {});
}

/**
 * Whether stdout still has a reader once everything written so far has gone out. A note meant to
 * follow the output (list's next-page hint on stderr) is skipped when the reader has gone: the
 * pipe's EPIPE only surfaces after the writes, so checking before would still say it.
 */
export function stdoutStillRead(): Promise<boolean> {
  return new Promise((resolve) => process.stdout.write('', (err) => resolve(!err)));
}
