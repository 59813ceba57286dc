/**
 * A tiny transaction-mode pooler for tests, so `npm test` can show what PgBouncer with
 * pool_mode=transaction does to bundlefleet without PgBouncer: clients log in to the pooler
 * itself (no password asked), and each statement outside a transaction (up to ReadyForQuery with
 * status idle) is run on whichever server connection is free, the most recently freed first
 * (PgBouncer's default; `order: 'fifo'` for server_round_robin=1). So session state (advisory locks, LISTEN, SET, named prepared
 * statements) stays behind on a server connection that other clients then use, and a
 * notification that arrives while no client is linked is dropped ("got packet 'A' from server
 * when not linked"). `recycle()` closes every idle server connection (PgBouncer's
 * server_lifetime or RECONNECT).
 *
 * Server connections are logged in by pg.Client (SCRAM and all), then their socket is taken over
 * and spoken to in the raw protocol.
 */
import net from 'node:net';
import pg from 'pg';

interface Server {
  socket: net.Socket;
  pid: number;
  client?: Conn;
  buffered: Buffer;
}

interface Conn {
  socket: net.Socket;
  buffered: Buffer;
  server?: Server;
  /** Messages waiting for a server connection. */
  pending: Buffer[];
  closed: boolean;
}

export interface TxnPooler {
  port: number;
  /** `target` with the pooler's host and port. */
  url(target: string): string;
  /** Backend pids of the server connections (idle or linked). */
  serverPids(): number[];
  /** Server connections open, idle and being opened; clients waiting for one. */
  stats(): { servers: number; idle: number; opening: number; waiting: number };
  /** Closes the idle server connections; new ones are made as clients need them. */
  recycle(): void;
  close(): Promise<void>;
}

const message = (type: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};
const cstrings = (...parts: string[]) => Buffer.from(parts.map((p) => `${p}\0`).join(''), 'utf8');

/** Splits complete `[type][length][body]` messages off `buf`; returns them and the rest. */
function split(buf: Buffer): { messages: Buffer[]; rest: Buffer } {
  const messages: Buffer[] = [];
  let at = 0;
  while (buf.length - at >= 5) {
    const len = buf.readInt32BE(at + 1);
    if (buf.length - at < len + 1) break;
    messages.push(buf.subarray(at, at + len + 1));
    at += len + 1;
  }
  return { messages, rest: buf.subarray(at) };
}

export interface TxnPoolerOptions {
  maxServers?: number;
  /** Which idle server connection goes next: the most recently freed (PgBouncer's default) or the oldest (server_round_robin=1). */
  order?: 'lifo' | 'fifo';
}

