/**
 * `bundlefleet providers`: runs the provider simulator (src/providers/simulator.ts) in the
 * foreground until SIGINT/SIGTERM, for `dev`, manual testing, chaos runs and benchmarks.
 */
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { AddressInUse, BadInput } from '../errors.js';
import { startProviderSimulator } from '../providers/simulator.js';
import { asAddressInUse, portTaken, type PortSetting } from './ports.js';
import { decimalText, integerText } from '../number-text.js';

const PROVIDERS_PORT: PortSetting = { flag: '--port', env: 'PROVIDERS_PORT', example: 'bundlefleet providers --port 0' };

// Flags and env values arrive as strings; number-text.ts refuses "", "abc", "0x10" and "1e3".
const rate = decimalText().pipe(z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1'));
const millis = integerText(0);

/** One entry per flag: its zod schema, env fallback and help; the attribute name is commander's. */
const flags = {
  port: { flag: '--port <port>', env: 'PROVIDERS_PORT', schema: integerText(0, 65_535), help: 'port to listen on (0 picks a free one)', default: '4010' },
  host: { flag: '--host <host>', env: 'PROVIDERS_HOST', schema: z.string().trim().min(1, 'must not be empty'), help: 'address to listen on', default: '127.0.0.1' },
  failRate: { flag: '--fail-rate <rate>', env: 'PROVIDERS_FAIL_RATE', schema: rate, help: 'share of calls answered 503 without effect (0..1)' },
  lateRate: { flag: '--late-rate <rate>', env: 'PROVIDERS_LATE_RATE', schema: rate, help: 'share of bookings made whose reply is then lost (0..1)' },
  slowRate: { flag: '--slow-rate <rate>', env: 'PROVIDERS_SLOW_RATE', schema: rate, help: 'share of bookings answered only after --hang-ms (made at once, unless --book-on-answer) (0..1)' },
  hangRate: { flag: '--hang-rate <rate>', env: 'PROVIDERS_HANG_RATE', schema: rate, help: 'share of bookings never answered (0..1)' },
  noRate: { flag: '--no-rate <rate>', env: 'PROVIDERS_NO_RATE', schema: rate, help: 'share of new bookings refused 409 "sold out" (0..1)' },
  latencyMs: { flag: '--latency-ms <ms>', env: 'PROVIDERS_LATENCY_MS', schema: millis, help: 'delay before every answer' },
  hangMs: { flag: '--hang-ms <ms>', env: 'PROVIDERS_HANG_MS', schema: millis, help: 'how long a hang lasts before the socket is dropped' },
  rateLimit: { flag: '--rate-limit <n/s>', env: 'PROVIDERS_RATE_LIMIT', schema: z.string().trim().regex(/^[1-9]\d{0,6}\/s$/, 'must be requests per second per kind, like 20/s').transform((v) => Number.parseInt(v, 10)), help: 'requests per second per kind; past it, 429 with Retry-After' },
  seed: { flag: '--seed <n>', env: 'PROVIDERS_SEED', schema: integerText(), help: 'seed for a repeatable fault pattern' },
} satisfies Record<string, { flag: string; env: string; schema: z.ZodType; help: string; default?: string }>;

type Parsed = { [K in keyof typeof flags]?: z.infer<(typeof flags)[K]['schema']> };

/** Provider behaviours stricter or more forgetful than the contract's minimum (switches, off by default). */
const modes = {
  forgetUnknownCancels: { flag: '--forget-unknown-cancels', help: 'no tombstones: a cancel of an unseen key answers not_found and is forgotten, so a later booking with it is made' },
  concurrentConflict: { flag: '--concurrent-conflict', help: 'answer 409 "a request with this idempotency key is in progress" to a booking whose key is already in flight (as Stripe does)' },
  bookOnAnswer: { flag: '--book-on-answer', help: 'make a booking only as its answer is sent: while a slow one is in flight, a lookup of its key finds nothing' },
} as const;

export function registerProvidersCommand(program: import('commander').Command): void {
  const command = program.command('providers').description('run the provider simulator (tickets, flights, taxis) with fault injection').addHelpText('after', `
Show and flight ids starting with 501d0000-0000-4000-8000- are always refused (409 sold out).
Examples:
  $ bundlefleet providers --port 4010
  $ bundlefleet providers --fail-rate 0.1 --late-rate 0.05 --latency-ms 20 --seed 7
  $ curl -s 127.0.0.1:4010/__ledger`);
  for (const spec of Object.values(flags)) {
    const option = new Option(spec.flag, spec.help).env(spec.env);
    // Commander reads any `--no-x` as the negation of `--x`; `--no-rate` is a value, not a negation.
    option.negate = false;
    if ('default' in spec) option.default(spec.default);
    command.addOption(option);
  }
  for (const spec of Object.values(modes)) command.option(spec.flag, spec.help);
  command.action(async (raw: Record<string, string | boolean | undefined>, cmd: Command) => {
    const { port, host, ...faults } = parseFlags(raw as Record<string, string | undefined>, cmd);
    const switches = Object.fromEntries(Object.keys(modes).map((name) => [name, raw[name] === true]));
    const simulator = await startProviderSimulator({ ...faults, ...switches, port, host }).catch((err: unknown) => {
      const e = asAddressInUse(err, 'the provider simulator', host ?? '127.0.0.1', port ?? 0);
      throw e instanceof AddressInUse ? portTaken(e, PROVIDERS_PORT) : e;
    });
    process.stderr.write(`providers simulator listening on ${simulator.url}\n`);
    await new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals) => {
        process.off('SIGINT', stop).off('SIGTERM', stop);
        process.stderr.write(`providers simulator stopping (${signal})\n`);
        simulator.close().then(resolve, resolve);
      };
      process.on('SIGINT', stop).on('SIGTERM', stop);
    });
  });
}

/** Validates every given flag, naming it (and its env variable when that is where it came from). */
function parseFlags(raw: Record<string, string | undefined>, cmd: Command): Parsed {
  const parsed: Record<string, unknown> = {};
  const issues: string[] = [];
  for (const [name, spec] of Object.entries(flags)) {
    const value = raw[name];
    if (value === undefined) continue;
    const result = spec.schema.safeParse(value);
    if (result.success) {
      parsed[name] = result.data;
      continue;
    }
    const flag = spec.flag.split(' ')[0];
    const where = cmd.getOptionValueSource(name) === 'env' ? `${flag} (${spec.env})` : flag;
    issues.push(`${where}: ${result.error.issues[0]?.message ?? 'invalid'} (got ${JSON.stringify(value)})`);
  }
  if (issues.length) throw new BadInput(issues.join('; '), issues);
  return parsed as Parsed;
}
