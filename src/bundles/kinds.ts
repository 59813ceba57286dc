/**
 * A bundle kind is an ordered list of steps, each with a book and (for steps with an external
 * effect) a cancel action, or a wait for external confirmations (signals). Agents run whatever
 * list a bundle's kind names, so a new kind is data, not new agent code. `vip` is the product;
 * `noop` is a one-step kind for benchmarks.
 *
 * A kind has versions. A bundle stores the version it was enqueued with and finishes (or is
 * undone) under that version's step list, so a deploy that changes a kind is a non-event for the
 * bundles in flight: keep every version that non-terminal bundles still use in `kinds`, add the new
 * one with the next number, and remove an old one only once `bundlefleet stats` shows none left
 * (`migrate` and `worker` refuse to start while bundles use a version this build lacks).
 */
import type { ProviderClient, ProviderKind, ProviderHolding } from '../providers/client.js';
import type { ExchangeContext } from '../providers/exchange.js';
import type { EventName } from './events.js';
import type { VipBundleInput } from './input.js';

export interface StepContext {
  bundleId: string;
  bookingId: string;
  payload: Record<string, unknown>;
  idempotencyKey: string;
  providers: ProviderClient;
  signal?: AbortSignal;
  /**
   * Who makes the calls (attempt, worker), for the provider exchanges they record. Passed along
   * rather than kept in an AsyncLocalStorage: that turns on promise hooks for every promise in
   * the process (bench/experiments/where-noop.ts: the worker's CPU per no-op bundle fell 25–35 %
   * without it, and scenario 1 went from about 16,500 to 18,500 bundles/s).
   */
  exchange?: ExchangeContext;
}

/**
 * A local record kept beside a step's booking. It is written in the same fenced statement as the
 * step's outcome and removed in the same fenced statement as its cancellation (see
 * agents/fenced-writes.ts), never by the step itself: a stale agent's late reply must not be able
 * to write it after the bundle was undone. `tickets`: one row per booking id in `tickets`.
 */
export type LocalRecord = 'tickets';

/** A step that waits, holding no worker, until every named signal has arrived (or the deadline passes). */
export interface WaitDefinition {
  signals: string[];
  /** Default deadline, overridden per kind by the worker's --wait-timeout. */
  timeoutSeconds: number;
}

export interface StepDefinition {
  name: string;
  /** A wait step: no provider call, no undo; the bundle waits in state `waiting`. */
  wait?: WaitDefinition;
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
  version: number;
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
      const { reference } = await ctx.providers.book(provider, ctx.idempotencyKey, body(ctx.payload as Vip, ctx.bookingId), ctx.signal, { ...ctx.exchange, bundleId: ctx.bundleId, step: name });
      return { reference };
    },
    async cancel(ctx) {
      await ctx.providers.cancel(provider, ctx.idempotencyKey, ctx.signal, { ...ctx.exchange, bundleId: ctx.bundleId, step: name });
    },
    async lookup(ctx) {
      return ctx.providers.lookup(provider, ctx.idempotencyKey, ctx.signal, { ...ctx.exchange, bundleId: ctx.bundleId, step: name });
    },
  };
}

const showTickets = providerStep('show_tickets', 'tickets', (p, booking_id) => ({ show_id: p.show_id, booking_id, customer_email: p.customer_email, number_of_tickets: p.number_of_tickets }), 'tickets');
const inboundFlight = providerStep('inbound_flight', 'flights', (p, booking_id) => ({ flight_id: p.inbound_flight_id, booking_id, customer_email: p.customer_email, passengers: p.passengers }));
const returnFlight = providerStep('return_flight', 'flights', (p, booking_id) => ({ flight_id: p.return_flight_id, booking_id, customer_email: p.customer_email, passengers: p.passengers }));
const taxi = providerStep('taxi', 'taxis', (p, booking_id) => ({ booking_id, customer_email: p.customer_email, number_of_passengers: p.passengers.length }));
const vipEvents = { initialized: 'VipBundleInitialized_v1', finalized: 'VipBundleFinalized_v1', failed: 'VipBundleFailed_v1' } as const;

/** Signals the airlines send once each flight is ticketed; vip v2 books the taxi only after both. */
export const TICKETING_SIGNALS = ['inbound_ticketed', 'return_ticketed'] as const;

/** vip v1: the four bookings in a row. Kept for the bundles enqueued under it (and the 4-step benchmark). */
export const vipKindV1: BundleKind = { name: 'vip', version: 1, steps: [showTickets, inboundFlight, returnFlight, taxi], events: vipEvents };

/** vip v2: after both flights are booked, wait for both ticketing confirmations, then book the taxi. */
export const vipKind: BundleKind = {
  name: 'vip',
  version: 2,
  steps: [
    showTickets,
    inboundFlight,
    returnFlight,
    { name: 'await_ticketing', wait: { signals: [...TICKETING_SIGNALS], timeoutSeconds: 24 * 3600 }, book: async () => ({ reference: 'signals' }) },
    taxi,
  ],
  events: vipEvents,
};

export const noopKind: BundleKind = {
  name: 'noop',
  version: 1,
  steps: [{ name: 'noop', book: async () => ({ reference: 'noop' }) }],
  events: {},
};

/** Every kind version this build carries, by name then version. */
const kinds = new Map<string, Map<number, BundleKind>>();

/** Adds a kind version to this build (tests register their own kinds). */
export function registerKind(kind: BundleKind): void {
  const versions = kinds.get(kind.name) ?? new Map<number, BundleKind>();
  versions.set(kind.version, kind);
  kinds.set(kind.name, versions);
}
[vipKindV1, vipKind, noopKind].forEach(registerKind);

/** A kind version this build lacks: the bundle is left for a worker that carries it. */
export class UnknownKindVersion extends Error {
  readonly code = 'UNKNOWN_KIND_VERSION';
  constructor(readonly kind: string, readonly version: number | undefined) {
    super(version === undefined ? `unknown bundle kind ${JSON.stringify(kind)}` : `this build does not carry bundle kind ${kind} version ${version}`);
    this.name = 'UnknownKindVersion';
  }
}

/** The kind `name` at `version`, or its latest version when none is given. */
export function bundleKind(name: string, version?: number): BundleKind {
  const versions = kinds.get(name);
  if (!versions) throw new UnknownKindVersion(name, undefined);
  if (version === undefined) return versions.get(Math.max(...versions.keys()))!;
  const kind = versions.get(version);
  if (!kind) throw new UnknownKindVersion(name, version);
  return kind;
}

/** Every (kind, version) pair this build carries. */
export function carriedKindVersions(): Array<{ kind: string; version: number }> {
  return [...kinds.values()].flatMap((v) => [...v.values()].map((k) => ({ kind: k.name, version: k.version })));
}

/** Every signal name any version of `name` waits for. */
export function signalNames(kind: BundleKind): string[] {
  return kind.steps.flatMap((s) => s.wait?.signals ?? []);
}

/** The idempotency key of a step: derived from the bundle id once and identical on every retry, reset and undo. */
export function stepIdempotencyKey(bundleId: string, stepName: string): string {
  return `${bundleId}:${stepName}`;
}
