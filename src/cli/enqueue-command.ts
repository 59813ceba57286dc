import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { BadInput, IdempotencyKeyReused } from '../errors.js';
import { enqueueBundles, type EnqueueResult } from '../bundles/enqueue.js';
import { ActiveKeyTaken } from '../bundles/active-keys.js';
import { parseBundleDocumentShaped, parseVipBundle, type VipBundleInput } from '../bundles/input.js';
import { z } from 'zod';
import { bundleKind, carriedKindVersions } from '../bundles/kinds.js';
import { addErrorDetails, parseOptions, printJson, withDb } from './context.js';
import { inSpan, SpanKind } from '../tracing.js';
import { integerText, parseIntegerText } from '../number-text.js';

const FLAG_OF: Record<string, string> = {
  customer_email: '--customer-email',
  show_id: '--show-id',
  number_of_tickets: '--tickets',
  passengers: '--passenger',
  inbound_flight_id: '--inbound-flight-id',
  return_flight_id: '--return-flight-id',
  idempotency_key: '--idempotency-key',
  active_key: '--active-key',
};

const BUNDLE_FLAGS = ['customerEmail', 'showId', 'tickets', 'passenger', 'inboundFlightId', 'returnFlightId', 'idempotencyKey', 'activeKey'] as const;

interface EnqueueFlags {
  customerEmail?: string;
  showId?: string;
  tickets?: string;
  passenger?: string[];
  inboundFlightId?: string;
  returnFlightId?: string;
  idempotencyKey?: string;
  activeKey?: string;
  file?: string;
  json?: boolean;
}

function fromFlags(f: EnqueueFlags): VipBundleInput {
  const raw: Record<string, unknown> = {
    customer_email: f.customerEmail,
    show_id: f.showId,
    // Flag text that is no decimal whole number stays a string, which the schema refuses.
    number_of_tickets: f.tickets === undefined ? undefined : (parseIntegerText(f.tickets) ?? f.tickets),
    passengers: f.passenger ?? [],
    inbound_flight_id: f.inboundFlightId,
    return_flight_id: f.returnFlightId,
    ...(f.idempotencyKey !== undefined ? { idempotency_key: f.idempotencyKey } : {}),
    ...(f.activeKey !== undefined ? { active_key: f.activeKey } : {}),
  };
  try {
    return parseVipBundle(raw);
  } catch (err) {
    if (!(err instanceof BadInput)) throw err;
    const issues = err.issues.map((i) => {
      // The schema's path counts passengers from 0 (passengers.1); a person giving flags counts
      // the second --passenger as the 2nd. (A JSON document, as the HTTP body, keeps its path.)
      const passenger = /^passengers\.(\d+): /.exec(i);
      if (passenger) return `--passenger (the ${ordinal(Number(passenger[1]) + 1)} passenger: ${i.slice(passenger[0].length)})`;
      const field = i.split(':')[0]!.split('.')[0]!;
      return FLAG_OF[field] ? `${FLAG_OF[field]} (${i})` : i;
    });
    throw new BadInput(issues.join('; '), issues);
  }
}

/** 1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st. */
function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' } as Record<number, string>)[n % 10] ?? 'th';
  return `${n}${suffix}`;
}

