/**
 * A TCP proxy in front of PostgreSQL that can blackhole a connection without closing it: no FIN,
 * no RST, the peer's kernel keeps the socket open and data simply stops flowing both ways. That is
 * a half-open connection (a peer gone behind a NAT or a firewall that drops state), the fault that
 * TCP keep-alive notices only after hours. Used by the tests and by `npm run chaos`.
 *
 * Each connection's PostgreSQL startup message is parsed for its `application_name`, so a test can
 * cut exactly one role's connection (e.g. a worker's liveness connection).
 */
import net from 'node:net';

export interface ProxiedConnection {
  id: number;
  applicationName: string | undefined;
  blackholed: boolean;
  /** Local port of the proxy's socket to the server: `client_port` in pg_stat_activity, to find the backend. */
  serverPort: number | undefined;
}

export interface TcpProxy {
  /** `host:port` clients connect to. */
  host: string;
  port: number;
  /** Rewrites a postgres:// URL so that it goes through the proxy. */
  url(target: string): string;
  connections(): ProxiedConnection[];
  /** Stops data both ways on matching connections (all open ones by default) and keeps them open. Returns how many. */
  blackhole(match?: (c: ProxiedConnection) => boolean): number;
  /** Blackholes every new connection too, until `heal()`. */
  blackholeNew(on: boolean): void;
  /**
   * Holds what the server sends on matching open connections, and on every new one, until the
   * returned release: the statements run, their replies arrive late. A slow network in one
   * direction, used to keep a client busy in a round trip whose work is already committed.
   */
  holdReplies(match?: (c: ProxiedConnection) => boolean): () => void;
  close(): Promise<void>;
}

interface Pair extends ProxiedConnection {
  client: net.Socket;
  server: net.Socket;
  /** Replies held back (holdReplies), in order; undefined when replies flow. */
  held?: Buffer[];
}

/** A postgres:// URL pointed at 127.0.0.1:`port` (a proxy or pooler in front of its server), all else kept. */
export function onLocalPort(target: string, port: number): string {
  const u = new URL(target);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  return u.toString();
}

/** Reads `application_name` from a PostgreSQL v3 startup message, if `chunk` holds one. */
export function startupApplicationName(chunk: Buffer): string | undefined {
  if (chunk.length < 8 || chunk.readInt32BE(4) !== 196608) return undefined;
  const parts = chunk.subarray(8, chunk.readInt32BE(0)).toString('utf8').split('\0');
  for (let i = 0; i + 1 < parts.length; i += 2) if (parts[i] === 'application_name') return parts[i + 1];
  return undefined;
}

export async function startTcpProxy(targetHost: string, targetPort: number, listenPort = 0): Promise<TcpProxy> {
  const pairs = new Map<number, Pair>();
  let nextId = 0;
  let holeNew = false;
  let holdNew = false;

  const hole = (p: Pair) => {
    p.blackholed = true;
    // Paused sockets read nothing more; what was read is dropped below. Nothing is closed.
    p.client.pause();
    p.server.pause();
  };

  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, targetHost);
    const pair: Pair = { id: ++nextId, applicationName: undefined, blackholed: false, serverPort: undefined, client, server: upstream };
    upstream.once('connect', () => (pair.serverPort = upstream.localPort));
    pairs.set(pair.id, pair);
    let first = true;
    client.on('data', (chunk: Buffer) => {
      if (first) {
        first = false;
        pair.applicationName = startupApplicationName(chunk);
      }
      if (!pair.blackholed) upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (pair.blackholed) return;
      if (pair.held) pair.held.push(chunk);
      else client.write(chunk);
    });
    const end = () => {
      if (pair.blackholed) return; // a blackholed peer never learns the other side went away (close() ends it)
      pairs.delete(pair.id);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', () => {});
    upstream.on('error', () => {});
    if (holeNew) hole(pair);
    if (holdNew) pair.held = [];
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;

  return {
    host: '127.0.0.1',
    port,
    url: (target) => onLocalPort(target, port),
    connections: () => [...pairs.values()].map(({ id, applicationName, blackholed, serverPort }) => ({ id, applicationName, blackholed, serverPort })),
    blackhole(match = () => true) {
      let n = 0;
      for (const p of pairs.values()) if (!p.blackholed && match(p)) (hole(p), n++);
      return n;
    },
    blackholeNew(on) {
      holeNew = on;
    },
    holdReplies(match = () => true) {
      holdNew = true;
      for (const p of pairs.values()) if (match(p)) p.held ??= [];
      return () => {
        holdNew = false;
        for (const p of pairs.values()) {
          const held = p.held;
          p.held = undefined;
          if (held && !p.blackholed) for (const chunk of held) p.client.write(chunk);
        }
      };
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const p of pairs.values()) (p.client.destroy(), p.server.destroy());
        pairs.clear();
        server.close(() => resolve());
      }),
  };
}
