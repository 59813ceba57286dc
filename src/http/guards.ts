/** Who may call the server: the bearer token for writes, and the browser-facing checks of tokenless mode. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { isIP } from 'node:net';

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time bearer check: both sides hashed first, so their lengths always match. */
export function makeAuthCheck(apiToken: string | undefined): (req: http.IncomingMessage) => boolean {
  if (apiToken === undefined) return () => true;
  const expected = sha256(apiToken);
  return (req) => {
    const match = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
    const given = sha256(match?.[1] ?? '');
    return timingSafeEqual(given, expected) && match !== null;
  };
}

/**
 * Without a token the server is meant for loopback only, and a web page on another site could
 * still make the browser POST to it: refuse writes whose Origin is not this server.
 */
export function sameOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

/**
 * Whether a Host header names this machine by a name no one else controls: `localhost`, a
 * 127.0.0.0/8 address or `[::1]`, with any port. The same-origin check alone does not stop DNS
 * rebinding: a page at evil.example re-points its name at 127.0.0.1, and then both its Origin
 * and the Host its requests carry say evil.example. Only an IP literal or `localhost` cannot be
 * re-pointed, so in tokenless mode every request must name one of those.
 */
export function isLoopbackHostHeader(host: string | undefined): boolean {
  const match = /^(localhost|\[::1\]|127\.\d{1,3}\.\d{1,3}\.\d{1,3})(?::\d{1,5})?$/i.exec(host ?? '');
  if (!match) return false;
  const name = match[1]!;
  return !name.startsWith('127.') || isIP(name) === 4;
}
