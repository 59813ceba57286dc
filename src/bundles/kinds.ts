/**
 * A bundle kind is an ordered list of steps, each with a book and (for steps with an external
 * effect) a cancel action. Agents run whatever list a bundle's kind names, so a new kind is data,
 * not new agent code. `vip` is the product; `noop` is a one-step kind for benchmarks.
 */
import type pg from 'pg';
import type { ProviderClient, ProviderKind } from '../providers/client.js';
import type { Queryable } from '../db/pool.js';
import type { EventName } from './events.js';
import type { VipBundleInput } from './input.js';

export interface StepContext {
  bundleId: string;
  bookingId: string;
  payload: Record<string, unknown>;
  idempotencyKey: string;
  providers: ProviderClient;
  db: Queryable;
  signal?: AbortSignal;
}

export interface StepDefinition {
  name: string;
  /** Provider kind called; absent for steps without an external effect (no intent row, no undo). */
  provider?: ProviderKind;
  book(ctx: StepContext): Promise<{ reference: string }>;
  cancel?(ctx: StepContext): Promise<void>;
}

export interface BundleKind {
  name: string;
  steps: StepDefinition[];
  events: { initialized?: EventName; finalized?: EventName; failed?: EventName };
}

type Vip = VipBundleInput & Record<string, unknown>;

interface LocalRecord {
  afterBook(ctx: StepContext, reference: string): Promise<void>;
  afterCancel(ctx: StepContext): Promise<void>;
}

function providerStep(name: string, provider: ProviderKind, body: (p: Vip, bookingId: string) => Record<string, unknown>, local?: LocalRecord): StepDefinition {
  return {
    name,
    provider,
    async book(ctx) {
      const { reference } = await ctx.providers.book(provider, ctx.idempotencyKey, body(ctx.payload as Vip, ctx.bookingId), ctx.signal);
      await local?.afterBook(ctx, reference);
      return { reference };
    },
    async cancel(ctx) {
      await ctx.providers.cancel(provider, ctx.idempotencyKey, ctx.signal);
      await local?.afterCancel(ctx);
    },
  };
}

/** Local record of show tickets; a unique violation means "already booked", which is success. */
const localTickets: LocalRecord = { afterBook: recordTickets, afterCancel: forgetTickets };

async function forgetTickets(ctx: StepContext): Promise<void> {
  await ctx.db.query('DELETE FROM tickets WHERE booking_id = $1', [ctx.bookingId]);
}

async function recordTickets(ctx: StepContext, reference: string): Promise<void> {
  const p = ctx.payload as Vip;
  try {
    await ctx.db.query(
      `INSERT INTO tickets (booking_id, bundle_id, show_id, number_of_tickets, reference) VALUES ($1, $2, $3, $4, $5)`,
      [ctx.bookingId, ctx.bundleId, p.show_id, p.number_of_tickets, reference],
    );
  } catch (err) {
    if ((err as pg.DatabaseError).code !== '23505') throw err;
  }
}

export const vipKind: BundleKind = {
  name: 'vip',
  steps: [
    providerStep('show_tickets', 'tickets', (p, booking_id) => ({ show_id: p.show_id, booking_id, customer_email: p.customer_email, number_of_tickets: p.number_of_tickets }), localTickets),
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
