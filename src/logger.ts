/**
 * One root pino logger: JSON on stdout, pretty when stdout is a TTY. Personal data — customer
 * emails and passenger names — is redacted wherever it appears in a logged object, and
 * `scrubText` removes email addresses from free text (error messages) before it is logged.
 */
import pino, { type Logger } from 'pino';

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

export interface LoggerOptions {
  level?: string;
  destination?: pino.DestinationStream;
  pretty?: boolean;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  const base = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label: string) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.destination) return pino(base, opts.destination);
  const pretty = opts.pretty ?? (process.stdout.isTTY && process.env.LOG_FORMAT !== 'json');
  if (pretty) return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, destination: 1 } } });
  return pino(base);
}

let root: Logger | undefined;
export function rootLogger(): Logger {
  root ??= createLogger();
  return root;
}
export function setRootLogger(logger: Logger): void {
  root = logger;
}
