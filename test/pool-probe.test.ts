/**
 * A new pooled connection makes one round trip (`SELECT 1`, db/pool.ts) before it is handed out.
 * While that probe runs the client is checked out, and pg-pool has taken its own 'error' listener
 * off: a connection lost at that moment (PostgreSQL restarting, seen in CI as an uncaught
 * "Connection terminated unexpectedly" during test/supervisor-process.test.ts's immediate restart)
 * must fail the caller's query, not crash the process. A proxy in front of the real server drops
 * each connection at its first statement after the login.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestDb } from './support/db.js';
import { createPool, withTransaction } from '../src/db/pool.js';

/** ReadyForQuery ('Z', length 5): the login is over. */
const READY = Buffer.from([0x5a, 0, 0, 0, 5]);

async function dropAtFirstStatement(target: URL): Promise<{ url: string; dropped: () => number; close: () => Promise<void> }> {
  let dropped = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let ready = false;
    upstream.on('data', (chunk) => {
      if (chunk.includes(READY)) ready = true;
      client.write(chunk);
    });
    client.on('data', (chunk) => {
      if (ready) {
        dropped++;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(chunk);
    });
    for (const s of [client, upstream]) s.on('error', () => {}).on('close', () => (client.destroy(), upstream.destroy()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.toString(),
    dropped: () => dropped,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('a pooled connection lost during its first round trip', () => {
  it('fails the query and the transaction that asked for it, and nothing is thrown past them', async () => {
    const db = await createTestDb();
    const proxy = await dropAtFirstStatement(new URL(db.url));
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    const pool = createPool(proxy.url, { max: 2 });
    try {
      await expect(pool.query('SELECT 2')).rejects.toThrow(/Connection terminated|ECONNRESET|connection/i);
      await expect(withTransaction(pool, (c) => c.query('SELECT 3'))).rejects.toThrow(/Connection terminated|ECONNRESET|connection/i);
      // Let any late 'error' event of the dropped sockets fire.
      await new Promise((r) => setTimeout(r, 200));
      expect(proxy.dropped()).toBe(2);
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
      await pool.end().catch(() => {});
      await proxy.close();
    }
  });
});
