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

const PERSONAL = new Set(['customer_email', 'email', 'passengers', 'passenger', 'names']);
const CENSOR = '[redacted]';
/** How deep personal keys are looked for: a key at the top and up to three objects (or arrays) down. */
const REDACT_DEPTH = 4;

/**
 * A copy of `value` with every personal key (at most REDACT_DEPTH levels down, through plain
 * objects and arrays) replaced by "[redacted]"; `value` itself when there is none, which is
 * nearly always. Measured on an idle core: 2.3 µs per info line in all, where pino's
 * path-based `redact` with the same reach (20 wildcard paths) made it 38 µs; an agent now logs
 * five info lines per bundle.
 */
export function redactPersonal<T>(value: T, depth = 0): T {
  if (depth >= REDACT_DEPTH || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const redacted = redactPersonal(item, depth + 1);
      if (redacted !== item) (copy ??= value.slice())[i] = redacted;
    });
    return (copy ?? value) as T;
  }
  // Errors, dates and buffers are left to their serializers (spreading an Error loses its message).
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  let copy: Record<string, unknown> | undefined;
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    const redacted = PERSONAL.has(key) ? CENSOR : redactPersonal(item, depth + 1);
    if (redacted !== item) (copy ??= { ...(value as Record<string, unknown>) })[key] = redacted;
  }
  return (copy ?? value) as T;
}

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
    formatters: { level: (label: string) => ({ level: label }), log: redactPersonal },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return redactingChildren(pino(base, destinationFor(opts, env)));
}

function destinationFor(opts: LoggerOptions, env: NodeJS.ProcessEnv): pino.DestinationStream {
  if (opts.destination) return opts.destination;
  const stream = opts.stream ?? 'stdout';
  const fd = stream === 'stdout' ? 1 : 2;
  const isTTY = Boolean((stream === 'stdout' ? process.stdout : process.stderr).isTTY);
  const usePretty = opts.pretty ?? (env.LOG_FORMAT === 'pretty' || (isTTY && env.LOG_FORMAT !== 'json'));
  // Synchronous writes: a one-shot command's last lines must be out before it exits.
  if (usePretty) return pretty({ colorize: shouldColor(env, isTTY), destination: fd, sync: true });
  return pino.destination({ fd, sync: true });
}

/**
 * pino formats a child's bindings once, without `formatters.log`: redact them on the way in.
 * Children inherit from their parent's prototype, so replacing `child` on the root covers every
 * descendant.
 */
function redactingChildren(logger: Logger): Logger {
  const child = logger.child;
  logger.child = function (this: Logger, bindings, options) {
    return child.call(this, redactPersonal(bindings), options);
  } as Logger['child'];
  return logger;
}

let root: Logger | undefined;
/**
 * stderr unless a long-running CLI command chooses stdout: a process that prints a document on
 * stdout (the chaos runner, the bench, a library user) must never find a log line in it. A pool
 * warning in the chaos runner once broke its JSON summary that way (CI, stop 15).
 */
let rootStream: LogStream = 'stderr';
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
