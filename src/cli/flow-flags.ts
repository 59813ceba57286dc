/**
 * The worker's flow-control flags: fleet-wide limits per provider kind and the circuit.
 *
 *   --provider-concurrency tickets=20,flights=10   (BUNDLEFLEET_PROVIDER_CONCURRENCY)
 *   --provider-rate flights=50/s                   (BUNDLEFLEET_PROVIDER_RATE)
 *   --provider-circuit 5/10s[,pause=5s]            (BUNDLEFLEET_PROVIDER_CIRCUIT)
 *
 * A bad value is a BadInput naming the flag (and its variable), the item and what was expected.
 */
import { Option, type Command } from 'commander';
import { BadInput } from '../errors.js';
import { providerKinds, type ProviderKind } from '../providers/client.js';
import type { ProviderLimits } from '../providers/limits.js';
import type { CircuitOptions } from '../agents/flow-control.js';
import { parseKindList, wholeNumberValue } from './kind-lists.js';

export function addFlowOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--provider-concurrency <list>', 'most calls in flight per provider kind, fleet-wide, e.g. tickets=20,flights=10').env('BUNDLEFLEET_PROVIDER_CONCURRENCY'))
    .addOption(new Option('--provider-rate <list>', 'most calls per second per provider kind, fleet-wide, e.g. flights=50/s').env('BUNDLEFLEET_PROVIDER_RATE'))
    .addOption(new Option('--provider-circuit <spec>', 'pause a kind fleet-wide after N transient failures in a row within S seconds, e.g. 5/10s or 5/10s,pause=30s').env('BUNDLEFLEET_PROVIDER_CIRCUIT'));
}

const FLAG = {
  concurrency: '--provider-concurrency (BUNDLEFLEET_PROVIDER_CONCURRENCY)',
  rate: '--provider-rate (BUNDLEFLEET_PROVIDER_RATE)',
  circuit: '--provider-circuit (BUNDLEFLEET_PROVIDER_CIRCUIT)',
};

/** `kind=value,kind=value` over the provider kinds (kind-lists.ts); each problem names the flag. */
function parseList(flag: string, raw: string, example: string, value: (text: string) => number | string): Map<ProviderKind, number> {
  const { values, issues } = parseKindList(raw, { what: 'provider kind', kinds: providerKinds, example, value });
  const named = issues.map((i) => `${flag}: ${i}`);
  if (named.length) throw new BadInput(named.join('; '), named);
  return values;
}

const concurrencyValue = wholeNumberValue('calls in flight', 'flights=10', 1, 10_000);

function rateValue(text: string): number | string {
  const m = /^(\d+(?:\.\d+)?)\/s$/.exec(text);
  if (!m) return 'must be calls per second, like flights=50/s';
  const n = Number(m[1]);
  return n > 0 && n <= 100_000 ? n : 'must be more than 0/s and at most 100000/s';
}

export interface FlowFlags {
  providerLimits?: ProviderLimits;
  providerCircuit?: CircuitOptions;
}

export function parseFlowFlags(raw: Record<string, unknown> & { providerConcurrency?: string; providerRate?: string; providerCircuit?: string }): FlowFlags {
  // An empty value (FOO= in an env file) means "not set".
  const given = (v: string | undefined) => (v?.trim() ? v : undefined);
  const flags = { providerConcurrency: given(raw.providerConcurrency), providerRate: given(raw.providerRate), providerCircuit: given(raw.providerCircuit) };
  const limits: ProviderLimits = {};
  const issues: string[] = [];
  const collect = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof BadInput)) throw err;
      issues.push(...err.issues);
      return undefined;
    }
  };
  const concurrency = flags.providerConcurrency === undefined ? undefined : collect(() => parseList(FLAG.concurrency, flags.providerConcurrency!, 'tickets=20,flights=10', concurrencyValue));
  const rate = flags.providerRate === undefined ? undefined : collect(() => parseList(FLAG.rate, flags.providerRate!, 'flights=50/s', rateValue));
  for (const [kind, n] of concurrency ?? []) limits[kind] = { ...limits[kind], maxInFlight: n };
  for (const [kind, n] of rate ?? []) limits[kind] = { ...limits[kind], ratePerSecond: n };
  const circuit = flags.providerCircuit === undefined ? undefined : collect(() => parseCircuit(flags.providerCircuit!));
  if (issues.length) throw new BadInput(issues.join('; '), issues);
  return { providerLimits: Object.keys(limits).length ? limits : undefined, providerCircuit: circuit };
}

function parseCircuit(raw: string): CircuitOptions {
  const m = /^(\d+)\/(\d+(?:\.\d+)?)s(?:,pause=(\d+(?:\.\d+)?)s)?$/.exec(raw.trim());
  if (!m) throw new BadInput(`${FLAG.circuit}: ${JSON.stringify(raw)} must look like 5/10s (5 failures in a row within 10 s) or 5/10s,pause=30s`);
  const failures = Number(m[1]);
  const windowMs = Number(m[2]) * 1000;
  const pauseMs = (m[3] === undefined ? 5 : Number(m[3])) * 1000;
  if (failures < 2 || failures > 1000) throw new BadInput(`${FLAG.circuit}: the failure count must be between 2 and 1000, got ${failures}`);
  if (windowMs <= 0 || pauseMs <= 0 || pauseMs > 3_600_000) throw new BadInput(`${FLAG.circuit}: the window must be more than 0 s and the pause between 0 and 3600 s`);
  return { failures, windowMs, pauseMs };
}
