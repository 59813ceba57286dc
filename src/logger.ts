/**
 * One root pino logger. Long-running commands (worker, serve, dev, supervise --loop) log to
 * stdout as services do; one-shot commands log to stderr so their stdout stays the command's
 * output (`--json` is one parseable document). JSON unless the log stream is a TTY or
 * LOG_FORMAT=pretty; colour follows NO_COLOR / FORCE_COLOR (see `shouldColor`).
 * Personal data — customer emails and passenger names — is redacted wherever it appears in a
 * logged object, and `scrubText` removes email addresses from free text before it is logged.
 */
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

const PERSONAL = ['customer_email', 'email', 'passengers', 'passenger', 'names'];
export const REDACT_PATHS = [
  ...PERSONAL,
  ...PERSONAL.map((k) => `*.${k}`),
  ...PERSONAL.map((k) => `*.*.${k}`),
  ...PERSONAL.map((k) => `*.*.*.${k}`),
];

const EMAIL = /[^\s@"'<>(),;:]+@[^\s@"'<>(),;:]+\.[^\s@"'<>(),;:]+/g;

export function scrubText(text: string): string {
  return text.replace(EMAIL, '[email]');
}

/**
 * Whether to colour output written to a stream. The no-color.org and force-color.org
 * conventions, with Node's own precedence: FORCE_COLOR set to anything but "0"/"false" forces
 * colour (and wins over NO_COLOR), FORCE_COLOR=0 or a non-empty NO_COLOR turns it off, and
 * otherwise colour is used only on a terminal (and never on TERM=dumb).
 */
export function shouldColor(env: NodeJS.ProcessEnv, isTTY: boolean): boolean {
  const force = env.FORCE_COLOR;
  if (force !== undefined) {
    if (force === '0' || force.toLowerCase() === 'false') return false;
    return true;
  }
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.TERM === 'dumb') return false;
  return isTTY;
}

export type LogStream = 'stdout' | 'stderr';

export interface LoggerOptions {
  level?: string;
  destination?: pino.DestinationStream;
  pretty?: boolean;
  /** Where the root logger writes when no destination is given; default stdout. */
  stream?: LogStream;
  env?: NodeJS.ProcessEnv;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const env = opts.env ?? process.env;
  const level = opts.level ?? env.LOG_LEVEL ?? 'info';
  const base = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label: string) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.destination) return pino(base, opts.destination);
  const stream = opts.stream ?? 'stdout';
  const fd = stream === 'stdout' ? 1 : 2;
  const isTTY = Boolean((stream === 'stdout' ? process.stdout : process.stderr).isTTY);
  const usePretty = opts.pretty ?? (env.LOG_FORMAT === 'pretty' || (isTTY && env.LOG_FORMAT !== 'json'));
  // Synchronous writes: a one-shot command's last lines must be out before it exits.
  if (usePretty) return pino(base, pretty({ colorize: shouldColor(env, isTTY), destination: fd, sync: true }));
  return pino(base, pino.destination({ fd, sync: true }));
}

let root: Logger | undefined;
let rootStream: LogStream = 'stdout';
export function rootLogger(): Logger {
  root ??= createLogger({ stream: rootStream });
  return root;
}
export function setRootLogger(logger: Logger): void {
  root = logger;
}
/** Chooses the root logger's stream; the CLI calls it before a command runs (and before any log line). */
export function setRootLogStream(stream: LogStream): void {
  if (stream !== rootStream) root = undefined;
  rootStream = stream;
}
