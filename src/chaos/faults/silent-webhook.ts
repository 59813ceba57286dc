/**
 * A webhook that never answers: the supervisors' ALERT_WEBHOOK_URL points at a server that
 * accepts every connection, reads the request and never replies nor closes. Alerts are made to
 * flow (a short --stuck-after-seconds), so every supervisor pass meets it.
 */
import net from 'node:net';
import type { Fault, PrepareContext, Preparation } from './fault.js';

export class SilentWebhook implements Fault {
  readonly name = 'silent-webhook';
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private accepted = 0;

  async prepare(ctx: PrepareContext): Promise<Preparation> {
    this.server = net.createServer((socket) => {
      this.accepted++;
      this.sockets.add(socket);
      socket.on('data', () => {}); // read, never answer
      socket.on('error', () => {});
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.server.address() as net.AddressInfo;
    ctx.say(`alert webhook at 127.0.0.1:${port} never answers`);
    return { supervisorEnv: { ALERT_WEBHOOK_URL: `http://127.0.0.1:${port}/alerts` }, supervisorArgs: ['--stuck-after-seconds', '2'] };
  }

  report() {
    return { webhook_connections: this.accepted };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
