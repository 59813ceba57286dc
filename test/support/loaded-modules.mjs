// Preloaded with `node --import` by test/tracing.test.ts: on exit, writes every CommonJS module
// the process loaded (the OpenTelemetry packages are CommonJS, imported from ESM or required) to
// the file named by LOADED_MODULES_FILE, one path a line.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
process.on('exit', () => {
  if (process.env.LOADED_MODULES_FILE) writeFileSync(process.env.LOADED_MODULES_FILE, Object.keys(require.cache).join('\n'));
});