export async function startTxnPooler(upstreamUrl: string, opts: TxnPoolerOptions = {}): Promise<TxnPooler> {
  const maxServers = opts.maxServers ?? 4;
  const fifo = opts.order === 'fifo';
  const servers = new Set<Server>();
  /** Idle server connections, the most recently freed last. */
  const idle: Server[] = [];
  const waiting: Conn[] = [];
  const conns = new Set<Conn>();
  let opening = 0;
  let stopped = false;

  const release = (server: Server) => {
    server.client = undefined;
    if (!servers.has(server)) return;
    idle.push(server);
    dispatch();
  };

  const drop = (server: Server) => {
    servers.delete(server);
    const at = idle.indexOf(server);
    if (at >= 0) idle.splice(at, 1);
    server.socket.destroy();
    if (server.client && !server.client.closed) server.client.socket.destroy();
  };

  const openServer = async () => {
    opening++;
    try {
      const c = new pg.Client({ connectionString: upstreamUrl, application_name: 'txn-pooler server' });
      await c.connect();
      const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const socket = (c as unknown as { connection: { stream: net.Socket } }).connection.stream;
      for (const event of ['data', 'end', 'close', 'error']) socket.removeAllListeners(event);
      const server: Server = { socket, pid: rows[0]!.pid, buffered: Buffer.alloc(0) };
      socket.on('error', () => {});
      socket.on('close', () => drop(server));
      socket.on('data', (chunk: Buffer) => {
        const { messages, rest } = split(Buffer.concat([server.buffered, chunk]));
        server.buffered = rest;
        for (const m of messages) {
          const client = server.client;
          // Unlinked: notifications and parameter changes have nobody to go to.
          if (!client || client.closed) continue;
          client.socket.write(m);
          if (m[0] === 0x5a /* Z */ && m[5] === 0x49 /* I: idle, outside a transaction */) release(server);
        }
      });
      servers.add(server);
      idle.push(server);
    } finally {
      opening--;
    }
    dispatch();
  };

  /** Links waiting clients to idle servers; opens servers up to maxServers. */
  function dispatch(): void {
    while (waiting.length && idle.length) {
      const conn = waiting.shift()!;
      if (conn.closed) continue;
      const server = fifo ? idle.shift()! : idle.pop()!;
      server.client = conn;
      conn.server = server;
      for (const m of conn.pending.splice(0)) server.socket.write(m);
    }
    const want = waiting.filter((c) => !c.closed).length - opening;
    for (let i = 0; i < want && servers.size + opening < maxServers; i++) {
      // PostgreSQL may refuse for a moment (too many clients while other tests run): try again soon.
      void openServer().catch(() => setTimeout(() => !stopped && dispatch(), 100));
    }
  }

  const onClientMessage = (conn: Conn, m: Buffer) => {
    if (m[0] === 0x58 /* X: terminate */) {
      conn.socket.end();
      return;
    }
    if (conn.server?.client === conn) {
      conn.server.socket.write(m);
      return;
    }
    conn.server = undefined;
    conn.pending.push(m);
    if (conn.pending.length === 1) {
      waiting.push(conn);
      dispatch();
    }
  };

  const listener = net.createServer((socket) => {
    const conn: Conn = { socket, buffered: Buffer.alloc(0), pending: [], closed: false };
    conns.add(conn);
    let started = false;
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.closed = true;
      conns.delete(conn);
      const server = conn.server;
      if (server?.client === conn) {
        // Whatever the client left open on the server is rolled back before others use it.
        drop(server);
      }
    });
    socket.on('data', (chunk: Buffer) => {
      conn.buffered = Buffer.concat([conn.buffered, chunk]);
      if (!started) {
        if (conn.buffered.length < 8) return;
        const len = conn.buffered.readInt32BE(0);
        if (conn.buffered.length < len) return;
        const code = conn.buffered.readInt32BE(4);
        conn.buffered = conn.buffered.subarray(len);
        if (code === 80877103) return void socket.write('N'); // SSLRequest: no
        started = true;
        const ok = Buffer.alloc(4);
        const key = Buffer.alloc(8);
        key.writeInt32BE(1, 0);
        const params = [['server_version', '16.0'], ['client_encoding', 'UTF8'], ['standard_conforming_strings', 'on'], ['DateStyle', 'ISO, MDY'], ['integer_datetimes', 'on']];
        socket.write(Buffer.concat([message('R', ok), ...params.map(([k, v]) => message('S', cstrings(k!, v!))), message('K', key), message('Z', Buffer.from('I'))]));
      }
      const { messages, rest } = split(conn.buffered);
      conn.buffered = rest;
      for (const m of messages) onClientMessage(conn, m);
    });
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const port = (listener.address() as net.AddressInfo).port;

  return {
    port,
    url(target) {
      const u = new URL(target);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    serverPids: () => [...servers].map((s) => s.pid),
    stats: () => ({ servers: servers.size, idle: idle.length, opening, waiting: waiting.filter((c) => !c.closed).length }),
    recycle() {
      for (const server of [...idle]) drop(server);
    },
    async close() {
      stopped = true;
      for (const conn of conns) conn.socket.destroy();
      for (const server of [...servers]) drop(server);
      await new Promise((resolve) => listener.close(resolve));
    },
  };
}