async function readSource(source: string): Promise<string> {
  if (source === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(source, 'utf8');
  } catch (err) {
    throw new BadInput(`--file: cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function progress(done: number, total: number): void {
  process.stderr.write(`\renqueued ${done}/${total} (${Math.round((done / total) * 100)}%)${done === total ? '\n' : ''}`);
}

export function registerEnqueueCommand(program: Command): void {
  program
    .command('enqueue')
    .description('enqueue VIP bundles, from flags or from a JSON / NDJSON file or stdin')
    .argument('[source]', '"-" to read JSON or NDJSON from stdin')
    .option('--customer-email <email>', 'customer email')
    .option('--show-id <uuid>', 'show to book tickets for')
    .option('--tickets <n>', 'number of show tickets')
    .option('--passenger <name>', 'a passenger (repeat for each)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--inbound-flight-id <uuid>', 'inbound flight')
    .option('--return-flight-id <uuid>', 'return flight (501d0000-0000-4000-8000-… ids are always sold out at the simulator)')
    .option('--idempotency-key <key>', 'enqueue at most once per key')
    .option('--active-key <key>', 'refuse (exit 1) while another bundle with this key is unfinished, or failed and not acknowledged (bundlefleet ack)')
    .option('-f, --file <path>', 'JSON object, JSON array or NDJSON lines; "-" for stdin')
    .option('--json', 'print {"vip_bundle_id","booking_id"}; for an array or NDJSON input, an array of them')
    .option('--kind-version <n>', 'enqueue under this version of the vip kind (default the latest: 2 waits for the ticketing confirmations; 1 books the four steps in a row)')
    .addHelpText('after', `
Bounds: customer email at most 254 characters; show and flight ids are UUIDs; 1..20 tickets;
1..9 passengers, each name at most 100 characters; idempotency key and active key at most 200
characters. An idempotency key makes a repeated request harmless (same key, same bundle); an
active key allows one bundle at a time per business object (another one is refused, exit 1).`)
    .addHelpText(
      'after',
      `
Examples:
  $ bundlefleet enqueue --customer-email ada@example.com \\
      --show-id 00000000-0001-4000-8000-000000000001 --tickets 2 \\
      --passenger "Ada L" --passenger "Charles B" \\
      --inbound-flight-id 00000000-0002-4000-8000-000000000075 \\
      --return-flight-id 00000000-0003-4000-8000-000000000076
  $ bundlefleet enqueue --file bundles.ndjson --json
  $ bundlefleet enqueue --active-key order-42 --customer-email ada@example.com … # the same flags as above;
      # refused (exit 1, naming the holder) while another bundle holds order-42
  $ cat bundles.ndjson | bundlefleet enqueue - --json`,
    )
    .action(async (source: string | undefined, flags: EnqueueFlags) => {
      const fromFile = flags.file ?? source;
      const usedFlags = BUNDLE_FLAGS.some((k) => flags[k] !== undefined);
      if (source !== undefined && source !== '-') throw new BadInput(`source: expected "-" for stdin or --file <path>, got ${JSON.stringify(source)}`);
      if (fromFile && usedFlags) throw new BadInput('give either bundle flags or --file / "-", not both');
      const { kindVersion } = parseOptions(z.object({ kindVersion: integerText().optional() }), flags as Record<string, unknown>, { kindVersion: '--kind-version' });
      if (kindVersion !== undefined) {
        try {
          bundleKind('vip', kindVersion);
        } catch {
          throw new BadInput(`--kind-version: this build carries vip versions ${carriedKindVersions().filter((k) => k.kind === 'vip').map((k) => k.version).join(', ')}, not ${kindVersion}`);
        }
      }
      // Validate everything before connecting: bad input writes nothing.
      const { bundles: inputs, single, where } = fromFile ? parseBundleDocumentShaped(await readSource(fromFile)) : { bundles: [fromFlags(flags)], single: true, where: [undefined] };
      const showProgress = process.stderr.isTTY && inputs.length >= 5000;
      const idsOf = (results: EnqueueResult[]) => results.map((r) => ({ vip_bundle_id: r.vip_bundle_id, booking_id: r.booking_id }));
      const print = (results: EnqueueResult[]) => {
        if (flags.json) {
          // One document: an object for one bundle (flags or one JSON object), an array for a batch.
          const ids = idsOf(results);
          return printJson(single ? ids[0] : ids);
        }
        for (const r of results) process.stdout.write(`${r.created ? 'enqueued' : 'already enqueued (same idempotency key)'} vip_bundle_id=${r.vip_bundle_id} booking_id=${r.booking_id}\n`);
      };
      // The command is the root span of the bundle's trace (of each bundle's, linked, for a file of several).
      const results = await inSpan('bundlefleet enqueue', { kind: SpanKind.PRODUCER, attributes: { 'bundlefleet.bundles': inputs.length } }, () => withDb(({ pool }) =>
        enqueueBundles(
          pool,
          inputs.map(({ idempotency_key, active_key, ...payload }) => ({ payload, idempotencyKey: idempotency_key, activeKey: active_key })),
          { onProgress: showProgress ? progress : undefined, kindVersion, itemNames: where },
        ),
      )).catch((err: unknown) => {
        // A refused batch of a large input: the batches before it are enqueued, and say so.
        // Under --json they are the error document's `enqueued` (context.ts), the one document printed.
        if ((err instanceof ActiveKeyTaken || err instanceof IdempotencyKeyReused) && err.enqueuedBefore.length) {
          if (flags.json) addErrorDetails(err, { enqueued: idsOf(err.enqueuedBefore) });
          else print(err.enqueuedBefore);
          const before = `the first ${err.enqueuedBefore.length} bundle(s) of the input were enqueued (${flags.json ? 'listed in "enqueued"' : 'printed'}), none after them`;
          // A bad-input report prints its issues, one a line; any other error its message.
          if (err instanceof IdempotencyKeyReused) err.issues.push(before);
          else err.message += `; ${before}`;
        }
        throw err;
      });
      print(results);
    });
}
