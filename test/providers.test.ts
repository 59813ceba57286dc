import { spawn } from 'node:child_process';
import { getEventListeners, once } from 'node:events';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { describe, it, expect, vi } from 'vitest';
import { Command } from 'commander';
import { BadInput, ProviderError } from '../src/errors.js';
import { ProviderClient, providerUrlsFromEnv, type ProviderUrls } from '../src/providers/client.js';
import { startProviderSimulator, type ProviderSimulator, type SimulatorOptions } from '../src/providers/simulator.js';
import { registerProvidersCommand } from '../src/cli/providers-command.js';

const tickets = { show_id: 'hamilton-2025-06-01', booking_id: 'b-1', customer_email: 'vip@example.com', number_of_tickets: 2 };
const flight = { flight_id: 'BA117', booking_id: 'b-1', customer_email: 'vip@example.com', passengers: ['Ada', 'Bob'] };
const taxi = { booking_id: 'b-1', customer_email: 'vip@example.com', number_of_passengers: 2 };

const urlsOf = (url: string): ProviderUrls => ({ tickets: url, flights: url, taxis: url });

/** Starts a simulator on a free port, hands it and a client to `fn`, and always closes it. */
async function withSimulator(opts: SimulatorOptions, fn: (sim: ProviderSimulator, client: ProviderClient) => Promise<void>, timeoutMs = 2000): Promise<void> {
  const sim = await startProviderSimulator({ ...opts, port: 0 });
  try {
    await fn(sim, new ProviderClient(urlsOf(sim.url), { timeoutMs }));
  } finally {
    await sim.close();
  }
}

/** The ProviderError a promise rejects with (fails the test if it resolves or throws something else). */
async function providerError(promise: Promise<unknown>): Promise<ProviderError> {
  const err = await promise.then(
    (value) => { throw new Error(`expected a ProviderError, got ${JSON.stringify(value)}`); },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProviderError);
  return err as ProviderError;
}

