/** Global setup of `npm run test:pgbouncer`: without pgbouncer, one line and a non-zero exit. */
import { findPgbouncer, pgbouncerVersion } from './find.js';

export default function setup(): void {
  const bin = findPgbouncer();
  if (!bin) {
    process.stderr.write('test:pgbouncer: pgbouncer is not installed (Debian: apt-get install -y pgbouncer)\n');
    process.exit(1);
  }
  process.stderr.write(`test:pgbouncer: ${pgbouncerVersion(bin)} at ${bin}\n`);
}
