/**
 * A bundle kind is an ordered list of steps, each with a book and (for steps with an external
 * effect) a cancel action. Agents run whatever list a bundle's kind names, so a new kind is data,
 * not new agent code. `vip` is the product; `noop` is a one-step kind for benchmarks.
 */
import type { ProviderClient, ProviderKind, ProviderHolding } from '../providers/client.js';
import type { EventName } from './events.js';
import type { VipBundleInput } from './input.js';

export interface StepContext {
  bundleId: string;
  bookingId: string;
  payload: Record<string, unknown>;
  idempotencyKey: string;
  providers: ProviderClient;
  signal?: AbortSignal;
}

/**
 * A local record kept beside a step's booking. It is written in the same fenced statement as the
 * step's outcome and removed in the same fenced statement as its cancellation (see
 * agents/fenced-writes.ts), never by the step itself: a stale agent's late reply must not be able
 * to write it after the bundle was undone. `tickets`: one row per booking id in `tickets`.
 */
export type LocalRecord = 'tickets';

export interface StepDefinition {
  name: string;
  /** Provider kind called; absent for steps without an external effect (no intent row, no undo). */
  provider?: ProviderKind;
  book(ctx: StepContext): Promise<{ reference: string }>;
  cancel?(ctx: StepContext): Promise<void>;
  /** What the provider holds for the step's key: how a step whose outcome is unknown is resolved. */
  lookup?(ctx: StepContext): Promise<ProviderHolding>;
  localRecord?: LocalRecord;
}

export interface BundleKind {
  name: string;
  steps: StepDefinition[];
  events: { initialized?: EventName; finalized?: EventName; failed?: EventName };
}

type Vip = VipBundleInput & Record<string, unknown>;

function providerStep(name: string, provider: ProviderKind, body: (p: Vip, bookingId: string) => Record<string, unknown>, localRecord?: LocalRecord): StepDefinition {
  return {
    name,
    provider,
    localRecord,
    async book(ctx) {
      const { reference } = await ctx.providers.book(provider, ctx.idempotencyKey, body(ctx.payload as Vip, ctx.bookingId), ctx.signal, { bundleId: ctx.bundleId, step: name });
      return { reference };
    },
    async cancel(ctx) {
      await ctx.providers.cancel(provider, ctx.idempotencyKey, ctx.signal, { bundleId: ctx.bundleId, step: name });
    },
    async lookup(ctx) {
      return ctx.providers.lookup(provider, ctx.idempotencyKey, ctx.signal, { bundleId: ctx.bundleId, step: name });
    },
  };
}

export const vipKind: BundleKind = {
  name: 'vip',
  steps: [
    providerStep('show_tickets', 'tickets', (p, booking_id) => ({ show_id: p.show_id, booking_id, customer_email: p.customer_email, number_of_tickets: p.number_of_tickets }), 'tickets'),
    providerStep('inbound_flight', 'flights', (p, booking_id) => ({ flight_id: p.inbound_flight_id, booking_id, customer_email: p.customer_email, passengers: p.passengers })),
    providerStep('return_flight', 'flights', (p, booking_id) => ({ flight_id: p.return_flight_id, booking_id, customer_email: p.customer_email, passengers: p.passengers })),
    providerStep('taxi', 'taxis', (p, booking_id) => ({ booking_id, customer_email: p.customer_email, number_of_passengers: p.passengers.length })),
  ],
  events: { initialized: 'VipBundleInitialized_v1', finalized: 'VipBundleFinalized_v1', failed: 'VipBundleFailed_v1' },
};

export const noopKind: BundleKind = {
  name: 'noop',
  steps: [{ name: 'noop', book: async () => ({ reference: 'noop' }) }],
  events: {},
};

const kinds = new Map<string, BundleKind>([vipKind, noopKind].map((k) => [k.name, k]));

export function bundleKind(name: string): BundleKind {
  const kind = kinds.get(name);
  if (!kind) throw new Error(`unknown bundle kind ${JSON.stringify(name)}`);
  return kind;
}

/** The idempotency key of a step: derived from the bundle id once and identical on every retry, reset and undo. */
export function stepIdempotencyKey(bundleId: string, stepName: string): string {
  return `${bundleId}:${stepName}`;
}