describe('provider simulator and client: booking', () => {
  it('books once per key: a replay gives the same reference and one ledger entry', async () => {
    await withSimulator({}, async (sim, client) => {
      const first = await client.book('tickets', 'k1', tickets);
      const again = await client.book('tickets', 'k1', { ...tickets });
      expect(first.status).toBe(201);
      expect(again).toEqual({ reference: first.reference, status: 200 });
      const ledger = sim.ledger();
      expect(ledger).toHaveLength(1);
      expect(ledger[0]).toMatchObject({ kind: 'tickets', idempotency_key: 'k1', reference: first.reference, status: 'booked', book_calls: 2 });
    });
  });

  it('keeps kinds apart and books flights and taxis too', async () => {
    await withSimulator({}, async (sim, client) => {
      const a = await client.book('flights', 'k', flight);
      const b = await client.book('taxis', 'k', taxi);
      expect(a.reference).not.toBe(b.reference);
      expect(sim.ledger().map((e) => e.kind).sort()).toEqual(['flights', 'taxis']);
      expect(await client.lookup('flights', 'k')).toMatchObject({ reference: a.reference, status: 'booked' });
      expect(await client.lookup('taxis', 'missing')).toEqual({ status: 'none' });
    });
  });

  it('refuses the same key with a different body: 422, permanent', async () => {
    await withSimulator({}, async (sim, client) => {
      await client.book('tickets', 'k1', tickets);
      const err = await providerError(client.book('tickets', 'k1', { ...tickets, number_of_tickets: 3 }));
      expect(err).toMatchObject({ type: 'permanent', status: 422 });
      expect(sim.ledger()).toHaveLength(1);
    });
  });

  it('refuses a missing Idempotency-Key or a missing field with 400', async () => {
    await withSimulator({}, async (sim, client) => {
      const noKey = await fetch(`${sim.url}/tickets/bookings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(tickets) });
      expect(noKey.status).toBe(400);
      const { show_id: _, ...withoutShow } = tickets;
      const err = await providerError(client.book('tickets', 'k1', withoutShow));
      expect(err).toMatchObject({ type: 'permanent', status: 400 });
      expect(err.message).toContain('show_id');
      expect(sim.ledger()).toHaveLength(0);
    });
  });

  it('noRate: 409 "sold out" is permanent and definitive for that key and body', async () => {
    await withSimulator({ noRate: 1 }, async (sim, client) => {
      const err = await providerError(client.book('flights', 'k1', flight));
      expect(err).toMatchObject({ type: 'permanent', status: 409 });
      expect(err.message).toContain('sold out');
      sim.setFaults({ noRate: 0 });
      expect(await providerError(client.book('flights', 'k1', flight))).toMatchObject({ type: 'permanent', status: 409 });
      expect(sim.ledger()).toEqual([expect.objectContaining({ status: 'refused', reference: null, book_calls: 2 })]);
    });
  });
});

describe('provider simulator and client: cancel', () => {
  it('cancels a booking; repeating is harmless; a later booking with the key is refused', async () => {
    await withSimulator({}, async (sim, client) => {
      const { reference } = await client.book('taxis', 'k1', taxi);
      expect(await client.cancel('taxis', 'k1')).toBe('cancelled');
      expect(await client.cancel('taxis', 'k1')).toBe('cancelled');
      expect(await providerError(client.book('taxis', 'k1', taxi))).toMatchObject({ type: 'permanent', status: 409 });
      expect(sim.ledger()).toEqual([expect.objectContaining({ reference, status: 'cancelled', book_calls: 2 })]);
    });
  });

  it('cancel before the booking arrives: not_found, remembered, and the late booking is refused 409', async () => {
    await withSimulator({}, async (sim, client) => {
      expect(await client.cancel('tickets', 'k1')).toBe('not_found');
      expect(await client.cancel('tickets', 'k1')).toBe('not_found');
      expect(await client.lookup('tickets', 'k1')).toEqual({ status: 'cancelled' });
      const err = await providerError(client.book('tickets', 'k1', tickets));
      expect(err).toMatchObject({ type: 'permanent', status: 409 });
      expect(err.message).toContain('cancelled');
      expect(sim.ledger()).toEqual([expect.objectContaining({ status: 'cancelled', reference: null, booked_at: null, book_calls: 1 })]);
    });
  });
});

describe('provider simulator: stricter and more forgetful providers', () => {
  it('forgetUnknownCancels: a cancel of an unseen key is not_found and forgotten, so a late booking is made and stays live', async () => {
    await withSimulator({ forgetUnknownCancels: true }, async (sim, client) => {
      expect(await client.cancel('tickets', 'k1')).toBe('not_found');
      expect(sim.ledger()).toEqual([]);
      expect(sim.counters().forgotten_cancels).toBe(1);
      expect(await client.lookup('tickets', 'k1')).toEqual({ status: 'none' });
      const late = await client.book('tickets', 'k1', tickets);
      expect(late.status).toBe(201);
      expect(sim.ledger()).toEqual([expect.objectContaining({ idempotency_key: 'k1', reference: late.reference, status: 'booked', book_calls: 1 })]);
      // A key it has seen is still cancelled for good.
      expect(await client.cancel('tickets', 'k1')).toBe('cancelled');
      expect(await providerError(client.book('tickets', 'k1', tickets))).toMatchObject({ type: 'permanent', status: 409 });
    });
  });

  it('concurrentConflict: a booking whose key is in flight gets 409 "in progress"; once answered, the key replays normally', async () => {
    await withSimulator({ concurrentConflict: true, latencyMs: 300 }, async (sim, client) => {
      const [first, second] = await Promise.allSettled([client.book('taxis', 'k1', taxi), client.book('taxis', 'k1', taxi)]);
      const outcomes = [first, second].map((r) => (r.status === 'fulfilled' ? r.value.status : (r.reason as ProviderError).status)).sort();
      expect(outcomes).toEqual([201, 409]);
      expect(sim.counters().in_progress_conflicts).toBe(1);
      const refused = [first, second].find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(refused.reason).toMatchObject({ type: 'permanent', status: 409 });
      expect((refused.reason as Error).message).toContain('a request with this idempotency key is in progress');
      const booked = [first, second].find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<{ reference: string }>;
      // The refused request never reached the booking: one call, one effect.
      expect(sim.ledger()).toEqual([expect.objectContaining({ reference: booked.value.reference, status: 'booked', book_calls: 1 })]);
      expect(await client.book('taxis', 'k1', taxi)).toEqual({ reference: booked.value.reference, status: 200 });
      // Other keys are not held up.
      expect((await client.book('taxis', 'k2', taxi)).status).toBe(201);
    });
  });

  it('concurrentConflict: a hanging request keeps its key in flight until it is dropped', async () => {
    await withSimulator({ concurrentConflict: true, hangRate: 1, hangMs: 400 }, async (sim, client) => {
      const hanging = providerError(client.book('tickets', 'k1', tickets, AbortSignal.timeout(100)));
      expect((await hanging).type).toBe('transient');
      sim.setFaults({ hangRate: 0 });
      expect(await providerError(client.book('tickets', 'k1', tickets))).toMatchObject({ status: 409 });
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await client.book('tickets', 'k1', tickets)).status).toBe(201);
    });
  });

  it('slowRate: booked at once, answered after hangMs; with concurrentConflict the client\'s retry meets its own first request', async () => {
    // Timeouts well apart (400 ms client, 1.5 s reply): it failed once on a loaded machine with 100 ms and 600 ms.
    await withSimulator({ slowRate: 1, hangMs: 1500, concurrentConflict: true }, async (sim, client) => {
      expect((await providerError(client.book('flights', 'k1', flight, AbortSignal.timeout(400)))).type).toBe('transient');
      expect(sim.ledger()).toEqual([expect.objectContaining({ status: 'booked', book_calls: 1 })]);
      expect(await providerError(client.book('flights', 'k1', flight, AbortSignal.timeout(400)))).toMatchObject({ type: 'permanent', status: 409 });
      await new Promise((resolve) => setTimeout(resolve, 1500));
      sim.setFaults({ slowRate: 0 });
      expect(await client.book('flights', 'k1', flight)).toEqual({ reference: sim.ledger()[0]!.reference, status: 200 });
    });
  });

  it('without concurrentConflict, concurrent same-key bookings both get the one booking', async () => {
    await withSimulator({ latencyMs: 200 }, async (sim, client) => {
      const [a, b] = await Promise.all([client.book('taxis', 'k1', taxi), client.book('taxis', 'k1', taxi)]);
      expect(a.reference).toBe(b.reference);
      expect(sim.ledger()).toEqual([expect.objectContaining({ book_calls: 2 })]);
    });
  });
});

describe('provider simulator and client: faults', () => {
  it('lateRate: booked but the reply is lost → transient; a replay returns the same booking', async () => {
    await withSimulator({ lateRate: 1 }, async (sim, client) => {
      const err = await providerError(client.book('tickets', 'k1', tickets));
      expect(err.type).toBe('transient');
      expect(err.cause).toBeDefined();
      const [entry] = sim.ledger();
      expect(entry).toMatchObject({ status: 'booked', book_calls: 1 });
      sim.setFaults({ lateRate: 0 });
      expect(await client.book('tickets', 'k1', tickets)).toEqual({ reference: entry!.reference, status: 200 });
      expect(sim.ledger()).toHaveLength(1);
    });
  });

  it('failRate 1: 503 is transient and books nothing; cancels fail too', async () => {
    await withSimulator({ failRate: 1 }, async (sim, client) => {
      expect(await providerError(client.book('tickets', 'k1', tickets))).toMatchObject({ type: 'transient', status: 503 });
      expect(await providerError(client.cancel('tickets', 'k1'))).toMatchObject({ type: 'transient', status: 503 });
      expect(sim.ledger()).toEqual([]);
    });
  });

  it('a reply slower than the client timeout is transient', async () => {
    await withSimulator({ latencyMs: 1000 }, async (_sim, client) => {
      const err = await providerError(client.book('tickets', 'k1', tickets));
      expect(err.type).toBe('transient');
      expect(err.message).toContain('timed out');
    }, 100);
  });

  it("the caller's abort signal is transient", async () => {
    await withSimulator({ hangRate: 1 }, async (_sim, client) => {
      const err = await providerError(client.book('tickets', 'k1', tickets, AbortSignal.timeout(50)));
      expect(err.type).toBe('transient');
      expect(err.message).toContain('aborted by caller');
    });
  });

  it('a provider that stalls halfway through its body is a timeout, and the connection is closed', async () => {
    const closed: Promise<unknown>[] = [];
    const server = http.createServer((req, res) => {
      closed.push(once(req.socket, 'close'));
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"reference": "half'); // and nothing more
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const started = performance.now();
      const err = await providerError(new ProviderClient(urlsOf(url), { timeoutMs: 150 }).book('tickets', 'k-stall', tickets));
      expect(err.type).toBe('transient');
      expect(err.message).toContain('timed out after 150 ms');
      expect(performance.now() - started).toBeLessThan(2_000);
      await Promise.all(closed);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it("an already aborted caller's signal sends nothing; a caller's signal that outlives many calls keeps no listener of theirs", async () => {
    await withSimulator({}, async (sim, client) => {
      const err = await providerError(client.book('tickets', 'k-aborted', tickets, AbortSignal.abort()));
      expect(err.message).toContain('aborted by caller');
      expect(sim.ledger()).toHaveLength(0);
      // An agent's signal lives for its whole bundle, across every call and retry.
      const agent = new AbortController();
      for (let i = 0; i < 20; i++) await client.book('tickets', `k-${i}`, tickets, agent.signal);
      expect(getEventListeners(agent.signal, 'abort')).toHaveLength(0);
      expect(sim.ledger()).toHaveLength(20);
    });
  });

  it('a refused connection is transient', async () => {
    const sim = await startProviderSimulator({ port: 0 });
    await sim.close();
    const err = await providerError(new ProviderClient(urlsOf(sim.url)).book('tickets', 'k1', tickets));
    expect(err.type).toBe('transient');
    expect(err.message).toContain('ECONNREFUSED');
  });

  it('hangRate: close() ends a hanging request promptly, with nothing booked', async () => {
    const sim = await startProviderSimulator({ port: 0, hangRate: 1, hangMs: 60_000 });
    const client = new ProviderClient(urlsOf(sim.url), { timeoutMs: 30_000 });
    const pending = providerError(client.book('tickets', 'k1', tickets));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    await sim.close();
    expect((await pending).type).toBe('transient');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(sim.ledger()).toEqual([]);
  });

  it('a seed makes the fault pattern repeatable', async () => {
    const pattern = async () => {
      const outcomes: string[] = [];
      await withSimulator({ failRate: 0.5, seed: 42 }, async (_sim, client) => {
        for (let i = 0; i < 12; i++) {
          outcomes.push(await client.book('taxis', `k${i}`, taxi).then(() => 'ok', (e: ProviderError) => String(e.status)));
        }
      });
      return outcomes.join(' ');
    };
    const first = await pattern();
    expect(first).toContain('ok');
    expect(first).toContain('503');
    expect(await pattern()).toBe(first);
  });

  it('faults can be changed at runtime over HTTP, and bad values are refused', async () => {
    await withSimulator({}, async (sim, client) => {
      const bad = await fetch(`${sim.url}/__faults`, { method: 'POST', body: JSON.stringify({ failRate: 2 }) });
      expect(bad.status).toBe(400);
      const ok = await fetch(`${sim.url}/__faults`, { method: 'POST', body: JSON.stringify({ failRate: 1 }) });
      expect(ok.status).toBe(200);
      expect(await providerError(client.book('tickets', 'k1', tickets))).toMatchObject({ status: 503 });
      expect(await (await fetch(`${sim.url}/__ledger`)).json()).toEqual([]);
      expect(() => sim.setFaults({ lateRate: -1 })).toThrow(RangeError);
    });
  });
});

describe('providerUrlsFromEnv', () => {
  it('uses PROVIDERS_URL, overridden per kind', () => {
    expect(providerUrlsFromEnv({ PROVIDERS_URL: 'http://p:4010/', TAXIS_URL: 'http://t:1/api' })).toEqual({
      tickets: 'http://p:4010',
      flights: 'http://p:4010',
      taxis: 'http://t:1/api',
    });
  });

  it('names the variable when none is set or one is not a URL', () => {
    expect(() => providerUrlsFromEnv({})).toThrow(BadInput);
    expect(() => providerUrlsFromEnv({})).toThrow(/PROVIDERS_URL/);
    expect(() => providerUrlsFromEnv({ PROVIDERS_URL: 'http://p', FLIGHTS_URL: 'nope' })).toThrow(/FLIGHTS_URL/);
    expect(() => providerUrlsFromEnv({ TICKETS_URL: 'http://t', FLIGHTS_URL: 'http://f' })).toThrow(/TAXIS_URL/);
  });
});

describe('bundlefleet providers', () => {
  const program = () => {
    const p = new Command().exitOverride();
    registerProvidersCommand(p);
    return p;
  };

  it('refuses a bad rate, naming the flag', async () => {
    await expect(program().parseAsync(['providers', '--fail-rate', '2'], { from: 'user' })).rejects.toThrow(/--fail-rate/);
    await expect(program().parseAsync(['providers', '--no-rate', 'x'], { from: 'user' })).rejects.toThrow(BadInput);
  });

  it('names the variable a bad value came from, as other commands do', async () => {
    vi.stubEnv('PROVIDERS_FAIL_RATE', '2');
    try {
      await expect(program().parseAsync(['providers'], { from: 'user' })).rejects.toThrow('--fail-rate (PROVIDERS_FAIL_RATE): must be between 0 and 1 (got "2")');
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('starts, says where it listens, and stops on SIGTERM', async () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const running = program().parseAsync(['providers', '--port', '0', '--no-rate', '1'], { from: 'user' });
      await vi.waitFor(() => expect(write).toHaveBeenCalledWith(expect.stringMatching(/^providers simulator listening on http:\/\/127\.0\.0\.1:\d+\n$/)));
      const url = String(write.mock.calls[0]![0]).trim().split(' ').pop()!;
      const err = await providerError(new ProviderClient(urlsOf(url)).book('taxis', 'k', taxi));
      expect(err.status).toBe(409);
      process.emit('SIGTERM', 'SIGTERM');
      await running;
    } finally {
      write.mockRestore();
    }
  });

  it('bin/bundlefleet providers --forget-unknown-cancels --concurrent-conflict runs both modes', async () => {
    const bin = fileURLToPath(new URL('../bin/bundlefleet', import.meta.url));
    const child = spawn(process.execPath, [bin, 'providers', '--port', '0', '--latency-ms', '300', '--forget-unknown-cancels', '--concurrent-conflict'], { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let err = '';
        child.stderr!.on('data', (chunk: Buffer) => {
          err += chunk.toString();
          const m = /listening on (http:\/\/\S+)/.exec(err);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`providers exited ${code}: ${err}`)));
      });
      const client = new ProviderClient(urlsOf(url));
      expect(await client.cancel('flights', 'k1')).toBe('not_found');
      const [a, b] = await Promise.allSettled([client.book('flights', 'k1', flight), client.book('flights', 'k1', flight)]);
      expect([a, b].map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
      expect(await client.lookup('flights', 'k1')).toMatchObject({ status: 'booked' });
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }, 20_000);
});
